"""The upload deadline (UPLOAD-24H): each finished recording must be wholly receipted by central within
`upload.deadline_hours` (24 h by the rules; a unit may set the end of its working day). Warnings at
`upload.warn_hours` (12 h and 20 h by default) light the tally's alert pattern when the room is idle,
go to the log and into the status that central receives, and `recorder status` lists them."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from capture.spool import Deadline
from firmware_py.config import UploadConfig


class Level(enum.Enum):
    OK = "ok"
    WARN = "warn"
    LATE = "late"


@dataclass(frozen=True)
class Assessment:
    deadline: Deadline
    level: Level
    hours_since_finished: float
    hours_left: float | None
    """None while the session is still being recorded (its clock starts when it closes)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "session": self.deadline.session,
            "level": self.level.value,
            "hours_since_finished": round(self.hours_since_finished, 2),
            "hours_left": None if self.hours_left is None else round(self.hours_left, 2),
            "pending_entries": self.deadline.pending_entries,
            "pending_bytes": self.deadline.pending_bytes,
        }


def assess(deadlines: list[Deadline], now: float, policy: UploadConfig) -> list[Assessment]:
    out = []
    for d in deadlines:
        age = d.hours_since_finished(now)
        if d.finished_at is None:
            out.append(Assessment(d, Level.OK, 0.0, None))
            continue
        level = Level.LATE if age >= policy.deadline_hours else (
            Level.WARN if any(age >= w for w in policy.warn_hours) else Level.OK)
        out.append(Assessment(d, level, age, policy.deadline_hours - age))
    return out


def worst_warning(assessments: list[Assessment], policy: UploadConfig) -> float | None:
    """The highest warning threshold (hours) any recording has passed; None if none has."""
    passed = [w for a in assessments if a.deadline.finished_at is not None
              for w in policy.warn_hours if a.hours_since_finished >= w]
    late = [policy.deadline_hours for a in assessments if a.level is Level.LATE]
    return max(passed + late, default=None)
