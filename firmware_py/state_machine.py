"""The session state machine: states, the events that move between them, and nothing else.

The table below is the single source of truth; docs/ARCHITECTURE.md draws it, and a test keeps the
drawing and this table in step. What happens on entering a state is the session controller's job.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable


class State(enum.Enum):
    IDLE = "idle"
    PREFLIGHT = "preflight"
    NOTICE = "notice"
    RECORDING = "recording"
    CLOSING = "closing"
    FAULT = "fault"


class Event(enum.Enum):
    START = "start"
    PREFLIGHT_OK = "preflight_ok"
    PREFLIGHT_FAILED = "preflight_failed"
    NOTICE_DONE = "notice_done"
    STOP = "stop"
    FAULT = "fault"
    CLOSED = "closed"
    CLEARED = "cleared"


TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.IDLE, Event.START): State.PREFLIGHT,
    (State.PREFLIGHT, Event.PREFLIGHT_OK): State.NOTICE,
    (State.PREFLIGHT, Event.PREFLIGHT_FAILED): State.FAULT,
    (State.PREFLIGHT, Event.FAULT): State.CLOSING,
    (State.NOTICE, Event.NOTICE_DONE): State.RECORDING,
    (State.NOTICE, Event.STOP): State.CLOSING,
    (State.NOTICE, Event.FAULT): State.CLOSING,
    (State.RECORDING, Event.STOP): State.CLOSING,
    (State.RECORDING, Event.FAULT): State.CLOSING,
    (State.CLOSING, Event.CLOSED): State.IDLE,
    (State.CLOSING, Event.FAULT): State.FAULT,
    (State.FAULT, Event.START): State.PREFLIGHT,
    (State.FAULT, Event.CLEARED): State.IDLE,
}


class StateMachine:
    """Holds the current state; `fire` moves it along the table or reports that the event does not apply."""

    def __init__(self, on_change: Callable[[State, Event, State], None]) -> None:
        self._state = State.IDLE
        self._on_change = on_change
        self._lock = threading.Lock()

    @property
    def state(self) -> State:
        return self._state

    def fire(self, event: Event) -> bool:
        with self._lock:
            target = TRANSITIONS.get((self._state, event))
            if target is None:
                return False
            source, self._state = self._state, target
        self._on_change(source, event, target)
        return True
