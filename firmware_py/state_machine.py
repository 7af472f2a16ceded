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
    INTERRUPTED = "interrupted"
    """Recording broke off (a fault, or a restart of the service); the session stays open and resumes."""
    EXPLAINING = "explaining"
    """Recording again after a break: the device asks for the reason, the officer explains and picks it."""
    CLOSING = "closing"
    FAULT = "fault"
    DECLINING = "declining"
    """MARK held while idle: the officer picks, through the spoken menu, the lawful reason not to record."""


class Event(enum.Enum):
    START = "start"
    PREFLIGHT_OK = "preflight_ok"
    PREFLIGHT_FAILED = "preflight_failed"
    NOTICE_DONE = "notice_done"
    STOP = "stop"
    FAULT = "fault"
    CLOSED = "closed"
    CLEARED = "cleared"
    RESUME = "resume"
    """After a restart: a recent session was left open, and the device takes it up again."""
    RESUMED = "resumed"
    """The first frame after a break was recorded."""
    EXPLAINED = "explained"
    NOTICE_AGAIN = "notice_again"
    CANNOT_CONTINUE = "cannot_continue"
    DECLINE = "decline"
    DECLINED = "declined"
    """The reason was picked and the declined session written (nothing recorded)."""
    CANCELLED = "cancelled"
    """No reason was picked: nothing is written."""


TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.IDLE, Event.START): State.PREFLIGHT,
    (State.PREFLIGHT, Event.PREFLIGHT_OK): State.NOTICE,
    (State.PREFLIGHT, Event.PREFLIGHT_FAILED): State.FAULT,
    (State.PREFLIGHT, Event.FAULT): State.CLOSING,
    (State.NOTICE, Event.NOTICE_DONE): State.RECORDING,
    (State.NOTICE, Event.STOP): State.CLOSING,
    (State.NOTICE, Event.FAULT): State.INTERRUPTED,
    (State.NOTICE, Event.CANNOT_CONTINUE): State.CLOSING,
    (State.RECORDING, Event.STOP): State.CLOSING,
    (State.RECORDING, Event.FAULT): State.INTERRUPTED,
    (State.IDLE, Event.RESUME): State.INTERRUPTED,
    (State.INTERRUPTED, Event.RESUMED): State.EXPLAINING,
    (State.INTERRUPTED, Event.STOP): State.CLOSING,
    (State.INTERRUPTED, Event.CANNOT_CONTINUE): State.CLOSING,
    (State.EXPLAINING, Event.EXPLAINED): State.RECORDING,
    (State.EXPLAINING, Event.NOTICE_AGAIN): State.NOTICE,
    (State.EXPLAINING, Event.STOP): State.CLOSING,
    (State.EXPLAINING, Event.FAULT): State.INTERRUPTED,
    (State.CLOSING, Event.CLOSED): State.IDLE,
    (State.CLOSING, Event.FAULT): State.FAULT,
    (State.FAULT, Event.START): State.PREFLIGHT,
    (State.FAULT, Event.CLEARED): State.IDLE,
    (State.IDLE, Event.DECLINE): State.DECLINING,
    (State.DECLINING, Event.DECLINED): State.IDLE,
    (State.DECLINING, Event.CANCELLED): State.IDLE,
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
