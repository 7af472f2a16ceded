"""The rooms page and the booking form (ROOM, RECORD-FIELDS) with the real server, over a copy of the recorded
session in a store of its own: each room's day to the units that see it, with the session recorded without a
booking as a gap; bookings made, changed and cancelled on the form by those who may, refused to the others,
signed as the room's next set and audited; and one in Chromium, made on the form and shown on the room's day."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from central import config as central_config
from central.bookings import latest_set
from central.index import Query, SessionIndex
from central.store import FileStore
from central.web.client import WebClient
from evidence.booking import accept
from evidence.entry import Officer
from evidence.keys import load_public_key_b64
from firmware_py import rig as rig_mod
from provisioning.central_key import load_signing_key
from tests.central.test_sweep import copied_store
from tests.central.web.conftest import ACCOUNTS, Site, make_accounts
from tests.central.web.test_browser import logged_in
from tests.conftest import RecordedSession

ZONE = dt.timezone(dt.timedelta(hours=8))  # the rig's agency zone, Asia/Shanghai


@dataclasses.dataclass
class Rooms:
    site: Site
    store: FileStore
    key: Any

    @property
    def device(self) -> str:
        return self.site.device

    def user(self, role: str) -> WebClient:
        return self.site.client(ACCOUNTS[role][0])

    def held(self, serial: int = 0) -> Any:
        data = latest_set(self.store, self.device)
        assert data is not None
        return accept(data, self.device, self.key, serial)

    def audit(self, action: str) -> list[dict[str, Any]]:
        lines = (self.store.root / "audit.log").read_text().splitlines()
        return [r for r in map(json.loads, lines) if r["action"] == action]


@pytest.fixture(scope="module")
def rooms(recorded: RecordedSession, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rooms]:
    workdir = tmp_path_factory.mktemp("rooms")
    store, _, _ = copied_store(recorded, workdir / "central")
    cfg = recorded.rig.central
    cfg = central_config.replace(cfg, receiver=dataclasses.replace(cfg.receiver, store_dir=store.root))
    server = rig_mod.start_web(cfg, workdir / "web", admin=("admin", "correct horse 9 battery"))
    try:
        make_accounts(server.url, recorded.rig.config.device.unit)
        key = load_public_key_b64(load_signing_key(Path(cfg.receiver.signing_key_file)).public_key_b64)
        yield Rooms(Site(server, recorded, recorded.rig.config.device.unit), store, key)
    finally:
        server.close()


def session_day(rooms: Rooms) -> str:
    index = SessionIndex(rooms.store)
    try:
        [row] = index.sessions(Query(session=rooms.site.session))
    finally:
        index.close()
    return dt.datetime.fromtimestamp(row.opened_ts, ZONE).date().isoformat()


def day_after(days: int) -> str:
    return (dt.datetime.now(ZONE) + dt.timedelta(days=days)).date().isoformat()


def booking_form(day: str, start: str, end: str, **extra: str) -> dict[str, str]:
    return {"start": f"{day}T{start}", "end": f"{day}T{end}", "case": "", "matter": "", "act": "", "parties": "",
            "officers": "", "retention": "everyday", **extra}


def test_each_rooms_day_is_shown_to_the_units_that_see_it__ROOM(rooms: Rooms) -> None:
    day = session_day(rooms)
    page = rooms.user("viewer").get(f"/rooms/?day={day}")
    assert page.status == 200
    section = page.text.split(f'id="room-{rooms.device}"')[1]
    assert '<svg class="timeline"' in section and 'class="recorded"' in section
    # The recorded session had no booking: listed so, and as a gap of the day.
    assert rooms.site.session in section and "无预约 no booking" in section
    assert re.search(r'<li class="gap-unbooked">[^<]*无预约录制 recorded without a booking \(<a href="/s/'
                     + re.escape(f'{rooms.device}/{rooms.site.session}/'), section)
    assert f'href="/rooms/book?device={rooms.device}' in section  # a case officer of the unit books its rooms
    assert '<dd id="booking">无预约 none</dd>' in rooms.user("viewer").get(rooms.site.page).text
    # Within the pages' policy: no inline script or style.
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert "<script" not in page.text and "style=" not in page.text
    legal = rooms.user("legal").get(f"/rooms/?day={day}").text
    assert f'id="room-{rooms.device}"' in legal and "/rooms/book?" not in legal  # every unit; books none
    outsider = rooms.user("outsider").get(f"/rooms/?day={day}").text
    assert f'id="room-{rooms.device}"' not in outsider and "No rooms you may see" in outsider
    assert rooms.user("technician").get("/rooms/").status == 403
    assert '<a href="/rooms/">房间 Rooms</a>' in legal  # the nav link
    assert rooms.user("viewer").get("/rooms/?day=yesterday").text.count("is not a day like") == 1
    looks = [r for r in rooms.audit("search") if r["target"] == "rooms" and r["detail"]["filters"] == {"day": day}]
    assert {r["actor"] for r in looks} == {ACCOUNTS[role][0] for role in ("viewer", "legal", "outsider")}


def test_a_booking_is_made_changed_and_cancelled_on_the_form_and_audited__ROOM_RECORD_FIELDS(rooms: Rooms) -> None:
    viewer, supervisor, outsider, legal = (rooms.user(r) for r in ("viewer", "supervisor", "outsider", "legal"))
    day = day_after(3)
    form = booking_form(day, "09:30", "10:30", device=rooms.device, case="（2026）12号", matter="询问陈某",
                        act="询问", parties="陈某\n李某", officers="李警官:44000000001\n王警官：44000000002",
                        retention="evidence", auto_start="on")
    assert viewer.get(f"/rooms/book?device={rooms.device}&day={day}").status == 200
    made = viewer.post("/rooms/book", form)
    assert made.status == 200 and f"/rooms/?day={day}" in made.url, made.text[:800]
    booking_id = re.findall(r'href="/rooms/booking/([0-9a-f]{16})/"', made.text)[-1]
    held = rooms.held()
    [b] = [b for b in held.bookings if b.id == booking_id]
    assert (b.case, b.matter, b.act, b.parties, b.retention, b.auto_start) == (
        "（2026）12号", "询问陈某", "询问", ("陈某", "李某"), "evidence", True)
    assert b.officers == (Officer("李警官", "44000000001"), Officer("王警官", "44000000002"))
    assert b.start.isoformat() == f"{day}T09:30:00+08:00"  # typed in the agency's zone
    [record] = [r for r in rooms.audit("booking") if r["detail"]["booking"] == booking_id]
    assert (record["actor"], record["role"], record["target"], record["detail"]["change"]) == (
        ACCOUNTS["viewer"][0], "viewer", rooms.device, "made")
    # Refused: an overlap (named), a form without its times, and those who may not book this room.
    clash = viewer.post("/rooms/book", booking_form(day, "10:00", "11:00", device=rooms.device))
    assert clash.status == 409 and f"overlaps booking {booking_id}" in clash.text
    assert viewer.post("/rooms/book", {"device": rooms.device, "retention": "everyday"}).status == 400
    assert outsider.post("/rooms/book", booking_form(day, "12:00", "13:00", device=rooms.device)).status == 404
    assert outsider.get(f"/rooms/booking/{booking_id}/").status == 404
    assert legal.post("/rooms/book", booking_form(day, "12:00", "13:00", device=rooms.device)).status == 403
    assert legal.post(f"/rooms/booking/{booking_id}/cancel", {}).status == 403
    # A supervisor of the unit changes it; the case officer cancels it.
    changed = supervisor.post(f"/rooms/booking/{booking_id}/", {**form, "end": f"{day}T11:00"})
    assert changed.status == 200, changed.text[:800]
    [b] = [b for b in rooms.held().bookings if b.id == booking_id]
    assert (b.version, b.end.isoformat()) == (2, f"{day}T11:00:00+08:00")
    history = viewer.get(f"/rooms/booking/{booking_id}/").text
    assert "made (v1)" in history and f"{ACCOUNTS['supervisor'][0]}: changed (v2)" in history
    cancelled = viewer.post(f"/rooms/booking/{booking_id}/cancel", {})
    assert cancelled.status == 200 and "已取消 cancelled" in cancelled.text
    assert booking_id not in [b.id for b in rooms.held().bookings]
    assert viewer.post(f"/rooms/booking/{booking_id}/cancel", {}).status == 409
    assert [(r["actor"], r["detail"]["change"], r["detail"]["version"]) for r in rooms.audit("booking")
            if r["detail"]["booking"] == booking_id] == [
        (ACCOUNTS["viewer"][0], "made", 1), (ACCOUNTS["supervisor"][0], "changed", 2),
        (ACCOUNTS["viewer"][0], "cancelled", 2)]


def test_a_booking_made_on_the_form_shows_on_the_rooms_day_in_the_browser__ROOM(rooms: Rooms) -> None:
    day = day_after(5)
    with rig_mod.chromium() as browser:
        page = logged_in(browser, rooms.site, ACCOUNTS["viewer"][0])
        page.goto(f"{rooms.site.url}/rooms/?day={day}")
        assert "当天无预约 No bookings this day" in page.inner_text(f"#room-{rooms.device} table.bookings")
        page.click(f"#room-{rooms.device} a.book")
        page.wait_for_load_state()
        page.fill("#start", f"{day}T14:00")
        page.fill("#end", f"{day}T15:30")
        page.fill("#matter", "听证会 hearing")
        page.fill("#parties", "赵某")
        page.select_option("#retention", "long_term")
        page.click("#save")
        page.wait_for_load_state()
        assert f"/rooms/?day={day}" in page.url
        row = page.inner_text(f"#room-{rooms.device} table.bookings tbody")
        assert "14:00–15:30" in row and "听证会 hearing" in row and "赵某" in row and "长期 long-term" in row
        bar = page.locator(f"#timeline-{rooms.device} rect.booked")
        assert bar.count() == 1 and "听证会 hearing" in (bar.locator("title").text_content() or "")
    assert [b.matter for b in rooms.held().bookings if b.start.date().isoformat() == day] == ["听证会 hearing"]
