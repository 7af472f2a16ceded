"""The room sensor: whether people are in the room now, and since when (ROOM, NO-RECORD).

A door contact or a presence sensor on a GPIO input. The device uses it only to remind and to alert: nothing
is ever recorded because of it (a session starts with START or a booking's automatic start, and always
with its notice).
"""

from __future__ import annotations

import abc
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from hal.clock.base import Clock

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Occupancy:
    occupied: bool
    since: dt.datetime
    """Wall-clock time of the last change (or of when the sensor was first read)."""
    since_mono: float
    """The same moment on time.monotonic(): spans are measured on it, so a step of the wall clock moves none."""


Listener = Callable[[Occupancy], None]


class RoomSensor(abc.ABC):
    """Holds the last reading; a backend calls `_changed` from whatever thread its hardware reports on."""

    def __init__(self, kind: str, clock: Clock, occupied: bool) -> None:
        self.kind = kind
        """`door` or `presence`: what kind of sensor it is (named in the device's alerts)."""
        self._clock = clock
        self._lock = threading.Lock()
        self._state = Occupancy(occupied, clock.now(), time.monotonic())
        self._listeners: list[Listener] = []

    def reading(self) -> Occupancy:
        with self._lock:
            return self._state

    def on_change(self, listener: Listener) -> None:
        """Call `listener` with the new reading at every change (on the sensor's thread: keep it short)."""
        with self._lock:
            self._listeners.append(listener)

    def _changed(self, occupied: bool) -> None:
        with self._lock:
            if occupied == self._state.occupied:
                return
            self._state = state = Occupancy(occupied, self._clock.now(), time.monotonic())
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(state)
            except Exception:
                # The sensor's thread is gpiozero's (or the scenario's): a listener's bug must not end it.
                log.exception("room sensor listener failed")

    @abc.abstractmethod
    def close(self) -> None: ...
