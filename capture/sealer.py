"""Seals closed segments on its own thread: commit the file durably, hash it, append its ledger entry.

Off the capture threads, so an fsync on a slow card never holds up the camera or the microphone.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from capture.durable import commit_rename
from capture.errors import StorageFault
from capture.ledger import Appended, Ledger
from capture.segmenter import ClosedSegment

_CHUNK = 1 << 20


def sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


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
                 extra: Callable[[ClosedSegment], dict[str, Any]]) -> None:
        self._ledger = ledger
        self._on_fault = on_fault
        self._extra = extra
        self._queue: queue.Queue[ClosedSegment | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="sealer", daemon=True)
        self._thread.start()
        self.sealed: list[Appended] = []

    def submit(self, closed: ClosedSegment) -> None:
        self._queue.put(closed)

    def seal(self, closed: ClosedSegment) -> Appended:
        commit_rename(closed.part_path, closed.final_path)
        return self._ledger.append("segment", segment_body(closed, closed.sha256, closed.bytes, self._extra(closed)))

    def _run(self) -> None:
        while (closed := self._queue.get()) is not None:
            try:
                self.sealed.append(self.seal(closed))
            except StorageFault as fault:
                self._on_fault(fault)

    def close(self) -> None:
        """Seal everything submitted so far, then stop."""
        self._queue.put(None)
        self._thread.join()
