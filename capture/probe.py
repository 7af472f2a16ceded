"""Reading back what the device recorded, with PyAV: what a cut-off segment holds (crash recovery), and
whether a segment decodes (`recorder verify --decode`)."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any, BinaryIO

import av

from capture.segmenter import PTS_OFFSET, TS_HZ

log = logging.getLogger(__name__)


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



def decodes(media: bytes) -> str | None:
    """None if the MPEG-TS `media` holds at least one video frame that decodes; else why not."""
    try:
        with av.open(io.BytesIO(media), "r") as container:
            frames = sum(1 for _ in container.decode(video=0))
    except (av.FFmpegError, OSError, IndexError) as err:  # IndexError: the file has no video stream
        return str(err) or "no video stream"
    return None if frames else "no video frame decodes"
