"""Reading back what the recorder wrote, with PyAV and ffprobe, for assertions."""

from __future__ import annotations

import base64
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from evidence import layout
from evidence.canonical import canonical
from evidence.encryption import open_sealed
from provisioning.central_key import load_central_key


def entries(session_dir: Path) -> list[dict[str, Any]]:
    """The session's entries as plain JSON values (tests edit them to forge and tamper)."""
    return [json.loads(layout.entry_path(session_dir, s).read_bytes()) for s in layout.entry_seqs(session_dir)]


def personal(body: dict[str, Any], key_file: str | Path) -> dict[str, Any]:
    """An `open` body (or a segment's `meta`) with its personal fields, opened with central's key where the
    device sealed them (FORMAT §4.2.1)."""
    if "sealed" not in body:
        return body
    opened = open_sealed(base64.b64decode(body["sealed"]), load_central_key(Path(key_file)))
    return {**body, **json.loads(opened.plaintext)}


def edit_opening_metadata(session: Path) -> None:
    """Change the `open` entry's officers (or, sealed, one character of them) and leave its signature as it was."""
    path = layout.entry_path(session, 0)
    opening = json.loads(path.read_bytes())
    body = opening["body"]
    if "sealed" in body:  # sealed to central's key (FORMAT §4.2.1): one character of it changed
        middle = len(body["sealed"]) // 2
        body["sealed"] = body["sealed"][:middle] + ("B" if body["sealed"][middle] == "A" else "A") + \
            body["sealed"][middle + 1 :]
    else:
        body["officers"][0]["name"] = "无名氏"
    path.write_bytes(canonical(opening))


def events(session_dir: Path, name: str) -> list[dict[str, Any]]:
    return [e for e in entries(session_dir) if e["kind"] == "event" and e["body"]["name"] == name]


def segment_files(session_dir: Path) -> list[Path]:
    """The segments as MPEG-TS: central's decrypted working copies where the originals are sealed."""
    plain = session_dir / "plain"
    folder = plain if plain.is_dir() else session_dir / layout.MEDIA
    return [folder / e["body"]["file"] for e in entries(session_dir) if e["kind"] == "segment"]


@dataclass
class Probe:
    video_codec: str
    audio_codec: str
    width: int
    height: int


def ffprobe(path: Path) -> Probe:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,codec_type,width,height", "-of", "json",
         str(path)], capture_output=True, check=True, text=True,
    ).stdout
    streams = json.loads(out)["streams"]
    video = next(s for s in streams if s["codec_type"] == "video")
    audio = next(s for s in streams if s["codec_type"] == "audio")
    return Probe(video["codec_name"], audio["codec_name"], video["width"], video["height"])


def video_packets(path: Path) -> list[tuple[int, bool]]:
    """(pts in 90 kHz, keyframe) of every video packet."""
    with av.open(str(path)) as container:
        return [(int(p.pts), bool(p.is_keyframe)) for p in container.demux(video=0) if p.pts is not None]


def first_frame(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            return frame.to_ndarray(format="rgb24")
    raise AssertionError(f"{path} has no decodable video frame")


def audio_pcm(paths: list[Path], rate: int) -> np.ndarray:
    """The audio of consecutive segments, decoded and resampled to mono float at `rate`."""
    chunks = []
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    for path in paths:
        with av.open(str(path)) as container:
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)


def loud_fraction(session: Path, log: list[dict[str, Any]], start_ns: int, seconds: float, rate: int) -> float:
    """The share of 0.1 s windows of the recording between `start_ns` and `seconds` later that are louder than
    the quiet room: how much of what the device said there is in the recording itself."""
    run = [e["body"] for e in log if e["kind"] == "segment" and (e["body"]["end_ns"] or 0) > start_ns]
    first = run[0]
    pcm = audio_pcm([session / "plain" / b["file"] for b in run], rate)
    offset = (start_ns - first["start_ns"]) * rate // 1_000_000_000
    window = rate // 10
    span = pcm[offset : offset + int(seconds * rate)]
    levels = [float(np.sqrt(np.mean(span[i : i + window] ** 2))) for i in range(0, len(span) - window, window)]
    return sum(1 for level in levels if level > 0.01) / max(1, len(levels))
