"""The upload deadline (UPLOAD-24H), in one place for the device, central's index and the late report.

A finished recording must be wholly at central within `deadline_hours` of its end (24 h by the rules; a unit
may set the end of its working day); past each of `warn_hours` (12 h and 20 h by default) a warning is due.
The device judges its own unreceipted recordings by it and warns on its tally and in its status; central
judges what it has received by the same numbers (`recorder central late`).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Annotated

from evidence.errors import ConfigError
from evidence.settings import Positive, Section

HOUR = 3600.0


class Level(enum.Enum):
    OK = "ok"
    WARN = "warn"
    LATE = "late"


@dataclass(frozen=True)
class Judgement:
    level: Level
    hours: float
    """How long since the recording ended (or since the latest moment it is known to have run)."""
    threshold_hours: float | None
    """The deadline or the highest warning threshold passed; None while nothing is due."""
    hours_left: float


@dataclass(frozen=True)
class UploadPolicy(Section):
    """The `[upload]` section, shared by the device's and central's configuration."""

    deadline_hours: Annotated[float, Positive] = 24.0
    warn_hours: tuple[Annotated[float, Positive], ...] = (12.0, 20.0)

    def validate(self) -> None:
        for i, hours in enumerate(self.warn_hours):
            if hours >= self.deadline_hours:
                raise ConfigError(f"warn_hours[{i}]: {hours:g} must be below deadline_hours ({self.deadline_hours:g})")

    def judge(self, ended_at: float, now: float) -> Judgement:
        """Where a recording that ended at `ended_at` (POSIX seconds) stands at `now` while it is not yet
        wholly at central; or, with `now` the moment it was complete there, whether it arrived in time."""
        hours = (now - ended_at) / HOUR
        if not math.isfinite(hours):
            hours = 0.0
        left = self.deadline_hours - hours
        if hours >= self.deadline_hours:
            return Judgement(Level.LATE, hours, self.deadline_hours, left)
        passed = [w for w in self.warn_hours if hours >= w]
        if passed:
            return Judgement(Level.WARN, hours, max(passed), left)
        return Judgement(Level.OK, hours, None, left)
