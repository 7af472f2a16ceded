"""After an abrupt stop (power cut, kill -9, crash): close every session that was left open.

A session is open when its last ledger entry is not "close". Recovery seals whatever media the dead
process left behind — a segment file cut off mid-write (".part": MPEG-TS plays up to its last whole
packet) or one committed but not yet sealed — as segments marked `recovered`, then records the break
as an "interruption" entry and closes the session with its totals. Nothing is deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import av

from capture import layout
from capture.durable import commit_rename
from capture.errors import CaptureError
from capture.ledger import Appended, Ledger, Signer, WallClock, parse_entry
from capture.recording import close_session, segment_end
from capture.sealer import sha256_file
from capture.segmenter import PTS_OFFSET, TS_HZ

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recovered:
    session: str
    segments: list[str]
    last_entry_time: str


def _media_ns(pts: int) -> int:
    return (pts - PTS_OFFSET) * 1_000_000_000 // TS_HZ


def probe_media(source: Path | BinaryIO, previous_end_ns: int, frame_ns: int, sample_rate: int) -> dict[str, Any]:
    """What a cut-off MPEG-TS segment holds, read back with PyAV as far as it decodes."""
    video_pts: list[int] = []
    keyframe_start = False
    audio_samples = 0
    try:
        with av.open(source if not isinstance(source, Path) else str(source), "r") as container:
            for packet in container.demux():
                if packet.pts is None or packet.stream.type not in ("video", "audio"):
                    continue
                if packet.stream.type == "video":
                    if not video_pts:
                        keyframe_start = bool(packet.is_keyframe)
                    video_pts.append(int(packet.pts))
                elif packet.duration and packet.time_base:
                    audio_samples += int(packet.duration * packet.time_base * sample_rate)
    except (av.FFmpegError, OSError) as err:
        log.warning("recovery: a cut-off segment is readable only up to a point: %s", err)
    if not video_pts:
        return {"start_ns": previous_end_ns, "end_ns": previous_end_ns, "video_frames": 0,
                "audio_samples": audio_samples, "keyframe_start": False}
    return {"start_ns": _media_ns(video_pts[0]), "end_ns": _media_ns(video_pts[-1]) + frame_ns,
            "video_frames": len(video_pts), "audio_samples": audio_samples, "keyframe_start": keyframe_start}


def _leftovers(session_dir: Path, referenced: set[str]) -> list[Path]:
    media = session_dir / layout.MEDIA
    if not media.is_dir():
        return []
    candidates = [p for p in media.iterdir()
                  if (p.suffix == ".ts" and p.name not in referenced) or p.name.endswith(".ts.part")]
    return sorted(candidates, key=lambda p: p.name.removesuffix(".part"))


def recover_session(session_dir: Path, signer: Signer, clock: WallClock,
                    on_entry: Callable[[Appended], None]) -> Recovered | None:
    seqs = layout.entry_seqs(session_dir)
    if not seqs:
        return None
    try:
        entries = [parse_entry(layout.entry_path(session_dir, s).read_bytes()) for s in seqs]
    except (CaptureError, OSError) as err:
        # Leave it exactly as it is for `recorder verify` to name; one bad file must not stop the device.
        log.error("recovery: session %s has an unreadable entry, left untouched: %s", session_dir.name, err)
        return None
    if entries[-1]["kind"] == "close":
        return None
    ledger = Ledger.resume(session_dir, signer, clock)
    ledger.subscribe(on_entry)
    segments = [e["body"] for e in entries if e["kind"] == "segment"]
    opening = entries[0]["body"] if entries[0]["kind"] == "open" else {}
    frame_ns = 1_000_000_000 // max(1, int(opening.get("video", {}).get("fps", 15)))
    sample_rate = int(opening.get("audio", {}).get("sample_rate", 16000))
    recovered: list[str] = []
    for path in _leftovers(session_dir, {s["file"] for s in segments}):
        final = path.with_name(path.name.removesuffix(".part"))
        if final != path:
            commit_rename(path, final)
        previous_end = segment_end(segments[-1]) if segments else 0
        sha, size = sha256_file(final)
        if opening.get("encryption"):
            # Sealed to central: the device cannot read it back, so what it holds is for central to say.
            content: dict[str, Any] = {"start_ns": previous_end, "end_ns": None, "video_frames": None,
                                       "audio_samples": None, "keyframe_start": None,
                                       "plain_sha256": None, "plain_bytes": None}
        else:
            content = {**probe_media(final, previous_end, frame_ns, sample_rate), "plain_sha256": sha,
                       "plain_bytes": size}
        body = {"index": len(segments) + 1, "file": final.name, "sha256": sha, "bytes": size, **content,
                "clock_synced": clock.is_synchronised(), "recovered": True}
        if final.name != layout.media_name(body["index"]):
            # Keep the ledger's index and the file name in step, as every other segment has them.
            renamed = final.with_name(layout.media_name(body["index"]))
            commit_rename(final, renamed)
            body["file"] = renamed.name
        ledger.append("segment", body)
        segments.append(body)
        recovered.append(body["file"])
    ledger.append("interruption", {
        "reason": "abrupt stop: the service was not running when this session should have been closed",
        "last_entry_time": entries[-1]["time"],
        "recovered_segments": recovered,
    })
    close_session(ledger, "interrupted (recovered after restart)", segments)
    return Recovered(session_dir.name, recovered, entries[-1]["time"])


def recover_spool(spool_root: Path, signer: Signer, clock: WallClock,
                  on_entry: Callable[[Appended], None]) -> list[Recovered]:
    done = []
    for session_dir in sorted(p for p in spool_root.iterdir() if p.is_dir() and layout.SESSION_ID.match(p.name)):
        result = recover_session(session_dir, signer, clock, on_entry)
        if result is not None:
            log.warning("session %s was interrupted (last entry %s); sealed %d leftover segment(s) and closed it",
                        result.session, result.last_entry_time, len(result.segments))
            done.append(result)
    return done
