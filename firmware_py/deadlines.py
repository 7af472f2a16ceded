"""The device's view of the upload deadline (UPLOAD-24H; the rule itself is evidence/deadline.py): each of
its finished recordings not yet wholly receipted by central, judged against `[upload]`. Warnings light the
tally's alert pattern when the room is idle, go to the log and into the status that central receives, and
`recorder status` lists them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from capture.spool import PendingRecording
from evidence.deadline import Level, UploadPolicy


@dataclass(frozen=True)
class Assessment:
    recording: PendingRecording
    level: Level
    hours_since_finished: float
    hours_left: float | None
    """None while the session is still being recorded (its clock starts when it closes)."""
    threshold_hours: float | None
    """The deadline or the highest warning threshold passed."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "session": self.recording.session,
            "level": self.level.value,
            "hours_since_finished": round(self.hours_since_finished, 2),
            "hours_left": None if self.hours_left is None else round(self.hours_left, 2),
            "pending_entries": self.recording.pending_entries,
            "pending_bytes": self.recording.pending_bytes,
        }


def assess(recordings: list[PendingRecording], now: float, policy: UploadPolicy) -> list[Assessment]:
    out = []
    for r in recordings:
        if r.finished_at is None:
            out.append(Assessment(r, Level.OK, 0.0, None, None))
            continue
        judged = policy.judge(r.finished_at, now)
        out.append(Assessment(r, judged.level, judged.hours, judged.hours_left, judged.threshold_hours))
    return out


def worst_warning(assessments: list[Assessment]) -> float | None:
    """The highest threshold (hours) any recording has passed: a warning's, or the deadline; None if none."""
    return max((a.threshold_hours for a in assessments if a.threshold_hours is not None), default=None)
