"""Bookings from central on the device (ROOM, RECORD-FIELDS, NO-RECORD; PROTOCOL §14): a signed set published
retained on a real Mosquitto is taken and used by the next session (its `open` entry, its notice, its stamp),
a booking that asks for it starts its session at its time, and the room sensor reminds and alerts."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest

from capture.stamp import Stamper, StampFacts, find_cjk_font, stamp_lines
from evidence import layout
from evidence.alert import OVERRUN, UNRECORDED_PRESENCE
from evidence.encryption import open_sealed
from firmware_py import scenario
from firmware_py.bookings import AUTO_STARTED
from firmware_py.cli import main
from firmware_py.rig import Rig, booking, publish_retained
from firmware_py.state_machine import State
from hal.buttons.base import ButtonName
from mqtt import protocol
from mqtt.broker import LocalBroker
from provisioning.central_key import load_central_key
from tests.conftest import make_rig, wait_until
from tests.media import entries, events, first_frame, personal


def _frame(rig: Rig, session: Path, index: int, tmp_path: Path) -> np.ndarray:
    """Segment `index` of a spool session, opened with central's key (the device cannot), as a picture."""
    sealed = (session / layout.MEDIA / layout.media_name(index)).read_bytes()
    plain = tmp_path / "segment.ts"
    plain.write_bytes(open_sealed(sealed, load_central_key(Path(rig.central.receiver.private_key_file))).plaintext)
    return first_frame(plain)


def test_a_booking_from_central_is_used_by_the_next_session__RECORD_FIELDS(
        tmp_path: Path, broker: LocalBroker, capsys: pytest.CaptureFixture[str]) -> None:
    rig = make_rig(tmp_path, broker.port, with_receiver=False, notice={"closing_statement": True})
    try:
        now = rig.service.hal.clock.now()
        booked = booking(now - dt.timedelta(minutes=5), 60, matter="张某涉嫌盗窃案", act="询问")
        later = booking(now + dt.timedelta(hours=2), 30, matter="李某调解", act="听证")
        # Hostile and foreign sets first: refused, and the MQTT client's network thread goes on.
        topic = protocol.topic(rig.config.mqtt.topic_prefix, rig.config.device.id, protocol.BOOKINGS)
        publish_retained(rig.central, topic, b"[" * 5000)
        rig.publish_bookings([booked], serial=9, device="OTHER-9")
        rig.publish_bookings([booked, later], serial=7)
        assert rig.service.bookings.wait_serial(7, 10), "the retained set never reached the device"
        assert rig.service.bookings.refused == 2
        published = rig.service.health()["bookings"]  # what the box tells the fleet: no case, no matter
        assert published["next"]["id"] == booked.id and published["refused"] == 2
        assert "matter" not in published["next"] and "case" not in published["next"]
        session = rig.record(1.0)
    finally:
        rig.close()

    spool = rig.config.spool_dir / session
    log = entries(spool)
    opening = log[0]["body"]
    assert opening["booking"] == {"id": booked.id, "version": 1, "act": "询问", "retention": "evidence",
                                  "start": booked.start.isoformat(timespec="seconds"),
                                  "end": booked.end.isoformat(timespec="seconds")}
    people = personal(opening, rig.central.receiver.private_key_file)  # sealed on the device
    assert (people["case"], people["matter"], people["parties"]) == (booked.case, booked.matter, ["张某"])
    assert people["officers"] == [{"name": "王五", "certificate": "44000000009"}]  # the booking's, not configured
    notices = [(e["body"]["prompt"], e["body"]["text"]) for e in events(spool, "notice")]
    assert notices == [("notice_zh", rig.config.notice.zh),
                       ("notice_matter_zh", "本次执法事项：询问，张某涉嫌盗窃案。")]
    closing = [e["body"]["text"] for e in events(spool, "spoken") if e["body"]["prompt"] == "ended_zh"]
    assert len(closing) == 1 and closing[0].startswith("本次执法事项：询问，张某涉嫌盗窃案。本次录音录像于")

    # The stamp's own line names the act, the matter and the case.
    cfg = rig.config
    facts = StampFacts(cfg.device.room, cfg.device.location, cfg.device.id, (("王五", "44000000009"),), session,
                       "询问", booked.matter, booked.case)
    assert stamp_lines(facts, "", True, 1)[-1] == "执法事项 询问  张某涉嫌盗窃案  案号 A-2026-0042"
    stamper = Stamper(facts, rig.service.hal.clock, cfg.video.width, cfg.video.height, find_cjk_font(), lambda: 1)
    lines = len(stamp_lines(facts, "", True, 1))
    rows = slice(stamper.band_height * (lines - 1) // lines, stamper.band_height)
    got = _frame(rig, spool, 1, tmp_path)[rows].astype(np.int16)
    expected = stamper.render(stamp_lines(facts, "", True, 1))[rows].astype(np.int16)
    other = dataclasses.replace(facts, act="听证", matter="李某调解", case="B-1")
    wrong = stamper.render(stamp_lines(other, "", True, 1))[rows].astype(np.int16)
    match, mismatch = float(np.mean(np.abs(got - expected))), float(np.mean(np.abs(got - wrong)))
    assert match < 12 and mismatch > 2 * match, (match, mismatch)

    # `recorder status` shows the next booking, how many are held and the serial.
    config_file = tmp_path / "recorder.toml"
    config_file.write_text(f'[device]\nid = "{cfg.device.id}"\nstate_dir = "{cfg.device.state_dir}"\n',
                           encoding="utf-8")
    main(["status", "--config", str(config_file), "--json"])
    report = json.loads(capsys.readouterr().out)["bookings"]
    assert (report["serial"], report["held"]) == (7, 2)
    assert report["next"]["id"] == booked.id and report["next"]["matter"] == booked.matter
    main(["status", "--config", str(config_file)])
    text = capsys.readouterr().out
    assert "2 held (set 7 from central)" in text
    assert f"询问室一 {booked.start.astimezone(rig.service.hal.clock.tz):%Y-%m-%d %H:%M}–" in text
    assert "询问  张某涉嫌盗窃案; START by hand" in text


def test_automatic_start_at_the_booked_time_then_the_overrun_prompt_and_alert__ROOM(
        tmp_path: Path, broker: LocalBroker) -> None:
    rig = make_rig(tmp_path, broker.port, room={"sensor": "door", "overrun_minutes": 0.02,
                                                "alert_after_minutes": 0.02})
    try:
        service = rig.service
        # Whole seconds: a booking's times travel as ISO 8601 to the second (PROTOCOL §14.2).
        start = (service.hal.clock.now() + dt.timedelta(seconds=3)).replace(microsecond=0)
        booked = booking(start, 0.1, auto_start=True, matter="自动开始的询问")
        rig.publish_bookings([booked], serial=1)
        assert service.bookings.wait_serial(1, 10)
        assert service.controller.machine.state is State.IDLE
        rig.wait_state(State.PREFLIGHT, 10)
        began = service.hal.clock.now()
        rig.wait_state(State.RECORDING, 30)
        session = service.controller.session_id
        assert session is not None
        # Nobody in the room (the door stands open) after the booking's end: asked to end it, then central told.
        assert wait_until(lambda: any(u.key == "overrun_zh" for u in service.controller.voice.said), 20)
        assert wait_until(lambda: any(a.alert.kind == OVERRUN for a in rig.store.alerts()), 20)
        rig.tap(ButtonName.STOP, rig.config.session.stop_hold_seconds + 0.3)
        rig.wait_state(State.IDLE)
        # Still under way, but marked as having had its session: nothing is due, so the room thread, which
        # starts only what `due` gives, never starts it again.
        assert service.bookings.due(service.hal.clock.now()) == []
        assert service.controller.machine.state is State.IDLE, "started a second time"
        assert service.bookings.used(booked.id) == AUTO_STARTED
    finally:
        rig.close()

    assert dt.timedelta(0) <= began - start < dt.timedelta(seconds=1), (start, began)
    spool = rig.config.spool_dir / session
    assert [e["body"] for e in events(spool, "booking_start")] == [
        {"name": "booking_start", "booking": booked.id, "version": 1}]
    assert [e["body"]["button"] for e in events(spool, "button")] == ["stop"]  # no START was pressed
    assert entries(spool)[0]["body"]["booking"]["id"] == booked.id
    assert [e["body"]["text"] for e in events(spool, "notice")][1] == "本次执法事项：询问，自动开始的询问。"
    assert any(e["body"]["prompt"] == "overrun_zh" for e in events(spool, "spoken"))
    alert = next(a.alert for a in rig.store.alerts() if a.alert.kind == OVERRUN)
    assert (alert.session, alert.cause, alert.matter) == (session, "door", "自动开始的询问")
    assert booked.id in alert.detail


def test_a_reminder_and_an_alert_from_the_door_sensor__NO_RECORD(tmp_path: Path, broker: LocalBroker) -> None:
    rig = make_rig(tmp_path, broker.port, room={"sensor": "door", "remind_after_minutes": 0.02,
                                                "alert_after_minutes": 0.02})
    try:
        service = rig.service
        assert service.hal.sim is not None
        runner = scenario.ScenarioRunner(scenario.parse("0.1 enter\n"), service.hal.sim, {},
                                         lambda state, timeout: True)
        runner.start()
        assert runner.finished.wait(5) and runner.failure is None
        said = service.controller.voice.said
        assert wait_until(lambda: any(u.key == "reminder_zh" for u in said), 10)
        assert wait_until(lambda: any(a.alert.kind == UNRECORDED_PRESENCE for a in rig.store.alerts()), 10)
        assert wait_until(lambda: not service.alerts.waiting(), 10), "central acknowledged it"
        # The alert came alert_after_minutes after the reminder, the room thread looking each second in between
        # with people still in the room: it reminded once for this one stay.
        assert [u.key for u in said].count("reminder_zh") == 1, "reminded once for one stay in the room"
        assert service.health()["room"]["occupied"] is True
    finally:
        rig.close()
    alert = next(a.alert for a in rig.store.alerts() if a.alert.kind == UNRECORDED_PRESENCE)
    assert (alert.session, alert.cause, alert.room) == ("", "door", rig.config.device.room)
    assert alert.signed_by(rig.service.identity.public_key_b64)
    assert not any(p.is_dir() for p in rig.config.spool_dir.iterdir() if not p.name.startswith(".")), \
        "nothing is recorded outside a session"
