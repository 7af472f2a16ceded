"""The simulator's clock: the host's clock, with a synchronisation state the scenario can set."""

from __future__ import annotations

from hal.clock.base import Clock


class SimClock(Clock):
    def __init__(self, timezone: str, synchronised: bool = True) -> None:
        super().__init__(timezone)
        self.synchronised = synchronised

    def is_synchronised(self) -> bool:
        return self.synchronised
