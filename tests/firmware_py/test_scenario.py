from __future__ import annotations

from pathlib import Path

import pytest

from firmware_py.errors import ScenarioError
from firmware_py.scenario import load, parse
from firmware_py.state_machine import State
from hal.buttons.base import ButtonName


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
