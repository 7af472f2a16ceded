"""Wall clock, monotonic clock and whether the wall clock can be trusted."""

from __future__ import annotations

import abc
import datetime as dt
import time
import zoneinfo


class Clock(abc.ABC):
    def __init__(self, timezone: str) -> None:
        self.tz = zoneinfo.ZoneInfo(timezone)

    def now(self) -> dt.datetime:
        return dt.datetime.now(self.tz)

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()

    @abc.abstractmethod
    def is_synchronised(self) -> bool:
        """True when the wall clock is disciplined by NTP/PTP (a Pi without an RTC boots with a stale clock)."""
