"""The session controller on simulated hardware: buttons, tally, pre-flight and faults."""

from __future__ import annotations

import time
from pathlib import Path

from gpiozero.pins.mock import MockPin

from firmware_py.rig import Rig
from firmware_py.state_machine import State
from hal.buttons.base import ButtonName
from hal.tally.base import TallyPattern
from mqtt.broker import LocalBroker
from tests.conftest import make_rig
from tests.media import events


def tally_pin(rig: Rig) -> MockPin:
    assert rig.service.hal.sim is not None
    return rig.service.hal.sim.pins.pin(rig.config.hal.pins.tally)


def pattern(rig: Rig) -> TallyPattern:
    return rig.service.hal.tally.pattern


def toggles(pin: MockPin, seconds: float) -> int:
    """How often the light changes within `seconds`."""
    start = len(pin.states)
    time.sleep(seconds)
    return len(pin.states) - start


def test_tally_off_blinking_steady_by_state(rig: Rig) -> None:
    pin = tally_pin(rig)
    assert pattern(rig) is TallyPattern.OFF and not pin.state
    rig.tap(ButtonName.START)
    rig.wait_state(State.NOTICE)
    assert pattern(rig) is TallyPattern.NOTICE
    assert toggles(pin, 1.2) >= 2, "the light does not blink while the notice plays"
    rig.wait_state(State.RECORDING)
    time.sleep(0.05)
    assert toggles(pin, 0.6) == 0 and pin.state, "the light is not steady while recording"
    rig.tap(ButtonName.STOP, rig.config.session.stop_hold_seconds + 0.3)
    rig.wait_state(State.IDLE)
    assert not pin.state


def test_short_stop_press_does_not_end_the_recording_and_says_hold_to_stop__CONTINUOUS(rig: Rig) -> None:
    rig.tap(ButtonName.START)
    rig.wait_state(State.RECORDING)
    rig.tap(ButtonName.STOP, rig.config.session.stop_hold_seconds / 4)
    voice = rig.service.controller.voice
    deadline = time.monotonic() + 20
    while "hold_to_stop_zh" not in [u.key for u in voice.said] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "hold_to_stop_zh" in [u.key for u in voice.said], "a brushed STOP was not answered"
    assert rig.service.controller.machine.state is State.RECORDING
    rig.tap(ButtonName.STOP, rig.config.session.stop_hold_seconds + 0.3)
    rig.wait_state(State.IDLE)
    session = rig.service.controller.timings.sessions_closed[-1]
    log = rig.config.spool_dir / session
    presses = [e["body"]["button"] for e in events(log, "button")]
    assert presses == ["start", "stop"]  # the brush did not count as a press; only the hold did
    assert [e["body"]["button"] for e in events(log, "brushed_stop")] == ["stop"]
    spoken = [e["body"]["prompt"] for e in events(log, "spoken")]
    assert "hold_to_stop_zh" in spoken


def test_default_stop_hold_is_two_seconds() -> None:
    from firmware_py.config import from_dict

    assert from_dict({}).session.stop_hold_seconds == 2.0


def test_preflight_failure_is_spoken_shown_and_blocks_the_session__DEVICE_CHECK(
        tmp_path: Path, broker: LocalBroker) -> None:
    rig = make_rig(tmp_path, broker.port)
    try:
        sim = rig.service.hal.sim
        assert sim is not None
        sim.storage.capacity_bytes = 1_000  # a full card
        played_before = sim.room.played
        rig.tap(ButtonName.START)
        rig.wait_state(State.FAULT)
        assert pattern(rig) is TallyPattern.FAULT
        assert toggles(tally_pin(rig), 0.5) >= 3, "the fault pattern is not a fast blink"
        failed = [r for r in rig.service.controller.last_preflight if not r.ok]
        assert [r.name for r in failed] == ["storage"]
        assert "MB free" in failed[0].detail
        deadline = time.monotonic() + 10
        while sim.room.played == played_before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sim.room.played > played_before, "the failure was not spoken"
        assert not list(rig.config.spool_dir.glob("*/entries")), "a session was started despite the failure"
        # Once the card has room again, START tries again and the session starts.
        sim.storage.capacity_bytes = None
        rig.record(0.5)
    finally:
        rig.close()


def test_unsynchronised_clock_is_allowed_but_marked__DEVICE_CHECK(tmp_path: Path, broker: LocalBroker) -> None:
    rig = make_rig(tmp_path, broker.port)
    try:
        assert rig.service.hal.sim is not None
        rig.service.hal.sim.clock.synchronised = False
        session = rig.record(0.5)
        from tests.media import entries

        log = entries(rig.config.spool_dir / session)
        assert log[0]["body"]["clock_synced"] is False
        assert log[0]["body"]["preflight_warnings"] == ["clock"]
        assert all(not e["clock_synced"] for e in log)
    finally:
        rig.close()
