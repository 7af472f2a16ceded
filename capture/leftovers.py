"""Segment files on disk that no ledger entry seals yet: the open segment cut off by a crash (".part",
MPEG-TS that plays up to its last whole packet), one committed but not yet sealed, or one a storage
fault could not close. They are sealed as segments marked `recovered`; nothing is deleted, and nothing
is ever renamed over an existing file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, BinaryIO

import av

from capture import layout
from capture.durable import commit_rename
from capture.ledger import Ledger, WallClock
from capture.sealer import sha256_file
from capture.segmenter import PTS_OFFSET, TS_HZ

log = logging.getLogger(__name__)


def segment_end(segment: dict[str, Any]) -> int:
    # A sealed segment recovered after a crash has no readable end (the device cannot decrypt it).
    return int(segment["end_ns"] if segment["end_ns"] is not None else segment["start_ns"])


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


def seal_leftovers(session_dir: Path, ledger: Ledger, segments: list[dict[str, Any]], opening: dict[str, Any],
                   clock: WallClock) -> list[str]:
    """Seal every leftover of the session in file order; `segments` (the sealed bodies) is extended."""
    frame_ns = 1_000_000_000 // max(1, int(opening.get("video", {}).get("fps", 15)))
    sample_rate = int(opening.get("audio", {}).get("sample_rate", 16000))
    sealed: list[str] = []
    for path in _leftovers(session_dir, {s["file"] for s in segments}):
        index = len(segments) + 1
        target = layout.media_path(session_dir, layout.media_name(index))
        if target != path and target.exists():
            # Never over another file: this one stays where it is, unsealed, and `recorder verify` names it.
            log.error("leftover %s cannot become segment %d (%s exists); left in place", path.name, index, target.name)
            continue
        if target != path:
            commit_rename(path, target)
        previous_end = segment_end(segments[-1]) if segments else 0
        sha, size = sha256_file(target)
        if opening.get("encryption"):
            # Sealed to central: the device cannot read it back, so what it holds is for central to say.
            content: dict[str, Any] = {"start_ns": previous_end, "end_ns": None, "video_frames": None,
                                       "audio_samples": None, "keyframe_start": None,
                                       "plain_sha256": None, "plain_bytes": None}
        else:
            content = {**probe_media(target, previous_end, frame_ns, sample_rate), "plain_sha256": sha,
                       "plain_bytes": size}
        body = {"index": index, "file": target.name, "sha256": sha, "bytes": size, **content,
                "clock_synced": clock.is_synchronised(), "recovered": True}
        ledger.append("segment", body)
        segments.append(body)
        sealed.append(target.name)
    return sealed
