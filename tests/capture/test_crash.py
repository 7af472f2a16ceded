"""kill -9 of the service at random moments while recording: at most the open segment's unwritten tail
is lost, every session verifies, and the break is recorded as an interruption in its chain."""

from __future__ import annotations

from pathlib import Path

from firmware_py.crash_trials import SEGMENT_SECONDS, run_kill9
from mqtt.broker import LocalBroker

TRIALS = 30


def test_kill9_at_random_points_loses_at_most_the_open_segment__CONTINUOUS(tmp_path: Path,
                                                                          broker: LocalBroker) -> None:
    outcome = run_kill9(tmp_path, broker.port, TRIALS)
    assert outcome.sessions == TRIALS
    assert not outcome.problems, outcome.problems
    assert outcome.worst_lost_s <= SEGMENT_SECONDS, f"lost {outcome.worst_lost_s:.2f} s of recording at a kill"
    # Uploads killed mid-way resumed: central holds exactly what the device holds.
    assert outcome.central_matches_device
