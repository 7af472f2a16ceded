"""The web application over the shared recorded session (tests/conftest.py `recorded`), served by the real
server in its own process, with one account of each role made by the administrator's page."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from central.web.client import WebClient
from firmware_py import rig as rig_mod
from tests.conftest import RecordedSession

PASSWORD = "correct horse 9 battery"
OTHER_UNIT = "其他执法单位"


@dataclass
class Site:
    server: rig_mod.WebServer
    recorded: RecordedSession
    unit: str

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def device(self) -> str:
        return self.recorded.rig.config.device.id

    @property
    def session(self) -> str:
        return self.recorded.session

    @property
    def page(self) -> str:
        return f"/s/{self.device}/{self.session}/"

    def client(self, username: str | None = None) -> WebClient:
        client = WebClient(self.url)
        if username is not None:
            reply = client.login(username, PASSWORD)
            assert reply.status == 200 and "/login/" not in reply.url, reply.text[:500]
        return client


ACCOUNTS = {"viewer": ("李警官", "viewer", True), "supervisor": ("王科长", "supervisor", True),
            "outsider": ("赵警官", "viewer", False), "technician": ("技术员", "technician", False),
            "legal": ("法制员", "legal", False), "records": ("档案员", "records", False)}
"""Key: (username, role, whether in the session's unit)."""


def make_accounts(site_url: str, unit: str) -> None:
    admin = WebClient(site_url)
    admin.login("admin", PASSWORD)
    for username, role, in_unit in ACCOUNTS.values():
        reply = admin.post("/accounts/", {"username": username, "role": role, "password": PASSWORD,
                                          "unit": unit if in_unit else OTHER_UNIT, "active": "on"})
        assert reply.status == 200 and "/accounts/" in reply.url, reply.text[:800]


@pytest.fixture(scope="session")
def site(recorded: RecordedSession, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    workdir = tmp_path_factory.mktemp("web")
    server = rig_mod.start_web(recorded.rig.central, workdir, admin=("admin", PASSWORD))
    try:
        unit = recorded.rig.config.device.unit
        make_accounts(server.url, unit)
        yield Site(server, recorded, unit)
    finally:
        server.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium through Playwright, one per test module."""
    with rig_mod.chromium() as b:
        yield b
