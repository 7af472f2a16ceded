"""The 24-hour upload deadline on the device (UPLOAD-24H): tracked per recording, warned at 12 h and 20 h,
shown on the tally when idle, listed by `recorder status`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from capture.spool import PendingRecording, Spool
from evidence.deadline import Level, UploadPolicy
from firmware_py.cli import main
from firmware_py.deadlines import assess, worst_warning
from firmware_py.rig import Rig
from firmware_py.state_machine import State
from hal.tally.base import TallyPattern
from mqtt.broker import free_port
from tests.conftest import make_rig

POLICY = UploadPolicy()
HOUR = 3600.0


def test_levels_follow_the_warnings_and_the_deadline__UPLOAD_24H() -> None:
    now = 1_000_000.0
    sessions = [PendingRecording(f"s{h}", now - h * HOUR, 3, 1000) for h in (1, 13, 21, 25)]
    sessions.append(PendingRecording("recording", None, 5, 0))
    levels = {a.recording.session: (a.level, a.hours_left) for a in assess(sessions, now, POLICY)}
    assert levels["s1"][0] is Level.OK and levels["s1"][1] == pytest.approx(23)
    assert levels["s13"][0] is Level.WARN
    assert levels["s21"][0] is Level.WARN
    assert levels["s25"][0] is Level.LATE and levels["s25"][1] == pytest.approx(-1)
    assert levels["recording"] == (Level.OK, None)  # the clock starts when the recording ends
    assert worst_warning(assess(sessions[:2], now, POLICY)) == 12
    assert worst_warning(assess(sessions, now, POLICY)) == 24


def test_end_of_working_day_policy_is_configurable__UPLOAD_24H() -> None:
    policy = UploadPolicy(deadline_hours=8.0, warn_hours=(4.0,))
    now = 1_000_000.0
    [a] = assess([PendingRecording("s", now - 5 * HOUR, 1, 1)], now, policy)
    assert a.level is Level.WARN and a.hours_left == pytest.approx(3)


@pytest.fixture
def offline_rig(tmp_path: Path) -> Iterator[Rig]:
    rig = make_rig(tmp_path, free_port(), with_receiver=False)
    yield rig
    rig.close()


def test_unreceipted_recording_is_tracked_from_its_close__UPLOAD_24H(offline_rig: Rig) -> None:
    session = offline_rig.record(0.5)
    [deadline] = offline_rig.service.spool.recordings()
    assert deadline.session == session and deadline.pending_entries > 0
    assert deadline.finished_at == pytest.approx(time.time(), abs=30)
    # A restart rebuilds the same picture from the files alone.
    [again] = Spool(offline_rig.config.spool_dir).recordings()
    assert again.finished_at == pytest.approx(deadline.finished_at, abs=0.01)
    assert deadline.finished_at is not None
    later = assess([deadline], deadline.finished_at + 13 * HOUR, offline_rig.config.upload)
    assert later[0].level is Level.WARN


def shows(rig: Rig, pattern: TallyPattern) -> bool:
    deadline = time.monotonic() + 5
    while rig.service.hal.tally.pattern is not pattern and time.monotonic() < deadline:
        time.sleep(0.02)
    return rig.service.hal.tally.pattern is pattern


def test_alert_shows_on_the_tally_only_while_idle__UPLOAD_24H(offline_rig: Rig) -> None:
    controller = offline_rig.service.controller
    controller.set_upload_alert(True)
    assert shows(offline_rig, TallyPattern.ALERT)
    offline_rig.record(0.3)  # a session shows its own patterns, then idle brings the alert back
    offline_rig.wait_state(State.IDLE)
    assert shows(offline_rig, TallyPattern.ALERT)
    controller.set_upload_alert(False)
    assert shows(offline_rig, TallyPattern.OFF)


def test_status_lists_recordings_past_a_warning__UPLOAD_24H(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    rig = make_rig(tmp_path, free_port(), with_receiver=False)
    try:
        session = rig.record(0.3)
    finally:
        rig.close()
    config = tmp_path / "recorder.toml"
    # A policy whose first warning has already passed stands in for a recording 12 hours old.
    config.write_text(f'[device]\nstate_dir = "{tmp_path / "device"}"\n'
                      '[upload]\ndeadline_hours = 0.002\nwarn_hours = [0.0001]\n')
    assert main(["status", "--config", str(config), "--json"]) == 1  # 1: the service is not running
    alerts = json.loads(capsys.readouterr().out)["upload_alerts"]
    assert [a["session"] for a in alerts] == [session]
    assert alerts[0]["level"] in ("warn", "late")
