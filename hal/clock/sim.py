"""The simulator's clock: the host's clock, with a synchronisation state and steps the scenario can set."""

from __future__ import annotations

import datetime as dt

from hal.clock.base import Clock


class SimClock(Clock):
    def __init__(self, timezone: str, synchronised: bool = True) -> None:
        super().__init__(timezone)
        self.synchronised = synchronised
        self.offset = dt.timedelta()
        """How far the wall clock has been stepped from the host's (an NTP correction, a wrong RTC)."""

    def now(self) -> dt.datetime:
        return super().now() + self.offset

    def step(self, seconds: float) -> None:
        """Step the wall clock, as NTP or an operator would; the monotonic clock goes on unaffected."""
        self.offset += dt.timedelta(seconds=seconds)

    def is_synchronised(self) -> bool:
        return self.synchronised
