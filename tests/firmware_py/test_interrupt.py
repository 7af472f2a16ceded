"""A session survives a fault while recording (INTERRUPT, CONTINUOUS): the break is spoken and shown, recording
resumes in the same session once the cause clears, the device asks for the reason and the explanation is
recorded and bracketed, the officer confirms or changes the reason through the spoken menu, the notice is
given again, and the whole session verifies with the gap explained."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import av
import pytest

from central.web.playback import fragment, read_ledger, viewable
from evidence.verify import verify_session
from firmware_py import rig as rig_mod
from firmware_py.cli import build_parser
from firmware_py.demo import print_summary, run_demo
from firmware_py.rig import Rig
from firmware_py.state_machine import State
from hal.buttons.base import ButtonName
from hal.factory import SimControls
from hal.tally.base import TallyPattern
from mqtt.broker import LocalBroker
from provisioning.central_key import load_central_key
from tests.conftest import make_rig, wait_until
from tests.media import entries, loud_fraction


def sim(rig: Rig) -> SimControls:
    assert rig.service.hal.sim is not None
    return rig.service.hal.sim


def stop_and_upload(rig: Rig) -> Path:
    """STOP held; the session's central copy once every entry is receipted."""
    rig.tap(ButtonName.STOP, rig.config.session.stop_hold_seconds + 0.3)
    rig.wait_state(State.IDLE, 60)
    session = rig.service.controller.timings.sessions_closed[-1]
    assert rig.service.spool.wait_drained(60), "central did not receipt the session"
    return rig.central_dir(session)


def wait_said(rig: Rig, key: str, timeout: float = 30.0) -> list[str]:
    """The keys of what the device has said, once it has said `key`."""
    deadline = time.monotonic() + timeout
    while True:
        said = [u.key for u in rig.service.controller.voice.said]
        if key in said or time.monotonic() > deadline:
            assert key in said, said
            return said
        time.sleep(0.05)


def body(log: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [e["body"] for e in log if e["kind"] == kind and (name is None or e["body"].get("name") == name)]


def test_camera_fault_that_clears_resumes_the_same_session__INTERRUPT(rig: Rig) -> None:
    rig.tap(ButtonName.START)
    rig.wait_state(State.RECORDING)
    session = rig.service.controller.session_id
    time.sleep(1.0)
    sim(rig).fault("camera", True)
    rig.wait_state(State.INTERRUPTED, 10)
    assert rig.service.hal.tally.pattern is TallyPattern.FAULT
    assert rig.service.controller.session_id == session, "the fault ended the session"
    time.sleep(1.5)
    sim(rig).fault("camera", False)
    rig.wait_state(State.EXPLAINING, 10)
    rig.wait_state(State.NOTICE, 60)  # the question, the explanation's time, the menu's timeout: notice again
    rig.wait_state(State.RECORDING, 60)
    time.sleep(0.5)
    central = stop_and_upload(rig)
    assert central.name == session

    log = entries(central)
    [gap] = body(log, "interruption")
    assert gap["cause"] == "camera" and gap["recovered_segments"] == []
    # The break took at least as long as the camera was broken, and is on the timeline where it happened.
    assert gap["resumed_ns"] - gap["began_ns"] >= 1.5e9
    segments = body(log, "segment")
    assert any(s["end_ns"] == gap["began_ns"] for s in segments)
    assert any(s["start_ns"] == gap["resumed_ns"] for s in segments)
    # The device asked, and its question is in the recording itself.
    [asked] = [b for b in body(log, "event", "spoken") if b["prompt"] == "interrupted_zh"]
    assert "中断" in asked["text"] and "摄像头故障" in asked["text"]
    assert asked["started_ns"] >= gap["resumed_ns"]
    rate = rig.config.audio.sample_rate
    assert loud_fraction(central, log, asked["started_ns"], asked["seconds"], rate) > 0.5
    # The officer's explanation is bracketed after the question, on the same timeline.
    [explained] = body(log, "event", "explanation")
    assert explained["interruption"] == next(e["seq"] for e in log if e["kind"] == "interruption")
    assert asked["started_ns"] + asked["seconds"] * 1e9 <= explained["began_ns"] + 0.2e9
    assert explained["ended_ns"] - explained["began_ns"] >= rig.config.session.explanation_seconds * 1e9 * 0.9
    # Nobody pressed anything: the detected cause stands.
    [reason] = body(log, "event", "reason")
    assert (reason["code"], reason["chosen"]) == ("camera", "timeout")
    # The notice was given again, after the explanation.
    notices = body(log, "event", "notice")
    assert len(notices) == 2 and notices[1]["started_mono_ns"] > notices[0]["started_mono_ns"]
    assert [s["target"] for s in body(log, "event", "state")][-5:] == [
        "interrupted", "explaining", "notice", "recording", "closing"]
    assert log[-1]["body"]["reason_code"] == "stop_button"
    report = verify_session(central, trusted_key_b64=rig.service.identity.public_key_b64)
    assert report.ok, report.findings
    timeline_shows_the_break(rig, session, gap, explained)


def timeline_shows_the_break(rig: Rig, session: str | None, gap: dict[str, Any], explained: dict[str, Any]) -> None:
    """The web application's timeline puts the break, the spoken explanation and the stated reason where they
    are, and the player's fragments keep the segments on both sides of the break at their places."""
    assert session is not None
    key = load_central_key(Path(rig.central.receiver.private_key_file))
    ledger = read_ledger(rig.store, rig.config.device.id, session, key)
    moments = {m.kind: m for m in ledger.moments()}
    assert moments["interruption"].seconds == round(gap["began_ns"] / 1e9, 3)
    assert "摄像头" in moments["interruption"].text and "resumed" in moments["interruption"].text
    assert moments["explanation"].seconds == round(explained["began_ns"] / 1e9, 3)
    assert "camera" in moments["reason"].text and "timeout" in moments["reason"].text
    assert [m.kind for m in ledger.moments()].count("notice") == 2 and "close" in moments
    after = next(s for s in ledger.segments if s.start_ns == gap["resumed_ns"])
    data = fragment(viewable(rig.store, rig.config.device.id, session, after, True), after.start_ns)
    with av.open(io.BytesIO(data), "r") as mp4:
        first = next(p for p in mp4.demux(video=0) if p.pts is not None)
        assert first.pts is not None
        assert abs(float(first.pts * first.time_base) - gap["resumed_ns"] / 1e9) < 0.01


def test_reason_changed_through_the_spoken_menu__INTERRUPT(rig: Rig) -> None:
    rig.tap(ButtonName.START)
    rig.wait_state(State.RECORDING)
    sim(rig).fault("microphone", True)
    rig.wait_state(State.INTERRUPTED, 10)
    sim(rig).fault("microphone", False)
    rig.wait_state(State.EXPLAINING, 10)
    wait_said(rig, "interrupted_zh")
    rig.tap(ButtonName.START)  # done explaining: the menu starts with the detected cause
    time.sleep(0.3)
    rig.tap(ButtonName.MARK)  # the first of the law's causes after it
    time.sleep(0.3)
    rig.tap(ButtonName.MARK)  # and the next
    time.sleep(0.3)
    rig.tap(ButtonName.START)
    rig.wait_state(State.RECORDING, 60)
    central = stop_and_upload(rig)
    log = entries(central)
    [reason] = body(log, "event", "reason")
    assert reason == {"name": "reason", "interruption": reason["interruption"], "code": "power", "chosen": "changed",
                      "detected": "microphone"}
    said = [u.key for u in rig.service.controller.voice.said]
    assert "chosen_power_zh" in said  # what was taken is said back
    [gap] = body(log, "interruption")
    assert gap["cause"] == "microphone"
    assert verify_session(central, trusted_key_b64=rig.service.identity.public_key_b64).ok


def test_a_full_disk_that_does_not_clear_ends_in_cannot_continue__INTERRUPT(tmp_path: Path,
                                                                            broker: LocalBroker) -> None:
    rig = make_rig(tmp_path, broker.port, session={"cannot_continue_after_seconds": 3.0})
    try:
        rig.tap(ButtonName.START)
        rig.wait_state(State.RECORDING)
        session = rig.service.controller.session_id
        sim(rig).fault("storage", True)
        rig.wait_state(State.INTERRUPTED, 10)
        rig.wait_state(State.FAULT, 30)
        assert rig.service.hal.tally.pattern is TallyPattern.FAULT
        assert "cannot continue" in (rig.service.controller.last_fault or "")
        said = wait_said(rig, "cannot_continue_storage_full_zh")
        assert said.index("fault_storage_full_zh") < said.index("cannot_continue_storage_full_zh")
        sim(rig).fault("storage", False)
        assert rig.service.spool.wait_drained(60)
        central = rig.central_dir(str(session))
        log = entries(central)
        [gap] = body(log, "interruption")
        assert gap["cause"] == "storage_full" and gap["resumed_ns"] is None
        assert body(log, "event", "cannot_continue")[0]["cause"] == "storage_full"
        assert log[-1]["body"]["reason_code"] == "fault_not_cleared"
        assert verify_session(central, trusted_key_b64=rig.service.identity.public_key_b64).ok
        # The head of the unit is told at once: the signed alert reached central, which acknowledged it.
        [kept] = rig.store.alerts()
        alert = kept.alert
        assert (alert.kind, alert.session, alert.cause, alert.device) == (
            "cannot_continue", session, "storage_full", rig.config.device.id)
        assert alert.interrupted_at == gap["began_wall"] and alert.attempts >= 1
        assert [o.name for o in alert.officers] == [o.name for o in rig.config.session.officers]
        assert wait_until(lambda: not rig.service.alerts.waiting(), 30)
        assert (rig.config.device.state_dir / "alerts" / f"{alert.id}.acked.json").read_bytes() == alert.raw
    finally:
        rig.close()


def test_demo_with_an_interruption_ends_in_a_verified_central_copy__INTERRUPT(tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture[str]
                                                                             ) -> None:
    assert build_parser().parse_args(["demo", "--interrupt"]).interrupt
    result = run_demo(4.0, tmp_path, device=rig_mod.fast(), interrupt=True)
    print_summary(result)
    assert result.report.ok, result.report.findings
    [told] = result.breaks
    assert told.startswith("entry ") and ": camera (摄像头故障)" in told and "explanation recorded" in told
    assert "break      entry" in capsys.readouterr().out
    log = entries(result.central_dir)
    [gap] = body(log, "interruption")
    assert gap["cause"] == "camera" and gap["resumed_ns"] is not None
    assert len(body(log, "event", "notice")) == 2  # given again after the break
    assert [b["chosen"] for b in body(log, "event", "reason")] == ["timeout"]
