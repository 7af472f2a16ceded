"""Retention, export and removal through the web application (RETENTION, ARCHIVE, NO-EDIT), on a copy of the
recorded session in a store of its own whose entries central stored seven months ago: the class raised and
never lowered silently, a legal hold blocking removal, an evidence package asked for, approved, built and
downloaded, originals that no URL edits or deletes, and the records keeper's removal in Chromium."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from central import config as central_config
from central.store import FileStore
from central.sweep import sweep
from central.web.client import WebClient
from evidence import layout
from evidence.package import check_package
from firmware_py import rig as rig_mod
from tests.central.test_sweep import copied_store
from tests.central.web.conftest import ACCOUNTS, PASSWORD, Site, make_accounts
from tests.central.web.test_browser import logged_in
from tests.conftest import RecordedSession


@pytest.fixture(scope="module")
def aged(recorded_long_ago: RecordedSession,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, FileStore]]:
    recorded = recorded_long_ago
    workdir = tmp_path_factory.mktemp("lifecycle")
    store, _, folder = copied_store(recorded, workdir / "central")
    when = (dt.datetime.now(dt.UTC) - dt.timedelta(days=210)).timestamp()
    for path in (folder / layout.ENTRIES).iterdir():
        os.utime(path, (when, when))
    cfg = recorded.rig.central
    cfg = central_config.replace(cfg, receiver=dataclasses.replace(cfg.receiver, store_dir=store.root))
    server = rig_mod.start_web(cfg, workdir / "web", admin=("admin", PASSWORD))
    try:
        make_accounts(server.url, recorded.rig.config.device.unit)
        yield Site(server, recorded, recorded.rig.config.device.unit), store
    finally:
        server.close()


def user(site: Site, role: str) -> WebClient:
    return site.client(ACCOUNTS[role][0])


def decide(client: WebClient, site: Site, data: dict[str, str]) -> Any:
    return client.post(site.page + "retention", data)


def test_retention_is_raised_held_and_lowered_only_by_two_roles__RETENTION(aged: tuple[Site, FileStore]) -> None:
    site, _ = aged
    records, supervisor, viewer, legal = (user(site, r) for r in ("records", "supervisor", "viewer", "legal"))
    refused = decide(viewer, site, {"op": "raise", "cls": "evidence", "reason": "not mine to decide"})
    assert refused.status == 409 and "only" in refused.text
    assert "日常 everyday" in records.get(site.page).text
    done = decide(records, site, {"op": "raise", "cls": "long_term", "grounds": "dispute", "reason": "当事人投诉"})
    assert done.status == 200 and "长期 long-term" in done.text and "当事人投诉" in done.text
    assert decide(legal, site, {"op": "hold", "reason": "诉讼保全"}).status == 200
    assert "法律保全 on legal hold" in user(site, "records").get("/retention/").text
    page = records.get(site.page + "remove")
    assert page.status == 200
    held = records.post(site.page + "remove", {"confirm": f"{site.device}/{site.session}", "password": PASSWORD})
    assert held.status == 409 and "legal hold" in held.text
    assert decide(legal, site, {"op": "release", "reason": "诉讼结束"}).status == 200
    kept = records.post(site.page + "remove", {"confirm": f"{site.device}/{site.session}", "password": PASSWORD})
    assert kept.status == 409 and "nothing is removed before its retention expires" in kept.text
    # Lowering: asked by the records keeper, refused to the same role, confirmed by a supervisor.
    assert decide(records, site, {"op": "lower", "cls": "everyday", "reason": "投诉已撤回"}).status == 200
    seq = records.get(site.page).text.split('name="request_seq" value="')
    assert len(seq) == 1, "the asker is not offered the confirmation"
    request_seq = supervisor.get(site.page).text.split('name="request_seq" value="')[1].split('"')[0]
    same = decide(user(site, "records"), site, {"op": "confirm", "request_seq": request_seq})
    assert same.status == 409 and "two people" in same.text
    assert decide(supervisor, site, {"op": "confirm", "request_seq": request_seq}).status == 200
    assert "日常 everyday" in records.get(site.page).text


def test_an_export_is_asked_approved_built_and_downloaded__ARCHIVE(aged: tuple[Site, FileStore],
                                                                   tmp_path: Path) -> None:
    site, store = aged
    legal, supervisor, records = user(site, "legal"), user(site, "supervisor"), user(site, "records")
    assert records.post(site.page + "export/build", {}).status == 403
    assert legal.post(site.page + "export/build", {}).status == 403  # no approval yet
    asked = legal.post(site.page + "export/request", {"reason": "移送法院 for the court", "range_start": "",
                                                      "range_end": ""})
    assert asked.status == 200
    pending = supervisor.get("/approvals/").text
    assert "导出 EXPORT" in pending
    pk = pending.split('action="/approvals/')[1].split("/")[0]
    assert supervisor.post(f"/approvals/{pk}/decide", {"decision": "approve", "note": "同意"}).status == 200
    built = legal.post(site.page + "export/build", {})
    assert built.status == 200, built.text[:500]
    image = built.text.split(f'href="{site.page}export/')[1].split('"')[0]
    download = legal.get(f"{site.page}export/{image}")
    kept = store.export_path(site.device, site.session, image)
    assert download.status == 200 and download.body == kept.read_bytes()
    disc = tmp_path / "disc"
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(kept), "-extract", "/", str(disc)], check=True,
                   capture_output=True, timeout=120)
    assert check_package(disc).ok
    audit = (store.root / "audit.log").read_text()
    assert '"action":"export"' in audit and f'"package":"{image}"' in audit


def test_no_url_edits_or_deletes_an_original__NO_EDIT(aged: tuple[Site, FileStore]) -> None:
    site, store = aged
    folder = store.session_dir(site.device, site.session)
    before = {p.name: p.read_bytes() for p in (folder / layout.MEDIA).iterdir()}
    for role in ("records", "legal", "supervisor"):
        client = user(site, role)
        for path in (site.page + "seg/1.mp4", site.page + "originals.tar", site.page + "play.json"):
            assert client.post(path, {"data": "x"}).status == 405
            for method in ("PUT", "DELETE", "PATCH"):
                assert client.request(path, method=method).status in (403, 405)
    assert {p.name: p.read_bytes() for p in (folder / layout.MEDIA).iterdir()} == before


def test_the_records_keeper_removes_an_expired_session_in_the_browser__RETENTION(
        aged: tuple[Site, FileStore]) -> None:
    site, store = aged
    with rig_mod.chromium() as browser:
        page = logged_in(browser, site, ACCOUNTS["records"][0])
        page.goto(site.url + "/retention/?state=expired")
        row = page.locator("#retention-report tbody tr", has_text=site.session)
        row.locator("a.remove").click()
        page.wait_for_load_state()
        page.fill("input[name=confirm]", f"{site.device}/{site.session}")
        page.fill("input[name=password]", "not the password at all")
        page.click("#remove-form button")
        page.wait_for_load_state()
        assert "wrong password" in page.inner_text("#remove-error")
        page.fill("input[name=confirm]", f"{site.device}/{site.session}")
        page.fill("input[name=password]", PASSWORD)
        page.click("#remove-form button")
        page.wait_for_load_state()
        assert "已删除 removed" in page.inner_text("#retention-state")
        assert "removed after expiry" in page.inner_text("#register")
    folder = store.session_dir(site.device, site.session)
    assert not list((folder / layout.MEDIA).iterdir()) and list((folder / layout.ENTRIES).iterdir())
    # The tombstone is central's: the sweep finds the session as it should be, entries whole.
    from central.build import build_retention

    cfg = central_config.load(site.server.config_file)
    assert sweep(store, registers=build_retention(cfg, store).registers).broken == []
