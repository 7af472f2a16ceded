"""Live monitoring (远程监看) and the fleet in the browser: a session still recording plays on its page a few
seconds behind the room and carries on as a recording when it closes; the fleet page shows the device, and
an alert that needs a person stands out on every page until it is acknowledged (ACCESS, FAULT)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from central.web.client import WebClient
from evidence.alert import make_alert
from firmware_py import rig as rig_mod
from firmware_py.rig import Rig
from firmware_py.state_machine import State
from hal.buttons.base import ButtonName
from mqtt import protocol
from mqtt.broker import LocalBroker
from tests.central.test_alerts import fields
from tests.central.test_receiver import send
from tests.central.web.conftest import PASSWORD
from tests.central.web.test_browser import logged_in, video
from tests.conftest import make_rig, wait_until


@dataclass
class Live:
    rig: Rig
    broker: LocalBroker
    server: rig_mod.WebServer

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    workdir = tmp_path_factory.mktemp("live")
    with LocalBroker(workdir / "broker") as broker:
        rig = make_rig(workdir, broker.port)
        try:
            server = rig_mod.start_web(rig.central, workdir / "web", admin=("admin", PASSWORD))
            try:
                admin = WebClient(server.url)
                admin.login("admin", PASSWORD)
                for username, role in (("监看员", "supervisor"), ("技术员", "technician")):
                    admin.post("/accounts/", {"username": username, "role": role, "password": PASSWORD,
                                              "unit": rig.config.device.unit, "active": "on"})
                yield Live(rig, broker, server)
            finally:
                server.close()
        finally:
            rig.close()


def test_a_session_plays_live_and_carries_on_when_it_closes__ACCESS(live: Live, browser: Any) -> None:
    rig = live.rig
    rig.tap(ButtonName.START)
    rig.wait_state(State.RECORDING)
    session = rig.service.controller.session_id
    assert session is not None
    supervisor = logged_in(browser, live, "监看员")
    client = WebClient(live.url)
    client.login("监看员", PASSWORD)
    manifest = f"/s/{rig.config.device.id}/{session}/play.json"
    assert wait_until(lambda: json.loads(client.get(manifest).body)["segments"], 30)
    supervisor.goto(f"{live.url}/s/{rig.config.device.id}/{session}/")
    supervisor.wait_for_selector("#live", state="visible", timeout=10000)
    assert "Still being received" in supervisor.inner_text("#verification")
    supervisor.wait_for_function("() => document.getElementById('video').readyState >= 2", timeout=15000)
    start = video(supervisor, "v.currentTime")
    supervisor.wait_for_function(f"() => document.getElementById('video').currentTime > {start} + 2", timeout=15000)

    rig.tap(ButtonName.STOP, rig.config.session.stop_hold_seconds + 0.3)
    rig.wait_state(State.IDLE)
    supervisor.wait_for_function("() => document.getElementById('live').hidden", timeout=20000)
    duration = video(supervisor, "v.duration")
    assert duration > 2 and duration != float("inf")
    before = video(supervisor, "v.currentTime")
    supervisor.wait_for_function(
        f"() => {{ const v = document.getElementById('video'); return v.currentTime > {before} + 0.5 || v.ended; }}",
        timeout=10000)
    assert not supervisor.is_visible("#player-error"), supervisor.inner_text("#player-error")


def test_the_fleet_page_and_an_alert_on_every_page_until_acknowledged__FAULT(live: Live, browser: Any) -> None:
    rig = live.rig
    device = rig.config.device.id
    technician = logged_in(browser, live, "技术员")
    assert technician.url.endswith("/fleet/")
    row = technician.inner_text("#fleet tbody")
    assert device in row and "online" in row
    assert technician.locator("#urgent").count() == 0

    alert = make_alert(fields(device=device, id="00000000000000a1", room="询问室一"), rig.service.identity.sign)
    send(live.broker, [(protocol.topic(rig.config.mqtt.topic_prefix, device, protocol.ALERT), alert.raw)])
    assert wait_until(lambda: any(a.alert.id == alert.id for a in rig.store.alerts()), 10)

    def banner_shows() -> bool:
        technician.goto(live.url + "/fleet/")
        return bool(technician.locator("#urgent li.urgent-alert").count() == 1)

    assert wait_until(banner_shows, 15)
    supervisor = logged_in(browser, live, "监看员")
    assert "recording could not continue" in supervisor.inner_text("#urgent")

    technician.locator("#alerts input[name=note]").fill("已通知单位负责人 head of unit told")
    technician.locator("#alerts button").click()
    technician.wait_for_load_state()
    assert technician.locator("#urgent li.urgent-alert").count() == 0
    assert [a.handled.by for a in rig.store.alerts() if a.handled is not None] == ["技术员"]
    kept = Path(rig.store.state_file("audit.log")).read_text(encoding="utf-8")
    assert '"action":"alert_ack"' in kept and alert.id in kept
