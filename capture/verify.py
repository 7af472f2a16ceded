"""Offline verification of one stored session (device spool, central's copy or an exported folder).

Checks, in order, and reports the first problem by entry and kind: every ledger entry present and
well-formed, the hash chain unbroken, every signature valid under the device key, every segment file
present with its recorded size and SHA-256, no unreferenced segment file, segment indices contiguous,
no timeline gap larger than one frame, and a closing entry whose totals match (so a cut tail shows).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av

from capture import layout
from capture.errors import CaptureError
from capture.ledger import GENESIS, entry_hash, parse_entry, signed_message
from capture.sealer import sha256_file
from provisioning.errors import ProvisioningError
from provisioning.identity import load_public_key_b64, verify_signature


class Problem(enum.Enum):
    MISSING_ENTRY = "missing entry"
    MALFORMED_ENTRY = "malformed entry"
    BROKEN_CHAIN = "broken chain (entry inserted, removed, reordered or edited)"
    BAD_SIGNATURE = "bad signature"
    UNKNOWN_KEY = "unknown signing key"
    MISSING_SEGMENT = "missing segment"
    CHANGED_SEGMENT = "changed bytes"
    INSERTED_SEGMENT = "inserted segment"
    REORDERED = "segments out of order"
    TIMESTAMP_GAP = "timestamp gap"
    TRUNCATED = "truncated session (no closing entry or totals do not match)"
    UNDECODABLE = "undecodable segment"


@dataclass
class Finding:
    problem: Problem
    where: str
    detail: str

    def __str__(self) -> str:
        return f"{self.where}: {self.problem.value}: {self.detail}"


@dataclass
class Report:
    session_dir: Path
    entries: int = 0
    segments: int = 0
    media_bytes: int = 0
    duration_ns: int = 0
    findings: list[Finding] = field(default_factory=list)
    anchored: bool = False
    """True when the device key was checked against a key the verifier was given."""

    @property
    def ok(self) -> bool:
        return not self.findings

    def as_json(self) -> dict[str, Any]:
        return {
            "session_dir": str(self.session_dir),
            "ok": self.ok,
            "entries": self.entries,
            "segments": self.segments,
            "media_bytes": self.media_bytes,
            "duration_s": self.duration_ns / 1e9,
            "key_anchored": self.anchored,
            "problems": [
                {"kind": f.problem.name.lower(), "where": f.where, "detail": f.detail} for f in self.findings
            ],
        }


def _load_entries(session_dir: Path) -> Iterator[tuple[int, dict[str, Any] | Finding]]:
    for seq in layout.entry_seqs(session_dir):
        try:
            yield seq, parse_entry(layout.entry_path(session_dir, seq).read_bytes())
        except CaptureError as err:
            yield seq, Finding(Problem.MALFORMED_ENTRY, f"entry {seq}", str(err))


def _decodes(path: Path) -> str | None:
    try:
        with av.open(str(path)) as container:
            frames = sum(1 for _ in container.decode(video=0))
    except (av.FFmpegError, OSError) as err:
        return str(err)
    return None if frames else "no video frame decodes"


def verify_session(session_dir: Path, trusted_key_b64: str | None = None, decode: bool = False) -> Report:
    report = Report(session_dir)
    found = report.findings
    if not (session_dir / layout.ENTRIES).is_dir():
        found.append(Finding(Problem.MISSING_ENTRY, str(session_dir), "no entries/ folder: not a session"))
        return report

    prev = GENESIS
    key = None
    frame_ns: int | None = None
    last_end: int | None = None
    next_index = 1
    referenced: set[str] = set()
    close: dict[str, Any] | None = None
    expected_seq = 0
    sealed_bytes = 0
    sealed_segments = 0
    for seq, item in _load_entries(session_dir):
        where = f"entry {seq}"
        if isinstance(item, Finding):
            found.append(item)
            return report
        entry = item
        if seq != expected_seq:
            found.append(Finding(Problem.MISSING_ENTRY, f"entry {expected_seq}", "ledger entry file is missing"))
            return report
        if entry["seq"] != seq:
            found.append(Finding(Problem.REORDERED, where, f"file holds entry seq {entry['seq']}"))
            return report
        if close is not None:
            found.append(Finding(Problem.INSERTED_SEGMENT, where, "entry after the closing entry"))
            return report
        if entry["prev"] != prev:
            found.append(Finding(Problem.BROKEN_CHAIN, where, "prev does not match the hash of the entry before"))
            return report
        if seq == 0:
            if entry["kind"] != "open":
                found.append(Finding(Problem.MALFORMED_ENTRY, where, "first entry is not an 'open' entry"))
                return report
            try:
                key_text = entry["body"]["device_key"]
                key = load_public_key_b64(key_text)
            except (KeyError, TypeError, ProvisioningError) as err:
                found.append(Finding(Problem.MALFORMED_ENTRY, where, f"no usable device_key: {err}"))
                return report
            if trusted_key_b64 is not None:
                report.anchored = True
                if key_text != trusted_key_b64:
                    found.append(Finding(Problem.UNKNOWN_KEY, where,
                                         "session is signed by a key other than the trusted one"))
                    return report
            video = entry["body"].get("video", {})
            if isinstance(video, dict) and isinstance(video.get("fps"), int) and video["fps"] > 0:
                frame_ns = 1_000_000_000 // video["fps"]
        assert key is not None
        if not verify_signature(key, entry["sig"], signed_message(entry)):
            found.append(Finding(Problem.BAD_SIGNATURE, where, "signature does not verify under the device key"))
            return report
        if entry["kind"] == "segment":
            body = entry["body"]
            seg_where = f"segment {body.get('index')} (entry {seq})"
            if body.get("index") != next_index:
                found.append(Finding(Problem.REORDERED, seg_where, f"expected segment {next_index}"))
                return report
            path = layout.media_path(session_dir, str(body.get("file")))
            if not path.is_file():
                found.append(Finding(Problem.MISSING_SEGMENT, seg_where, f"{path.name} is not there"))
                return report
            digest, size = sha256_file(path)
            if size != body.get("bytes") or digest != body.get("sha256"):
                found.append(Finding(Problem.CHANGED_SEGMENT, seg_where,
                                     f"{path.name}: SHA-256 or size differs from the sealed record"))
                return report
            if last_end is not None and frame_ns is not None and abs(body["start_ns"] - last_end) > frame_ns:
                gap_ms = (body["start_ns"] - last_end) / 1e6
                found.append(Finding(Problem.TIMESTAMP_GAP, seg_where,
                                     f"starts {gap_ms:.1f} ms after the previous one ends"))
                return report
            # A segment recovered after a crash may hold no whole frame; its record says so (0 frames).
            if decode and body.get("video_frames") != 0 and (why := _decodes(path)) is not None:
                found.append(Finding(Problem.UNDECODABLE, seg_where, why))
                return report
            last_end = body["end_ns"]
            referenced.add(path.name)
            next_index += 1
            sealed_segments += 1
            sealed_bytes += size
        elif entry["kind"] == "close":
            close = entry["body"]
        prev = entry_hash(entry)
        expected_seq += 1
        report.entries += 1

    report.segments = sealed_segments
    report.media_bytes = sealed_bytes
    stray = sorted(p.name for p in (session_dir / layout.MEDIA).glob("*.ts") if p.name not in referenced)
    if stray:
        found.append(Finding(Problem.INSERTED_SEGMENT, stray[0], "segment file not sealed in the ledger"))
        return report
    if close is None:
        found.append(Finding(Problem.TRUNCATED, f"entry {expected_seq}", "the session has no closing entry"))
        return report
    if close.get("segments") != sealed_segments or close.get("entries") != report.entries:
        found.append(Finding(Problem.TRUNCATED, "closing entry",
                             f"says {close.get('segments')} segments / {close.get('entries')} entries, "
                             f"found {sealed_segments} / {report.entries}"))
        return report
    report.duration_ns = int(close.get("duration_ns", 0))
    return report
