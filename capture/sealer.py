"""Seals closed segments on its own thread: commit the file durably, hash it, append its ledger entry.

Off the capture threads, so an fsync on a slow card never holds up the camera or the microphone.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import Any

from capture.ledger import Ledger
from capture.segmenter import ClosedSegment
from evidence.durable import commit_rename
from evidence.entry import Entry
from evidence.errors import StorageFault
from evidence.supervisor import Beat, Spawn


def segment_body(closed: ClosedSegment, sha256: str, size: int, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "index": closed.index,
        "file": closed.final_path.name,
        "sha256": sha256,
        "bytes": size,
        "start_ns": closed.start_ns,
        "end_ns": closed.end_ns,
        "video_frames": closed.video_frames,
        "audio_samples": closed.audio_samples,
        "keyframe_start": closed.keyframe_start,
        "plain_sha256": closed.plain_sha256,
        "plain_bytes": closed.plain_bytes,
        **extra,
    }


class Sealer:
    def __init__(self, ledger: Ledger, on_fault: Callable[[StorageFault], None],
                 extra: Callable[[ClosedSegment], dict[str, Any]], spawn: Spawn) -> None:
        self._ledger = ledger
        self._on_fault = on_fault
        self._extra = extra
        self._queue: queue.Queue[ClosedSegment | None] = queue.Queue()
        self.sealed: list[Entry] = []
        self._thread = spawn("sealer", self._run)

    def submit(self, closed: ClosedSegment) -> None:
        self._queue.put(closed)

    def seal(self, closed: ClosedSegment) -> Entry:
        commit_rename(closed.part_path, closed.final_path)
        return self._ledger.append("segment", segment_body(closed, closed.sha256, closed.bytes, self._extra(closed)))

    def _run(self, beat: Beat) -> None:
        # A segment whose sealing failed unexpectedly (the thread is then restarted) stays on disk unsealed
        # and is sealed with the session's leftovers when it closes.
        while True:
            beat()
            try:
                closed = self._queue.get(timeout=1.0)
            except queue.Empty:
                continue
            if closed is None:
                return
            try:
                self.sealed.append(self.seal(closed))
            except StorageFault as fault:
                self._on_fault(fault)

    def close(self) -> None:
        """Seal everything submitted so far, then stop."""
        self._queue.put(None)
        self._thread.join()
