"""Declining to record (NO-RECORD): MARK held while idle offers a spoken menu of the lawful reasons; a reason
taken writes a short signed session with nothing recorded, which reaches central and verifies; no choice
writes nothing. Nothing is captured either way."""

from __future__ import annotations

from pathlib import Path

from evidence import layout
from evidence.verify import verify_session
from firmware_py.rig import Rig
from firmware_py.state_machine import State
from hal.buttons.base import ButtonName
from hal.tally.base import TallyPattern
from tests.conftest import wait_until
from tests.firmware_py.test_interrupt import body, wait_said
from tests.media import entries, personal


def hold_mark(rig: Rig) -> None:
    rig.tap(ButtonName.MARK, rig.config.session.stop_hold_seconds + 0.3)
    rig.wait_state(State.DECLINING, 10)


def sessions(rig: Rig) -> list[Path]:
    return sorted(p for p in rig.config.spool_dir.iterdir() if layout.SESSION_ID.match(p.name))


def test_a_declined_session_reaches_central_with_nothing_recorded__NO_RECORD(rig: Rig) -> None:
    before = sessions(rig)
    hold_mark(rig)
    assert rig.service.hal.tally.pattern is TallyPattern.OFF  # the room is not told it is being recorded
    wait_said(rig, "decline_option_cancel_zh")
    rig.tap(ButtonName.MARK)  # the first reason after "cancel"
    wait_said(rig, "decline_option_explosion_risk_zh")
    rig.tap(ButtonName.START)
    rig.wait_state(State.IDLE, 10)
    wait_said(rig, "declined_explosion_risk_zh")
    [session] = rig.service.controller.timings.sessions_declined
    assert sessions(rig) == sorted([*before, rig.config.spool_dir / session])
    assert rig.service.spool.wait_drained(60), "central did not receipt the declined session"
    central = rig.central_dir(session)
    log = entries(central)
    assert [e["kind"] for e in log] == ["open", "event", "close"]
    assert body(log, "event", "declined") == [{"name": "declined", "code": "explosion_risk",
                                               "label": "易燃易爆等危险场所且无防爆设备"}]
    officers = [(o.name, o.certificate) for o in rig.config.session.officers]
    opening = personal(log[0]["body"], rig.central.receiver.private_key_file)
    assert [(o["name"], o["certificate"]) for o in opening["officers"]] == officers
    assert log[-1]["body"]["reason_code"] == "declined" and log[-1]["body"]["segments"] == 0
    assert not list((central / layout.MEDIA).iterdir())
    assert verify_session(central, trusted_key_b64=rig.service.identity.public_key_b64).ok
    # The recording light never came on: no pre-flight, no notice, no recording.
    assert rig.service.controller.timings.tally_on is None


def test_declining_cancelled_by_silence_or_by_stop_writes_nothing__NO_RECORD(rig: Rig) -> None:
    before = sessions(rig)
    hold_mark(rig)
    rig.wait_state(State.IDLE, 30)  # the menu's time ran out on "cancel"
    said = wait_said(rig, "decline_cancelled_zh")
    assert "decline_intro_zh" in said
    hold_mark(rig)
    wait_said(rig, "decline_option_cancel_zh")
    rig.tap(ButtonName.MARK)  # on to a reason, then STOP held: not declined after all
    rig.tap(ButtonName.STOP, rig.config.session.stop_hold_seconds + 0.3)
    rig.wait_state(State.IDLE, 10)
    voice = rig.service.controller.voice
    assert wait_until(lambda: [u.key for u in voice.said].count("decline_cancelled_zh") == 2, 20)
    assert sessions(rig) == before
    assert rig.service.controller.timings.sessions_declined == []
