"""Real-time pacing for the simulated devices: ticks on the monotonic clock, never skipped.

A late tick is still produced (and the next ones catch up), because a simulated device that dropped
frames or samples under load would hide exactly the losses the recorder must never have.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator


def ticks(interval_ns: int, stop: threading.Event) -> Iterator[int]:
    """Yield the scheduled monotonic time (ns) of each tick until `stop` is set."""
    next_ns = time.monotonic_ns()
    while not stop.is_set():
        now = time.monotonic_ns()
        if now < next_ns:
            time.sleep((next_ns - now) / 1e9)
            continue
        yield next_ns
        next_ns += interval_ns
