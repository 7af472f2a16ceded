"""Soak: kill -9 of the service at many random moments while recording and uploading.

- kill9_trials: how many kills.
- kill9_max_seconds_lost: the longest stretch between the end of what was recovered and the kill;
  target <= one segment length (2 s).
Set BENCH_KILL9_TRIALS to run more (the test suite runs 30).
"""

from __future__ import annotations

import os
from pathlib import Path

from firmware_py.crash_trials import SEGMENT_SECONDS, run_kill9
from mqtt.broker import LocalBroker


def run(workdir: Path) -> dict[str, object]:
    trials = int(os.environ.get("BENCH_KILL9_TRIALS", "100"))
    with LocalBroker(workdir / "broker") as broker:
        outcome = run_kill9(workdir, broker.port, trials, seed=4242)
    return {
        "kill9_trials": outcome.sessions,
        "kill9_max_seconds_lost": round(outcome.worst_lost_s, 3),
        "kill9_segment_seconds": SEGMENT_SECONDS,
        "kill9_problems": outcome.problems,
        "kill9_central_matches_device": outcome.central_matches_device,
    }
