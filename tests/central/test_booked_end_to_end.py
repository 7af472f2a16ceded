"""A booking made at central reaches the room and is used (ROOM, RECORD-FIELDS, RETENTION): central signs and
publishes it, the device takes it, the next session's `open` entry carries its fields and id, central's index
finds the session by the booking and shows its matter, the booking's retention class is the session's, and the
session is attached to a case afterwards by a register record, its entries untouched."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from central.build import build_retention, central_key
from central.index import Query, SessionIndex
from central.register import Actor
from central.retention import EVIDENCE, LONG_TERM
from evidence import layout
from evidence.entry import Officer, parse_entry, unsealed
from mqtt.broker import LocalBroker
from tests.conftest import make_rig


def test_a_booking_made_at_central_is_used_by_the_next_session_and_found_by_it__RECORD_FIELDS(
        tmp_path: Path, broker: LocalBroker) -> None:
    rig = make_rig(tmp_path, broker.port)
    try:
        now = rig.service.hal.clock.now()
        kept = rig.book(now - dt.timedelta(minutes=1), 60, case="京公(刑)字2026第7号", matter="张某涉嫌盗窃案",
                        act="询问", parties=("张某",), officers=(Officer("王五", "44000000009"),),
                        retention=EVIDENCE)
        assert rig.store.read_bookings(rig.config.device.id) is not None  # kept at central first
        assert rig.service.bookings.wait_serial(1, 10), "the device did not take central's set"
        session = rig.record(1.0)
        assert rig.service.spool.wait_drained(60)
        folder = rig.central_dir(session)
    finally:
        rig.close()
    key = central_key(rig.central)
    assert key is not None
    opening = parse_entry((folder / layout.ENTRIES / layout.entry_name(0)).read_bytes()).opening
    assert opening is not None and opening.booking is not None and opening.booking.id == kept.booking.id
    opened = unsealed(opening, key) if opening.sealed else opening
    assert (opened.matter, opened.case, opened.parties) == ("张某涉嫌盗窃案", "京公(刑)字2026第7号", ("张某",))
    assert [(o.name, o.certificate) for o in opened.officers] == [("王五", "44000000009")]
    [row] = SessionIndex(rig.store, key).sessions(Query(booking=kept.booking.id))
    assert row.session == session and row.matter == "张某涉嫌盗窃案"

    # The booking's class is the session's, once central reads its entries (the sweep, its page, a removal).
    retention = build_retention(rig.central, rig.store)
    retention.sync_marks(rig.config.device.id, session)
    assert retention.of(rig.config.device.id, session).cls == EVIDENCE

    # Attached to another case afterwards: a signed register record; not one byte of the session changes.
    before = {p.name: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    retention.link_case(rig.config.device.id, session, Actor("档案员", "records"), "京公(刑)字2026第9号", None,
                        "合并侦查 joined to another case")
    retention.raise_class(rig.config.device.id, session, Actor("王科长", "supervisor"), LONG_TERM,
                          "当事人投诉", grounds="dispute")
    d = retention.of(rig.config.device.id, session)
    assert (d.case, d.cls) == ("京公(刑)字2026第9号", LONG_TERM)
    assert {p.name: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
