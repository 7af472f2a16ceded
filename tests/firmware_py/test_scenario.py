from __future__ import annotations

from pathlib import Path

import pytest

from firmware_py.errors import ScenarioError
from firmware_py.scenario import ScenarioRunner, load, parse
from firmware_py.state_machine import State
from hal.buttons.base import ButtonName
from hal.clock.sim import SimClock
from hal.factory import SimControls
from hal.gpio.sim import SimPins
from hal.sensor.sim import SimRoomSensor


def test_scenario_steps_parse() -> None:
    steps = parse("# a session\n0.5 press start\n0.6 wait recording\n3 press mark\n6 hold stop 2.5\n9 end\n")
    assert [s.action for s in steps] == ["press", "wait", "press", "hold", "end"]
    assert steps[0].button is ButtonName.START
    assert steps[1].state is State.RECORDING
    assert steps[3].seconds == 2.5


def test_fault_clear_and_kill_steps_parse__INTERRUPT() -> None:
    steps = parse("1 fault camera 2\n2 fault storage\n3 clear storage\n4 fault power\n5 fault microphone 1\n6 kill\n")
    assert [(s.action, s.device, s.seconds) for s in steps] == [
        ("fault", "camera", 2.0), ("fault", "storage", 0.0), ("clear", "storage", 0.0), ("fault", "power", 0.0),
        ("fault", "microphone", 1.0), ("kill", None, 0.0)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1 press start\n2 press elevator\n", "scenario:2: unknown button 'elevator'"),
        ("1 press start\nsoon press stop\n", "scenario:2: the time must be a number"),
        ("2 press start\n1 press stop\n", "scenario:2: steps must be in time order"),
        ("1 hold stop\n", "scenario:1: cannot read '1 hold stop'"),
        ("1 wait lunch\n", "scenario:1: unknown state 'lunch'"),
        ("# nothing\n", "the scenario has no steps"),
        ("1 fault toaster\n", "scenario:1: unknown device 'toaster'"),
        ("1 fault camera nan\n", "scenario:1: the fault's duration must be between"),
        ("1 kill now\n", "scenario:1: cannot read '1 kill now'"),
    ],
)
def test_bad_scenario_names_the_line(text: str, message: str) -> None:
    with pytest.raises(ScenarioError) as err:
        parse(text)
    assert message in str(err.value)


def test_missing_scenario_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"nope\.txt"):
        load(tmp_path / "nope.txt")


def test_people_enter_and_leave_the_room__ROOM() -> None:
    steps = parse("1 enter\n5 leave\n")
    assert [(s.action, s.at) for s in steps] == [("enter", 1.0), ("leave", 5.0)]
    with pytest.raises(ScenarioError, match="scenario:1: cannot read '1 enter now'"):
        parse("1 enter now\n")


@pytest.mark.parametrize("sensor", [True, False])
def test_a_scenario_moves_people_past_the_room_sensor_or_says_there_is_none__ROOM(sensor: bool) -> None:
    clock = SimClock("Asia/Shanghai")
    room = SimRoomSensor("door", clock) if sensor else None
    sim = SimControls(SimPins(), None, None, clock, None, None, room)
    runner = ScenarioRunner(parse("0 enter\n0 leave\n0 enter\n"), sim, {}, lambda state, timeout: True)
    seen: list[bool] = []
    if room is not None:
        room.on_change(lambda o: seen.append(o.occupied))
    runner.start()
    assert runner.finished.wait(5)
    if sensor:
        assert runner.failure is None and seen == [True, False, True]
    else:
        assert runner.failure == "'enter' at 0 s needs a room sensor: set room.sensor to door or presence"
