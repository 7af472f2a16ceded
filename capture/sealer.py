"""Seals closed segments on its own thread: commit the file durably, hash it, append its ledger entry.

Off the capture threads, so an fsync on a slow card never holds up the camera or the microphone.
"""

from __future__ import annotations

import logging
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


log = logging.getLogger(__name__)

ATTEMPTS = 3
"""Times a segment is tried before the sealer gives up on it (an unexpected error may pass; a lasting one not)."""


class Sealer:
    """Seals segments strictly in order: a segment that cannot be sealed is tried again (the supervisor
    restarts the thread) and, if it still cannot, nothing after it is sealed here either. What is left is
    sealed in file order when the session closes (or by crash recovery), so a segment index is never
    skipped and no segment is ever sealed out of its place in the timeline."""

    def __init__(self, ledger: Ledger, on_fault: Callable[[StorageFault], None],
                 extra: Callable[[ClosedSegment], dict[str, Any]], spawn: Spawn, first_index: int = 1) -> None:
        self._ledger = ledger
        self._on_fault = on_fault
        self._extra = extra
        self._queue: queue.Queue[ClosedSegment | None] = queue.Queue()
        self._current: ClosedSegment | None = None
        self._next_index = first_index
        self._attempts = 0
        self._gave_up = False
        self.sealed: list[Entry] = []
        self._thread = spawn("sealer", self._run)

    def submit(self, closed: ClosedSegment) -> None:
        self._queue.put(closed)

    def seal(self, closed: ClosedSegment) -> Entry:
        if closed.part_path.exists() or not closed.final_path.exists():  # a retry after the rename is done
            commit_rename(closed.part_path, closed.final_path)
        return self._ledger.append("segment", segment_body(closed, closed.sha256, closed.bytes, self._extra(closed)))

    def _run(self, beat: Beat) -> None:
        while True:
            beat()
            if self._current is None:
                try:
                    closed = self._queue.get(timeout=1.0)
                except queue.Empty:
                    continue
                if closed is None:
                    return
                if self._gave_up:
                    continue  # left on disk, for the session's close to seal in order
                if closed.index != self._next_index:
                    # The segment before it was never closed (a storage fault in the segmenter, already
                    # reported): sealing this one would skip an index. It and all after it are sealed, in
                    # order and after the unclosed one, when the session closes.
                    log.warning("segment %d was not closed; segments from %d on are sealed when the session closes",
                                self._next_index, closed.index)
                    self._gave_up = True
                    continue
                self._current, self._attempts = closed, 0
            self._attempts += 1
            try:
                self.sealed.append(self.seal(self._current))
            except StorageFault as fault:
                self._give_up(fault)
            except Exception as err:
                if self._attempts < ATTEMPTS:
                    raise  # a fault the supervisor reports; the thread runs again and retries this segment
                self._give_up(StorageFault(f"segment {self._current.index} could not be sealed after "
                                           f"{ATTEMPTS} attempts: {err}"))
            else:
                self._current = None
                self._next_index += 1

    def _give_up(self, fault: StorageFault) -> None:
        self._gave_up, self._current = True, None
        self._on_fault(fault)

    def close(self) -> None:
        """Seal everything submitted so far, then stop."""
        self._queue.put(None)
        self._thread.join()
