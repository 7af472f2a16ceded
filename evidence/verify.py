"""Offline verification of one stored session (device spool, central's copy or an exported folder).

Every entry is read and parsed (evidence/entry.py), then judged by the session rules (evidence/rules.py),
the same rules central's receiver applies before it receipts an entry; each segment file is checked
against its record (present, its size and SHA-256, and, with central's key, that it decrypts to the
plaintext the device hashed; with a decoder, that it decodes). Then no segment file may be left that the
ledger does not commit, and the session must be closed. The first problem is reported, by entry and kind.

Clock steps are not problems (FORMAT §3.1) but are flagged: the report's `warnings` name every place
where the device's wall clock moved against its monotonic clock.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evidence.entry import Entry, Segment, parse_entry
from evidence.errors import DecryptionError, MalformedEntry
from evidence.hashing import sha256_stream
from evidence.layout import SessionFiles, SessionFolder
from evidence.merkle import inclusion_proof, root_from_proof
from evidence.rules import Finding, Problem, SessionRules, Violation

if TYPE_CHECKING:  # only decrypting needs cryptography (FORMAT §7.5)
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

Decoder = Callable[[bytes], str | None]
"""Decodes an MPEG-TS segment: None if at least one video frame decodes, else why not."""
HASHERS = 2
"""Threads that read and hash segments ahead of the entries that name them."""
CLOCK_STEP_S = 1.0
"""A change of more than this between wall clock and monotonic clock, from one entry to the next of one run
of the device, is reported as a clock step (and the device logs a `clock_step` event for it)."""


@dataclass
class Report:
    source: str
    entries: int = 0
    segments: int = 0
    media_bytes: int = 0
    duration_ns: int = 0
    findings: list[Finding] = field(default_factory=list)
    anchored: bool = False
    """True when the device key was checked against a key the verifier was given."""
    notes: list[str] = field(default_factory=list)
    """What was not checked, and why (for example: sealed segments not decoded without central's key)."""
    warnings: list[str] = field(default_factory=list)
    """What is not a break of the rules but deserves a look: the device's clock stepped during the session."""
    removed: int = 0
    """Segments absent because central removed them after their retention expired, each named with its hash
    by a tombstone the caller checked (`verify_session(removed=...)`); their entries were checked."""

    @property
    def ok(self) -> bool:
        return not self.findings

    def text(self, key_source: str) -> str:
        """The report as `recorder verify` prints it; `key_source` says where the trusted key came from."""
        if self.ok:
            anchor = (f" (signed by {key_source})" if self.anchored
                      else " (key not anchored: pass --key to check it is the device's)")
            lines = [f"OK      {self.source}: {self.segments} segments, {self.entries} entries, "
                     f"{self.duration_ns / 1e9:.1f} s{anchor}"]
        else:
            lines = [f"FAILED  {self.source}: {self.findings[0]}"]
        if self.removed:
            lines.append(f"        removed: {self.removed} segment files, removed by central after their retention "
                         "expired, as its signed tombstone names them (their entries were checked)")
        lines += [f"        note: {note}" for note in self.notes]
        lines += [f"        warning: {warning}" for warning in self.warnings]
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {
            "session_dir": self.source,
            "ok": self.ok,
            "entries": self.entries,
            "segments": self.segments,
            "media_bytes": self.media_bytes,
            "duration_s": self.duration_ns / 1e9,
            "key_anchored": self.anchored,
            "notes": self.notes,
            "warnings": self.warnings,
            "removed_segments": self.removed,
            "problems": [
                {"kind": f.problem.name.lower(), "where": f.where, "detail": f.detail} for f in self.findings
            ],
        }


class _Verifier:
    def __init__(self, files: SessionFiles, rules: SessionRules, decoder: Decoder | None,
                 central_key: X25519PrivateKey | None, report: Report,
                 removed: Mapping[str, tuple[str, int]] | None = None) -> None:
        self.files = files
        self.removed = removed or {}
        self.rules = rules
        self.decoder = decoder
        self.central_key = central_key
        self.report = report
        self.referenced: set[str] = set()
        self._clock: tuple[int, float] | None = None
        self.hashing: dict[str, Future[tuple[str, int]]] = {}

    def _hash(self, name: str) -> tuple[str, int]:
        with self.files.open_media(name) as stream:
            return sha256_stream(stream)

    def run(self) -> None:
        if not self.files.has_entries():
            raise Violation(Problem.MISSING_ENTRY, self.files.label, "no entries/ folder: not a session")
        with ThreadPoolExecutor(HASHERS, thread_name_prefix="verify-hash") as pool:
            if self.decoder is None and self.central_key is None:
                # Only hashes are needed of the segments: they are read ahead, on other threads (SHA-256 lets
                # go of the interpreter), while this one parses entries and checks signatures.
                self.hashing = {name: pool.submit(self._hash, name) for name in self.files.media_names()}
            try:
                for expected, seq in enumerate(self.files.entry_seqs()):
                    if seq != expected:
                        raise Violation(Problem.MISSING_ENTRY, f"entry {expected}", "ledger entry file is missing")
                    self.entry(seq)
            finally:
                for future in self.hashing.values():
                    future.cancel()
        stray = [name for name in self.files.media_names() if name not in self.referenced]
        if stray:
            raise Violation(Problem.INSERTED_SEGMENT, stray[0], "segment file not sealed in the ledger")
        self.rules.finish()
        assert self.rules.closing is not None
        self.report.duration_ns = self.rules.closing.duration_ns

    def entry(self, seq: int) -> None:
        where = f"entry {seq}"
        try:
            entry = parse_entry(self.files.read_entry(seq))
        except OSError as err:
            raise Violation(Problem.MALFORMED_ENTRY, where, f"cannot be read: {err.strerror or err}") from err
        except MalformedEntry as err:
            raise Violation(Problem.MALFORMED_ENTRY, where, str(err)) from err
        if entry.seq != seq:
            raise Violation(Problem.REORDERED, where, f"file holds entry seq {entry.seq}")
        if seq == 0:
            assert entry.opening is not None
            self.report.anchored = self.rules.trusted_key is not None
            if entry.opening.encrypted and self.central_key is None and self.decoder is not None:
                self.report.notes.append("segments are sealed to central's key: not decrypted or decoded "
                                         "(pass central's private key to check them after decryption)")
        self.rules.admit(entry, self.media)
        self.watch_clock(entry)
        self.report.entries += 1

    def media(self, segment: Segment, where: str) -> None:
        content = self.decoder is not None or (self.rules.opening is not None and self.rules.opening.encrypted
                                               and self.central_key is not None)
        try:
            ahead = self.hashing.get(segment.file)
            if ahead is not None and not content:
                digest, size = ahead.result()
            else:
                with self.files.open_media(segment.file) as stream:
                    if content:
                        data = stream.read()
                        digest, size = hashlib.sha256(data).hexdigest(), len(data)
                    else:
                        digest, size = sha256_stream(stream)
        except OSError as err:
            if self.removed.get(segment.file) == (segment.sha256, segment.bytes):
                self.report.removed += 1
                return
            raise Violation(Problem.MISSING_SEGMENT, where, f"{segment.file} is not there") from err
        if size != segment.bytes or digest != segment.sha256:
            raise Violation(Problem.CHANGED_SEGMENT, where, f"{segment.file}: SHA-256 or size differs from the "
                                                            "sealed record")
        if content:
            self.content(segment, data, where)
        self.referenced.add(segment.file)
        self.report.segments += 1
        self.report.media_bytes += size

    def content(self, segment: Segment, media: bytes, where: str) -> None:
        """After decryption (with central's key): the plaintext hash, and that the segment decodes."""
        assert self.rules.opening is not None
        if self.rules.opening.encrypted:
            if self.central_key is None:
                return  # without the key nothing to open
            from evidence.encryption import HEADER_BYTES, open_sealed

            if segment.recovered and len(media) < HEADER_BYTES:
                return  # a crash may have cut the file before its header
            try:
                opened = open_sealed(media, self.central_key)
            except DecryptionError as err:
                raise Violation(Problem.UNDECRYPTABLE, where, str(err)) from err
            if not opened.complete and not segment.recovered:
                raise Violation(Problem.UNDECRYPTABLE, where, "its last record is missing: cut off after sealing")
            media = opened.plaintext
        if segment.plain_sha256 is not None and hashlib.sha256(media).hexdigest() != segment.plain_sha256:
            raise Violation(Problem.CHANGED_SEGMENT, where, f"{segment.file}: plaintext SHA-256 differs from the seal")
        # What a crash cut off is kept as it is (it may hold no whole frame), and a segment closed by a
        # storage fault may have no frame either: both say so in their record.
        if (self.decoder is not None and not segment.recovered and segment.video_frames != 0
                and (why := self.decoder(media)) is not None):
            raise Violation(Problem.UNDECODABLE, where, why)

    def watch_clock(self, entry: Entry) -> None:
        try:
            wall = dt.datetime.fromisoformat(entry.time).timestamp()
        except ValueError:
            return  # readers do not judge `time` (FORMAT §3.1)
        offset = wall - entry.mono_ns / 1e9
        if self._clock is not None:
            mono_before, offset_before = self._clock
            # Only within one run of the device: after a restart the monotonic clock starts again.
            if entry.mono_ns >= mono_before and abs(offset - offset_before) > CLOCK_STEP_S:
                self.report.warnings.append(f"entry {entry.seq}: the device's wall clock stepped by "
                                            f"{offset - offset_before:+.1f} s since the entry before")
        self._clock = (entry.mono_ns, offset)


def verify_session(files: SessionFiles | Path, trusted_key_b64: str | None = None, decode: Decoder | None = None,
                   central_key: X25519PrivateKey | None = None,
                   removed: Mapping[str, tuple[str, int]] | None = None) -> Report:
    """Judge one session. `trusted_key_b64`: the device key as central enrolled it (anchors the signatures);
    `decode`: also decode every segment; `central_key`: decrypt sealed segments and check their plaintext;
    `removed`: segment files central removed after expiry, by name, with (SHA-256, bytes) as the checked
    tombstone names them: such a file may be absent (FORMAT §13.3), and one present is checked as usual."""
    files = SessionFolder(files) if isinstance(files, Path) else files
    report = Report(files.label)
    try:
        _Verifier(files, SessionRules(trusted_key_b64), decode, central_key, report, removed).run()
    except Violation as violation:
        report.findings.append(violation.finding)
    return report


@dataclass(frozen=True)
class Proof:
    """An entry's RFC 6962 audit path to the Merkle root its session's closing entry signs (FORMAT §3.6)."""

    source: str
    seq: int
    leaf: str
    size: int
    path: list[str]
    root: str | None
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def text(self) -> str:
        lines = [f"session   {self.source}", f"entry     {self.seq}: hash {self.leaf}",
                 f"tree      {self.size} entries (every entry before the closing one)"]
        lines += [f"path[{i}]   {h}" for i, h in enumerate(self.path)]
        lines.append(f"root      {self.root}")
        lines.append("OK        the path leads from the entry to the root the closing entry signs" if self.ok
                     else f"FAILED    {self.problem}")
        return "\n".join(lines)


def prove_entry(files: SessionFiles | Path, seq: int, trusted_key_b64: str | None = None) -> Proof:
    """The audit path of entry `seq` in a verified, closed session, checked against its closing entry's root."""
    files = SessionFolder(files) if isinstance(files, Path) else files
    report = verify_session(files, trusted_key_b64)
    try:
        entries = [parse_entry(files.read_entry(s)) for s in files.entry_seqs()]
    except (OSError, MalformedEntry) as err:
        return Proof(files.label, seq, "", 0, [], None, f"the session cannot be read: {err}")
    leaves = [bytes.fromhex(e.hash) for e in entries if e.closing is None]
    closing = next((e.closing for e in entries if e.closing is not None), None)
    root = closing.merkle_root if closing is not None else None
    if not report.ok:
        return Proof(files.label, seq, "", len(leaves), [], root, f"the session does not verify: {report.findings[0]}")
    if not 0 <= seq < len(leaves):
        return Proof(files.label, seq, "", len(leaves), [], root,
                     f"entry {seq} is not in the tree (entries 0 to {len(leaves) - 1} are)")
    path = inclusion_proof(leaves, seq)
    computed = root_from_proof(leaves[seq], seq, len(leaves), path)
    problem = None if computed is not None and computed.hex() == root else "the path does not lead to the root"
    return Proof(files.label, seq, leaves[seq].hex(), len(leaves), [h.hex() for h in path], root, problem)
