from __future__ import annotations

import re
from pathlib import Path

from firmware_py.state_machine import TRANSITIONS, Event, State, StateMachine

DOC = Path(__file__).resolve().parents[2] / "docs" / "ARCHITECTURE.md"


def drawn_transitions() -> set[tuple[str, str, str]]:
    text = DOC.read_text(encoding="utf-8")
    block = re.search(r"```mermaid\n(stateDiagram-v2.*?)```", text, re.S)
    assert block, "docs/ARCHITECTURE.md has no mermaid state diagram"
    edges = set()
    for line in block.group(1).splitlines():
        m = re.match(r"\s*(\w+)\s*-->\s*(\w+):\s*(\w+)\s*$", line)
        if m:
            edges.add((m.group(1), m.group(3), m.group(2)))
    return edges


def test_diagram_matches_the_transition_table() -> None:
    table = {(s.value, e.value, t.value) for (s, e), t in TRANSITIONS.items()}
    assert drawn_transitions() == table


def test_every_state_is_reachable_and_can_get_back_to_idle() -> None:
    reachable = {State.IDLE}
    frontier = [State.IDLE]
    while frontier:
        state = frontier.pop()
        for (source, _), target in TRANSITIONS.items():
            if source is state and target not in reachable:
                reachable.add(target)
                frontier.append(target)
    assert reachable == set(State)


def test_events_that_do_not_apply_leave_the_state_alone() -> None:
    changes: list[tuple[State, Event, State]] = []
    machine = StateMachine(lambda s, e, t: changes.append((s, e, t)))
    assert not machine.fire(Event.STOP)
    assert machine.state is State.IDLE
    assert machine.fire(Event.START)
    assert not machine.fire(Event.NOTICE_DONE)
    assert changes == [(State.IDLE, Event.START, State.PREFLIGHT)]
