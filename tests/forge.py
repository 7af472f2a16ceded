"""Sessions made without a camera: really signed by a device key, with made-up media and times, for the
tests of what central does with what it receives."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

from capture.ledger import Ledger, Signer, WallClock
from capture.recording import SessionMeta, close_session, opening_body
from evidence import layout
from hal.camera.base import VideoFormat

FORMAT = VideoFormat(320, 240, 10, 300_000)
SEGMENT_NS = 2_000_000_000


class StepClock:
    """The device's clock for a forged session: it starts at `start` and moves `step` per entry."""

    def __init__(self, start: dt.datetime, step: dt.timedelta = dt.timedelta(seconds=2)) -> None:
        self._step = step
        self._now = start - step
        self._mono = 0

    def monotonic_ns(self) -> int:
        self._mono += int(self._step.total_seconds() * 1e9)
        return self._mono

    def is_synchronised(self) -> bool:
        return True

    def now(self) -> dt.datetime:
        self._now += self._step
        return self._now


def meta(device: str, metadata: dict[str, Any]) -> SessionMeta:
    officers = tuple((o["name"], o["certificate"]) for o in metadata.get("officers", []))
    text = {key: str(metadata.get(key, default)) for key, default in
            (("unit", ""), ("room", "询问室二"), ("location", "城关路1号"), ("case", ""), ("matter", ""))}
    return SessionMeta(text["unit"], text["room"], text["location"], device, officers, text["case"], text["matter"],
                       tuple(metadata.get("parties", [])))


def open_session(session_dir: Path, device: str, signer: Signer, clock: WallClock,
                 metadata: dict[str, Any] | None = None) -> Ledger:
    """A session's ledger with its `open` entry written."""
    ledger = Ledger(session_dir, device, session_dir.name, signer, clock)
    ledger.append("open", opening_body(meta(device, metadata or {}), signer.public_key_b64, 2.0, FORMAT, 16000, None,
                                       0, {"preflight_warnings": [], "clock_synced": True}))
    return ledger


def segment_body(index: int, media: bytes, start_ns: int, end_ns: int) -> dict[str, Any]:
    """A segment record for `media` stored in the clear (so its plaintext is the file)."""
    digest = hashlib.sha256(media).hexdigest()
    return {"index": index, "file": layout.media_name(index), "sha256": digest, "bytes": len(media),
            "start_ns": start_ns, "end_ns": end_ns, "video_frames": 20, "audio_samples": 32000,
            "keyframe_start": True, "plain_sha256": digest, "plain_bytes": len(media)}


def forge(session_dir: Path, device: str, signer: Signer, clock: WallClock, metadata: dict[str, Any], segments: int,
          interrupted: bool = False, closed: bool = True, write_media: bool = True) -> Ledger:
    """A session as the device's ledger writes it: `open`, `segments` segments (their files in `media/` if
    `write_media`), an `interruption` if asked, and the `close` unless `closed` is False."""
    ledger = open_session(session_dir, device, signer, clock, metadata)
    sealed = []
    for index in range(1, segments + 1):
        media = f"segment {index} of {session_dir.name} ".encode() * 200
        if write_media:
            layout.media_path(session_dir, layout.media_name(index)).write_bytes(media)
        entry = ledger.append("segment", segment_body(index, media, (index - 1) * SEGMENT_NS, index * SEGMENT_NS))
        assert entry.segment is not None
        sealed.append(entry.segment)
    if interrupted:
        ledger.append("interruption", {"cause": "abrupt_stop", "began_ns": segments * SEGMENT_NS,
                                       "began_wall": "2026-01-01T00:00:00.000+08:00", "resumed_ns": None,
                                       "recovered_segments": []})
    if closed:
        close_session(ledger, "stop button held", "not_resumed" if interrupted else "stop_button", sealed)
    return ledger
