"""One session's record: the ledger with its "open" entry, and the segmenter and sealer behind it.

The live inputs feed `segmenter.push_video` / `push_audio` once attached. Stopping seals the last
segment and writes the "close" entry with the totals, so a missing tail is provable.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from capture.ledger import Ledger, Signer
from capture.leftovers import seal_leftovers
from capture.sealer import Sealer
from capture.segmenter import ClosedSegment, Segmenter
from evidence.encryption import SCHEME, public_key_b64
from evidence.entry import Entry, Opening, Segment
from evidence.errors import StorageFault
from evidence.supervisor import Spawn
from hal.camera.base import VideoFormat
from hal.clock.base import Clock


@dataclass(frozen=True)
class SessionMeta:
    """What the ledger's "open" entry and the stamp say about a session (RECORD-FIELDS, CLASSIFY)."""

    unit: str
    room: str
    location: str
    device_id: str
    officers: tuple[tuple[str, str], ...]
    case: str
    matter: str
    parties: tuple[str, ...]

    def as_body(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "room": self.room,
            "location": self.location,
            "device_id": self.device_id,
            "officers": [{"name": n, "certificate": c} for n, c in self.officers],
            "case": self.case,
            "matter": self.matter,
            "parties": list(self.parties),
        }


def opening_body(meta: SessionMeta, device_key: str, segment_seconds: float, video: VideoFormat, sample_rate: int,
                 recipient: X25519PublicKey | None, t0_ns: int, extra: dict[str, Any]) -> dict[str, Any]:
    """The `open` entry's body (FORMAT §4.2)."""
    return {
        "media_t0_mono_ns": t0_ns,
        **meta.as_body(),
        "device_key": device_key,
        "segment_seconds": segment_seconds,
        "video": {"width": video.width, "height": video.height, "fps": video.fps, "codec": "h264"},
        "audio": {"sample_rate": sample_rate, "codec": "aac", "channels": 1},
        "encryption": None if recipient is None else {"scheme": SCHEME, "recipient": public_key_b64(recipient)},
        **extra,
    }


@dataclass(frozen=True)
class RecordingParts:
    clock: Clock
    signer: Signer
    video: VideoFormat
    sample_rate: int
    segment_seconds: float
    request_keyframe: Callable[[], None]
    recipient: X25519PublicKey | None
    """Central's encryption key; None records in the clear (the service warns loudly)."""
    spawn: Spawn
    """Starts the recording's own threads (the sealer) under the service's supervisor."""


class Recording:
    def __init__(self, parts: RecordingParts, spool_dir: Path, session_id: str, meta: SessionMeta,
                 open_extra: dict[str, Any], on_fault: Callable[[StorageFault], None],
                 on_entry: Callable[[Entry], None]) -> None:
        self.parts = parts
        self.session_id = session_id
        self.session_dir = spool_dir / session_id
        self.ledger = Ledger(self.session_dir, meta.device_id, session_id, parts.signer, parts.clock)
        self.ledger.subscribe(on_entry)
        t0_ns = parts.clock.monotonic_ns()
        self._wall0 = parts.clock.now()
        self._classify = {"unit": meta.unit, "room": meta.room, "device_id": meta.device_id,
                          "officers": [{"name": n, "certificate": c} for n, c in meta.officers],
                          "case": meta.case, "parties": list(meta.parties)}
        opening = self.ledger.append("open", opening_body(
            meta, parts.signer.public_key_b64, parts.segment_seconds, parts.video, parts.sample_rate, parts.recipient,
            t0_ns, open_extra)).opening
        assert opening is not None
        self._opening: Opening = opening
        self.sealer = Sealer(self.ledger, on_fault, self._segment_extra, parts.spawn)
        self.segmenter = Segmenter(
            self.session_dir, parts.video, parts.sample_rate, parts.segment_seconds,
            t0_ns, parts.request_keyframe, self.sealer.submit, on_fault, parts.recipient,
        )

    def _wall_at(self, media_ns: int) -> str:
        # Added in UTC and shown in the local zone, so a daylight-saving change mid-session shifts the
        # offset, not the instant.
        instant = self._wall0.astimezone(dt.UTC) + dt.timedelta(microseconds=media_ns // 1000)
        return instant.astimezone(self._wall0.tzinfo).isoformat(timespec="milliseconds")

    def _segment_extra(self, closed: ClosedSegment) -> dict[str, Any]:
        # Every segment carries the classification fields itself (CLASSIFY), and its wall-clock span
        # as the session's start time plus the monotonic offset, so a clock step mid-session cannot
        # make segments overlap or run backwards.
        return {
            "clock_synced": self.parts.clock.is_synchronised(),
            "start_wall": self._wall_at(closed.start_ns),
            "end_wall": self._wall_at(closed.end_ns),
            "meta": self._classify,
        }

    def event(self, name: str, **details: Any) -> Entry:
        return self.ledger.append("event", {"name": name, **details})

    def close(self, reason: str) -> Entry:
        """Seal the last segment and write the closing entry; call after the inputs have stopped."""
        self.segmenter.close()
        self.sealer.close()
        segments = [s.segment for s in self.sealer.sealed if s.segment is not None]
        # A segment a storage fault kept from being sealed is sealed now, so the session's record
        # accounts for every file it wrote.
        seal_leftovers(self.session_dir, self.ledger, segments, self._opening, self.parts.clock)
        return close_session(self.ledger, reason, segments)


def close_session(ledger: Ledger, reason: str, segments: list[Segment]) -> Entry:
    """The closing entry: totals over every segment of the session, so a cut tail is provable."""
    return ledger.append("close", {
        "reason": reason,
        "segments": len(segments),
        "entries": ledger.next_seq + 1,
        "media_bytes": sum(s.bytes for s in segments),
        "duration_ns": segments[-1].end - segments[0].start_ns if segments else 0,
        "video_frames": sum(s.video_frames or 0 for s in segments),
        "merkle_root": ledger.tree.root().hex(),
    })
