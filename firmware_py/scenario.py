"""Scenario files: timed inputs that drive the simulated hardware, for demos, tests and technicians.

One step per line, `SECONDS ACTION [ARGUMENTS]`; `#` starts a comment. SECONDS counts from the start
of the scenario. Actions:
    press BUTTON            press and release after 0.1 s   (BUTTON: start, stop, mark)
    hold BUTTON SECONDS     press and release after SECONDS
    wait STATE              wait until the device is in STATE (idle, preflight, notice, recording,
                            interrupted, explaining, closing, fault); the times of the steps after it count
                            from that moment
    fault DEVICE [SECONDS]  break a simulated device, for SECONDS or until `clear DEVICE`: camera (runs but
                            delivers no frame), microphone (hears only digital silence), storage (full:
                            nothing more fits), power (under-voltage)
    clear DEVICE            mend it
    enter                   people come into the room: the simulated room sensor (room.sensor door or
                            presence) reports it in use
    leave                   everyone leaves: the sensor reports the room empty
    kill                    end the service at once, as a power cut would (SIGKILL: nothing is closed or
                            flushed). Under systemd it starts again by itself; by hand, run `recorder run`
                            again (with another scenario to go on). An open session is taken up again
    end                     wait until no session is open (the device is idle, or in fault), then stop
                            the service; ending in fault fails the scenario

After a break the device asks for the reason and offers a spoken menu: `press mark` hears the next reason,
`press start` takes the one last announced (and, before the menu, ends the spoken explanation).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from firmware_py.errors import ScenarioError
from firmware_py.state_machine import State
from hal.buttons.base import ButtonName
from hal.factory import SIM_FAULTS, SimControls

_TAP_SECONDS = 0.1
MAX_SECONDS = 24 * 3600.0
"""The latest a step may be: a scenario is a test or a demonstration, not a day's schedule."""
WAIT_SECONDS = 120.0
"""How long `wait` and `end` wait for the device before the scenario fails."""


@dataclass(frozen=True)
class Step:
    at: float
    action: str
    button: ButtonName | None
    seconds: float
    state: State | None = None
    device: str | None = None
    """For `fault` and `clear`: one of hal.factory.SIM_FAULTS."""


def _button(word: str, where: str) -> ButtonName:
    try:
        return ButtonName(word)
    except ValueError as err:
        names = ", ".join(b.value for b in ButtonName)
        raise ScenarioError(f"{where}: unknown button {word!r} (one of {names})") from err


def _number(word: str, where: str, what: str) -> float:
    try:
        value = float(word)
    except ValueError as err:
        raise ScenarioError(f"{where}: {what} must be a number of seconds, got {word!r}") from err
    if not 0 <= value <= MAX_SECONDS:  # also refuses nan and inf
        raise ScenarioError(f"{where}: {what} must be between 0 and {MAX_SECONDS:g} seconds, got {word}")
    return value


def parse(text: str, source: str = "scenario") -> list[Step]:
    steps: list[Step] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        where = f"{source}:{number}"
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) < 2:
            raise ScenarioError(f"{where}: expected 'SECONDS ACTION ...', got {raw.strip()!r}")
        at = _number(words[0], where, "the time")
        if steps and steps[-1].action != "wait" and at < steps[-1].at:
            raise ScenarioError(f"{where}: steps must be in time order ({at} comes after {steps[-1].at})")
        action, args = words[1], words[2:]
        if action == "press" and len(args) == 1:
            steps.append(Step(at, action, _button(args[0], where), _TAP_SECONDS))
        elif action == "hold" and len(args) == 2:
            steps.append(Step(at, action, _button(args[0], where), _number(args[1], where, "the hold time")))
        elif action == "wait" and len(args) == 1:
            try:
                state = State(args[0])
            except ValueError as err:
                states = ", ".join(s.value for s in State)
                raise ScenarioError(f"{where}: unknown state {args[0]!r} (one of {states})") from err
            steps.append(Step(at, action, None, 0.0, state))
        elif action in ("fault", "clear") and args and args[0] not in SIM_FAULTS:
            raise ScenarioError(f"{where}: unknown device {args[0]!r} (one of {', '.join(SIM_FAULTS)})")
        elif action == "fault" and len(args) in (1, 2):
            seconds = _number(args[1], where, "the fault's duration") if len(args) == 2 else 0.0
            steps.append(Step(at, action, None, seconds, device=args[0]))
        elif action == "clear" and len(args) == 1:
            steps.append(Step(at, action, None, 0.0, device=args[0]))
        elif action in ("end", "kill", "enter", "leave") and not args:
            steps.append(Step(at, action, None, 0.0))
        else:
            raise ScenarioError(f"{where}: cannot read {raw.strip()!r}: expected 'press BUTTON', "
                                "'hold BUTTON SECONDS', 'wait STATE', 'fault DEVICE [SECONDS]', 'clear DEVICE', "
                                "'enter', 'leave', 'kill' or 'end'")
    if not steps:
        raise ScenarioError(f"{source}: the scenario has no steps")
    return steps


def load(path: Path) -> list[Step]:
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise ScenarioError(f"{path}: cannot read the scenario: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise ScenarioError(f"{path}: not UTF-8 text (byte {err.start}); save it as UTF-8") from err
    return parse(text, str(path))


def demo_steps(seconds: float, stop_hold: float, interrupt: bool = False) -> list[Step]:
    """The demo's session: START, the notice, `seconds` of recording with a MARK midway, STOP held. With
    `interrupt`, the camera fails for INTERRUPT_DEMO_FAULT_S at the start of the second half: the device says
    so, resumes, asks for the reason, runs the menu to its timeout and gives the notice again; then the rest."""
    start = [Step(0.5, "press", ButtonName.START, _TAP_SECONDS), Step(0.6, "wait", None, 0.0, State.RECORDING)]
    half = seconds / 2
    if not interrupt:
        return [*start, Step(half, "press", ButtonName.MARK, _TAP_SECONDS),
                Step(seconds, "hold", ButtonName.STOP, stop_hold + 0.5),
                Step(seconds + stop_hold + 1.0, "end", None, 0.0)]
    return [*start, Step(half / 2, "press", ButtonName.MARK, _TAP_SECONDS),
            Step(half, "fault", None, INTERRUPT_DEMO_FAULT_S, device="camera"),
            Step(half, "wait", None, 0.0, State.EXPLAINING),
            Step(0.0, "wait", None, 0.0, State.RECORDING),
            Step(half, "hold", ButtonName.STOP, stop_hold + 0.5),
            Step(half + stop_hold + 1.0, "end", None, 0.0)]


INTERRUPT_DEMO_FAULT_S = 2.0


class ScenarioRunner:
    def __init__(self, steps: list[Step], sim: SimControls, pin_numbers: dict[ButtonName, int],
                 wait_state: Callable[[State, float], bool], stop: threading.Event | None = None,
                 settled: Callable[[], bool] = lambda: True, last_fault: Callable[[], str | None] = lambda: None,
                 ) -> None:
        self._steps = steps
        self._sim = sim
        self._mends: list[threading.Timer] = []
        self._numbers = pin_numbers
        self._wait_state = wait_state
        self._stop = stop or threading.Event()
        self._settled = settled
        self._last_fault = last_fault
        self.failure: str | None = None
        self.finished = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scenario", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            self.failure = self._play()
        finally:
            for timer in self._mends:
                timer.cancel()
            self.finished.set()

    def _play(self) -> str | None:
        t0 = time.monotonic()
        for step in self._steps:
            if self._stop.wait(max(0.0, t0 + step.at - time.monotonic())):
                return "interrupted"
            if step.action == "wait":
                assert step.state is not None
                if not self._wait_state(step.state, WAIT_SECONDS):
                    return f"the device did not reach {step.state.value} within {WAIT_SECONDS:g} s"
                t0 = time.monotonic()
            elif step.action == "end":
                return self._end()
            elif step.action == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            elif step.action in ("enter", "leave"):
                if self._sim.sensor is None:
                    return (f"'{step.action}' at {step.at:g} s needs a room sensor: set room.sensor to door or "
                            "presence")
                self._sim.people(step.action == "enter")
            elif step.action in ("fault", "clear"):
                assert step.device is not None
                self._sim.fault(step.device, step.action == "fault")
                if step.action == "fault" and step.seconds > 0:
                    timer = threading.Timer(step.seconds, self._sim.fault, (step.device, False))
                    timer.daemon = True
                    timer.start()
                    self._mends.append(timer)
            else:
                assert step.button is not None
                pin = self._numbers[step.button]
                self._sim.pins.press(pin)
                self._stop.wait(step.seconds)
                self._sim.pins.release(pin)
        return None

    def _end(self) -> str | None:
        deadline = time.monotonic() + WAIT_SECONDS
        while not (self._wait_state(State.IDLE, 0.05) or (self._wait_state(State.FAULT, 0.05) and self._settled())):
            if time.monotonic() > deadline or self._stop.is_set():
                return f"a session was still open {WAIT_SECONDS:g} s after the scenario's end"
        if self._wait_state(State.FAULT, 0):
            return f"the device ended in fault: {self._last_fault() or 'see the log'}"
        return None
