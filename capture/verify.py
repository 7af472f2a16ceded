"""Offline verification of one stored session (device spool, central's copy or an exported folder).

Checks, in order, and reports the first problem by entry and kind: every ledger entry present and
well-formed, the hash chain unbroken, every signature valid under the device key, every segment file
present with its recorded size and SHA-256, no unreferenced segment file, segment indices contiguous,
no timeline gap larger than one frame, and a closing entry whose totals match (so a cut tail shows).
"""

from __future__ import annotations

import enum
import hashlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from capture import layout
from capture.encryption import HEADER_BYTES, DecryptionError, open_sealed
from capture.errors import CaptureError
from capture.ledger import GENESIS, entry_hash, parse_entry, signed_message
from capture.merkle import root_hex
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
    AFTER_CLOSE = "entry after the closing entry"
    UNDECRYPTABLE = "sealed segment does not decrypt"
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
    notes: list[str] = field(default_factory=list)
    """What was not checked, and why (for example: sealed segments not decoded without central's key)."""

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
            "notes": self.notes,
            "problems": [
                {"kind": f.problem.name.lower(), "where": f.where, "detail": f.detail} for f in self.findings
            ],
        }


_SEGMENT_INTS = ("index", "bytes", "start_ns", "end_ns", "video_frames", "audio_samples")
_UNKNOWN_WHEN_RECOVERED = ("end_ns", "video_frames", "audio_samples", "plain_bytes")
"""A sealed segment recovered after a crash: the device could not read it, so these are null."""
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")


class _Stop(Exception):
    """The first problem found: verification stops there and reports it."""

    def __init__(self, problem: Problem, where: str, detail: str) -> None:
        super().__init__(detail)
        self.finding = Finding(problem, where, detail)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _decodes(media: bytes) -> str | None:
    try:
        with av.open(io.BytesIO(media), "r") as container:
            frames = sum(1 for _ in container.decode(video=0))
    except (av.FFmpegError, OSError, IndexError) as err:  # IndexError: the file has no video stream
        return str(err) or "no video stream"
    return None if frames else "no video frame decodes"


class _Verifier:
    def __init__(self, session_dir: Path, trusted_key_b64: str | None, decode: bool,
                 central_key: X25519PrivateKey | None, report: Report) -> None:
        self.dir = session_dir
        self.trusted = trusted_key_b64
        self.decode = decode
        self.central_key = central_key
        self.sealed = False
        self.report = report
        self.prev = GENESIS
        self.key: Ed25519PublicKey | None = None
        self.opening: dict[str, Any] = {}
        self.frame_ns = 0
        self.last_end: int | None = None
        self.referenced: set[str] = set()
        self.close: dict[str, Any] | None = None
        self.leaves: list[str] = []

    def run(self) -> None:
        if not (self.dir / layout.ENTRIES).is_dir():
            raise _Stop(Problem.MISSING_ENTRY, str(self.dir), "no entries/ folder: not a session")
        for expected, seq in enumerate(layout.entry_seqs(self.dir)):
            if seq != expected:
                raise _Stop(Problem.MISSING_ENTRY, f"entry {expected}", "ledger entry file is missing")
            self.entry(seq)
        self.finish()

    def entry(self, seq: int) -> None:
        where = f"entry {seq}"
        try:
            entry = parse_entry(layout.entry_path(self.dir, seq).read_bytes())
        except (CaptureError, OSError) as err:
            raise _Stop(Problem.MALFORMED_ENTRY, where, str(err)) from err
        if entry["seq"] != seq:
            raise _Stop(Problem.REORDERED, where, f"file holds entry seq {entry['seq']}")
        if self.close is not None:
            raise _Stop(Problem.AFTER_CLOSE, where, f"a {entry['kind']!r} entry follows the closing entry")
        if entry["prev"] != self.prev:
            raise _Stop(Problem.BROKEN_CHAIN, where, "prev does not match the hash of the entry before")
        if seq == 0:
            self.open(entry, where)
        elif entry["kind"] == "open":
            raise _Stop(Problem.MALFORMED_ENTRY, where, "a second 'open' entry")
        elif (entry["device"], entry["session"]) != (self.opening["device"], self.opening["session"]):
            raise _Stop(Problem.MALFORMED_ENTRY, where, "entry names another device or session than the opening")
        assert self.key is not None
        if not verify_signature(self.key, entry["sig"], signed_message(entry)):
            raise _Stop(Problem.BAD_SIGNATURE, where, "signature does not verify under the device key")
        if entry["kind"] == "segment":
            self.segment(entry["body"], seq)
        elif entry["kind"] == "close":
            self.close = entry["body"]
            if self.close.get("merkle_root") != root_hex(self.leaves):
                raise _Stop(Problem.BROKEN_CHAIN, where, "the closing entry's Merkle root does not match the entries")
        self.prev = entry_hash(entry)
        self.leaves.append(self.prev)
        self.report.entries += 1

    def open(self, entry: dict[str, Any], where: str) -> None:
        if entry["kind"] != "open":
            raise _Stop(Problem.MALFORMED_ENTRY, where, "first entry is not an 'open' entry")
        body = entry["body"]
        try:
            key_text = body["device_key"]
            self.key = load_public_key_b64(key_text)
            fps = body["video"]["fps"]
        except (KeyError, TypeError, ProvisioningError) as err:
            raise _Stop(Problem.MALFORMED_ENTRY, where,
                        f"opening lacks a usable device_key or video fps: {err}") from err
        if not _is_int(fps) or fps <= 0:
            raise _Stop(Problem.MALFORMED_ENTRY, where, f"video fps {fps!r} is not a positive integer")
        self.frame_ns = 1_000_000_000 // fps
        self.opening = entry
        self.sealed = bool(body.get("encryption"))
        if self.sealed and self.central_key is None and self.decode:
            self.report.notes.append("segments are sealed to central's key: not decrypted or decoded "
                                     "(pass central's private key to check them after decryption)")
        if self.trusted is not None:
            self.report.anchored = True
            if key_text != self.trusted:
                raise _Stop(Problem.UNKNOWN_KEY, where, "session is signed by a key other than the trusted one")

    def segment(self, body: dict[str, Any], seq: int) -> None:
        index = body.get("index")
        where = f"segment {index} (entry {seq})"
        recovered = body.get("recovered") is True
        bad = [k for k in _SEGMENT_INTS
               if not _is_int(body.get(k)) and not (recovered and k in _UNKNOWN_WHEN_RECOVERED and body.get(k) is None)]
        if bad or not isinstance(body.get("sha256"), str) or not _HEX64.match(body["sha256"]):
            raise _Stop(Problem.MALFORMED_ENTRY, where, f"segment record lacks or mistypes {bad or ['sha256']}")
        expected = self.report.segments + 1
        if index != expected:
            problem = Problem.MISSING_SEGMENT if isinstance(index, int) and index > expected else Problem.REORDERED
            raise _Stop(problem, where, f"expected segment {expected}")
        if body.get("file") != layout.media_name(index):
            raise _Stop(Problem.MALFORMED_ENTRY, where, f"file {body.get('file')!r} is not {layout.media_name(index)}")
        path = layout.media_path(self.dir, layout.media_name(index))
        if not path.is_file():
            raise _Stop(Problem.MISSING_SEGMENT, where, f"{path.name} is not there")
        digest, size = sha256_file(path)
        if size != body["bytes"] or digest != body["sha256"]:
            raise _Stop(Problem.CHANGED_SEGMENT, where, f"{path.name}: SHA-256 or size differs from the sealed record")
        if self.last_end is not None and abs(body["start_ns"] - self.last_end) > self.frame_ns:
            gap_ms = (body["start_ns"] - self.last_end) / 1e6
            relation = f"starts {gap_ms:.1f} ms after" if gap_ms > 0 else f"overlaps by {-gap_ms:.1f} ms"
            raise _Stop(Problem.TIMESTAMP_GAP, where, f"{relation} the end of the previous one")
        if self.decode or (self.sealed and self.central_key is not None):
            self.content(body, path, where)
        self.last_end = body["end_ns"]
        self.referenced.add(path.name)
        self.report.segments += 1
        self.report.media_bytes += size

    def content(self, body: dict[str, Any], path: Path, where: str) -> None:
        """After decryption (with central's key): the plaintext hash, and that the segment decodes."""
        media = path.read_bytes()
        recovered = body.get("recovered") is True
        if self.sealed:
            if self.central_key is None or (recovered and len(media) < HEADER_BYTES):
                return  # without the key nothing to open; a crash may have cut a file before its header
            try:
                opened = open_sealed(media, self.central_key)
            except DecryptionError as err:
                raise _Stop(Problem.UNDECRYPTABLE, where, str(err)) from err
            if not opened.complete and not recovered:
                raise _Stop(Problem.UNDECRYPTABLE, where, "its last record is missing: cut off after sealing")
            media = opened.plaintext
        plain = body.get("plain_sha256")
        if plain is not None and hashlib.sha256(media).hexdigest() != plain:
            raise _Stop(Problem.CHANGED_SEGMENT, where, f"{path.name}: plaintext SHA-256 differs from the seal")
        # What a crash cut off is kept as it is (it may hold no whole frame), and a segment closed by a
        # storage fault may have no frame either: both say so in their record.
        if self.decode and not recovered and body["video_frames"] != 0 and (why := _decodes(media)) is not None:
            raise _Stop(Problem.UNDECODABLE, where, why)

    def finish(self) -> None:
        media = self.dir / layout.MEDIA
        stray = sorted(p.name for p in media.glob("*.ts") if p.name not in self.referenced) if media.is_dir() else []
        if stray:
            raise _Stop(Problem.INSERTED_SEGMENT, stray[0], "segment file not sealed in the ledger")
        if self.close is None:
            raise _Stop(Problem.TRUNCATED, f"entry {self.report.entries}", "the session has no closing entry")
        said = (self.close.get("segments"), self.close.get("entries"), self.close.get("media_bytes"))
        found = (self.report.segments, self.report.entries, self.report.media_bytes)
        if said != found or not all(_is_int(v) for v in (*said, self.close.get("duration_ns"))):
            raise _Stop(Problem.TRUNCATED, "closing entry",
                        f"says {said[0]} segments / {said[1]} entries / {said[2]} bytes, found {found[0]} / "
                        f"{found[1]} / {found[2]}")
        self.report.duration_ns = self.close["duration_ns"]


def verify_session(session_dir: Path, trusted_key_b64: str | None = None, decode: bool = False,
                   central_key: X25519PrivateKey | None = None) -> Report:
    report = Report(session_dir)
    try:
        _Verifier(session_dir, trusted_key_b64, decode, central_key, report).run()
    except _Stop as stop:
        report.findings.append(stop.finding)
    return report
