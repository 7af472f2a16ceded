"""Segment files on disk that no ledger entry seals yet: the open segment cut off by a crash (".part",
MPEG-TS that plays up to its last whole packet), one committed but not yet sealed, or one a storage
fault could not close. They are sealed as segments marked `recovered`; nothing is deleted, and nothing
is ever renamed over an existing file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from capture.ledger import Ledger, WallClock
from capture.probe import probe_media
from evidence import layout
from evidence.durable import commit_rename
from evidence.entry import Opening, Segment
from evidence.hashing import sha256_file

log = logging.getLogger(__name__)


def _leftovers(session_dir: Path, referenced: set[str]) -> list[Path]:
    media = session_dir / layout.MEDIA
    if not media.is_dir():
        return []
    # Regular files only: a folder named like a segment is not one (and the verifier names it).
    candidates = [p for p in media.iterdir() if p.is_file() and not p.is_symlink()
                  and ((p.suffix == ".ts" and p.name not in referenced) or p.name.endswith(".ts.part"))]
    return sorted(candidates, key=lambda p: p.name.removesuffix(".part"))


def seal_leftovers(session_dir: Path, ledger: Ledger, segments: list[Segment], opening: Opening,
                   clock: WallClock, covered_to: int) -> list[str]:
    """Seal every leftover of the session in file order; `segments` (those sealed so far) is extended.
    `covered_to`: where the session's timeline stands (FORMAT §4.5), where a leftover the device cannot
    read starts."""
    sealed: list[str] = []
    previous_end = covered_to
    for path in _leftovers(session_dir, {s.file for s in segments}):
        index = len(segments) + 1
        target = layout.media_path(session_dir, layout.media_name(index))
        if target != path and target.exists():
            # Never over another file: this one stays where it is, unsealed, and `recorder verify` names it.
            log.error("leftover %s cannot become segment %d (%s exists); left in place", path.name, index, target.name)
            continue
        if target != path:
            commit_rename(path, target)
        sha, size = sha256_file(target)
        if opening.encrypted:
            # Sealed to central: the device cannot read it back, so what it holds is for central to say.
            content: dict[str, Any] = {"start_ns": previous_end, "end_ns": None, "video_frames": None,
                                       "audio_samples": None, "keyframe_start": None,
                                       "plain_sha256": None, "plain_bytes": None}
        else:
            content = {**probe_media(target, previous_end, opening.frame_ns, opening.sample_rate),
                       "plain_sha256": sha, "plain_bytes": size}
        body = {"index": index, "file": target.name, "sha256": sha, "bytes": size, **content,
                "clock_synced": clock.is_synchronised(), "recovered": True}
        segment = ledger.append("segment", body).segment
        assert segment is not None
        segments.append(segment)
        sealed.append(target.name)
        previous_end = segment.end
    return sealed
