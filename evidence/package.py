"""An evidence export package (ARCHIVE; FORMAT §14) checked offline: the manifest signed by central, every file
against it, and the session in it: a whole session by the verifier's own rules (evidence/verify.py), a time
range by each entry's signature, the chain inside the range and each entry's Merkle inclusion proof to the
root the signed closing entry names; and each playable copy against the hash the device signed.

Only the standard library and the `evidence` modules this imports are needed (the package carries them), so a
court's expert with Python and nothing else can run it: `python3 verifier/verify_export.py .`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evidence.canonical import NotCanonical, parse_canonical
from evidence.entry import Entry, parse_entry
from evidence.errors import EvidenceError, MalformedEntry
from evidence.hashing import sha256_file
from evidence.keys import load_public_key_b64, verify_signature
from evidence.layout import ENTRIES, MEDIA, entry_name
from evidence.merkle import root_from_proof
from evidence.rules import SessionRules, Violation
from evidence.verify import verify_session

EXPORT_FORMAT = "room-recorder-export/1"
EXPORT_CONTEXT = b"room-recorder/export/v1\x00"
MANIFEST, MANIFEST_SIG = "MANIFEST.json", "MANIFEST.sig"
SESSION_DIR, PLAYABLE_DIR = "session", "playable"
PROOFS, ENROLLMENT, REGISTER_COPY = "proofs.json", "enrollment.json", "register.log"


@dataclass
class PackageReport:
    root: str
    ok_steps: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        lines = [f"package   {self.root}"]
        lines += [f"ok        {step}" for step in self.ok_steps]
        lines += [f"note      {note}" for note in self.notes]
        lines += [f"PROBLEM   {problem}" for problem in self.problems]
        lines.append("RESULT    OK: the package is as central signed it and its recording as the device sealed it"
                     if self.ok else f"RESULT    FAILED: {len(self.problems)} problem(s)")
        return "\n".join(lines)


def manifest_message(manifest_bytes: bytes) -> bytes:
    """What central's signature over a package covers."""
    return EXPORT_CONTEXT + manifest_bytes


def check_package(root: Path, central_key_b64: str | None = None) -> PackageReport:
    """Check the package in `root`. `central_key_b64`: central's signing key as the agency publishes it; without
    it the key the manifest names is used, and the report says the package is not anchored."""
    report = PackageReport(str(root))
    try:
        manifest = _manifest(root, central_key_b64, report)
        _files(root, manifest, report)
        entries = _session(root, manifest, report)
        _playable(root, entries, report)
    except _Stop as stop:
        report.problems.append(str(stop))
    return report


class _Stop(Exception):
    """A problem after which nothing further can be checked."""


def _manifest(root: Path, central_key_b64: str | None, report: PackageReport) -> dict[str, Any]:
    try:
        data = (root / MANIFEST).read_bytes()
        signature = (root / MANIFEST_SIG).read_text("ascii").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise _Stop(f"{MANIFEST} and {MANIFEST_SIG} cannot be read: {err}") from err
    try:
        manifest = parse_canonical(data)
    except (NotCanonical, ValueError) as err:
        raise _Stop(f"{MANIFEST} is not canonical JSON: {err}") from err
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        raise _Stop(f"{MANIFEST} is not a {EXPORT_FORMAT} manifest")
    named = manifest.get("central_signing_key")
    key_b64 = central_key_b64 or named
    if central_key_b64 and named != central_key_b64:
        report.problems.append("the manifest names another central key than the one given")
    if not isinstance(key_b64, str):
        raise _Stop(f"{MANIFEST} names no central signing key, and none was given")
    try:
        key = load_public_key_b64(key_b64)
    except EvidenceError as err:
        raise _Stop(f"central's key: {err}") from err
    if not verify_signature(key, signature, manifest_message(data)):
        raise _Stop(f"{MANIFEST_SIG} is not central's signature over {MANIFEST}: the manifest was changed or forged")
    report.ok_steps.append(f"{MANIFEST} is signed by central's key {key_b64[:12]}…")
    if not central_key_b64:
        report.notes.append("central's key was taken from the manifest itself: compare it with the key the agency "
                            "publishes (--central-key) to anchor the package")
    return manifest


def _files(root: Path, manifest: Mapping[str, Any], report: PackageReport) -> None:
    listed: dict[str, Any] = {f["name"]: f for f in manifest.get("files", [])}
    bad = 0
    for name, item in sorted(listed.items()):
        path = root / name
        if ".." in Path(name).parts or not path.is_file():
            report.problems.append(f"{name}: listed in the manifest but not in the package")
            bad += 1
            continue
        digest, size = sha256_file(path)
        if (digest, size) != (item["sha256"], item["bytes"]):
            report.problems.append(f"{name}: its SHA-256 or size differs from the manifest (changed)")
            bad += 1
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    extra = sorted(present - set(listed) - {MANIFEST, MANIFEST_SIG} - {n for n in present if "__pycache__" in n})
    for name in extra:
        report.problems.append(f"{name}: in the package but not in the manifest (added)")
    if not bad and not extra:
        report.ok_steps.append(f"all {len(listed)} files match the manifest")


def _session(root: Path, manifest: Mapping[str, Any], report: PackageReport) -> dict[int, Entry]:
    folder = root / SESSION_DIR / str(manifest.get("session", ""))
    try:
        enrollment = json.loads((root / ENROLLMENT).read_bytes())
    except (OSError, ValueError) as err:
        raise _Stop(f"{ENROLLMENT} cannot be read: {err}") from err
    known = {k["key"] for k in enrollment.get("keys", []) if isinstance(k, dict) and "key" in k}
    entries: dict[int, Entry] = {}
    for path in sorted((folder / ENTRIES).glob("*.json")):
        try:
            entry = parse_entry(path.read_bytes())
        except (OSError, MalformedEntry) as err:
            raise _Stop(f"{path.relative_to(root)}: {err}") from err
        if path.name != entry_name(entry.seq):
            raise _Stop(f"{path.relative_to(root)} holds entry {entry.seq}")
        entries[entry.seq] = entry
    opening = entries.get(0)
    if opening is None or opening.opening is None:
        raise _Stop("the session's open entry (seq 0) is not in the package")
    device_key = opening.opening.device_key
    if device_key not in known:
        report.problems.append("the session is signed by a key the device's enrollment record does not name")
    if manifest.get("range") is None:
        result = verify_session(folder, device_key)
        if result.ok:
            report.ok_steps.append(f"the whole session verifies: {result.entries} entries, {result.segments} segments, "
                                   f"{result.duration_ns / 1e9:.1f} s, signed by the enrolled device key")
        for finding in result.findings:
            report.problems.append(f"session: {finding}")
        return entries
    _range(root, folder, entries, device_key, report)
    return entries


def _range(root: Path, folder: Path, entries: dict[int, Entry], device_key: str, report: PackageReport) -> None:
    seqs = sorted(entries)
    close = entries[seqs[-1]]
    if close.closing is None:
        raise _Stop("a range package must hold the session's closing entry, which signs the Merkle root")
    try:
        proofs = json.loads((root / PROOFS).read_bytes())
    except (OSError, ValueError) as err:
        raise _Stop(f"{PROOFS} cannot be read: {err}") from err
    run = seqs[1:-1]
    if run and run != list(range(run[0], run[-1] + 1)):
        report.problems.append("the entries of the range are not one unbroken run of seqs")
    for seq in seqs:
        entry = entries[seq]
        try:
            SessionRules.check_alone(entry, device_key)
        except Violation as violation:
            report.problems.append(str(violation.finding))
            continue
        if entry.closing is not None:
            continue
        proof = proofs.get(str(seq))
        reached = None if proof is None else root_from_proof(bytes.fromhex(entry.hash), seq, close.seq,
                                                             [bytes.fromhex(h) for h in proof])
        if reached is None or reached.hex() != close.closing.merkle_root:
            report.problems.append(f"entry {seq}: its inclusion proof does not lead to the root the closing entry "
                                   "signs")
    for before, after in itertools.pairwise(run):
        if entries[after].prev != entries[before].hash:
            report.problems.append(f"entry {after}: prev does not name entry {before}'s hash")
    segments = 0
    for seq in run:
        segment = entries[seq].segment
        if segment is None:
            continue
        segments += 1
        path = folder / MEDIA / segment.file
        if not path.is_file() or sha256_file(path) != (segment.sha256, segment.bytes):
            report.problems.append(f"{segment.file}: missing, or not the file entry {seq} seals")
    if not report.problems:
        report.ok_steps.append(f"the range verifies: entries {run[0] if run else '-'} to {run[-1] if run else '-'} "
                               f"({segments} segments) belong to the session by their signatures and Merkle "
                               f"inclusion proofs to the root its closing entry (seq {close.seq}) signs")


def _playable(root: Path, entries: dict[int, Entry], report: PackageReport) -> None:
    """Each playable copy is the decrypted segment: its SHA-256 is the one the device signed (`plain_sha256`, or
    `sha256` for a session recorded in the clear)."""
    by_file = {e.segment.file: e.segment for e in entries.values() if e.segment is not None}
    copies = sorted((root / PLAYABLE_DIR).glob("*.ts"))
    bad = 0
    for path in copies:
        segment = by_file.get(path.name)
        if segment is None:
            report.problems.append(f"{PLAYABLE_DIR}/{path.name}: no segment entry of the package names it")
            bad += 1
            continue
        expected = segment.plain_sha256 or segment.sha256
        if hashlib.sha256(path.read_bytes()).hexdigest() != expected:
            report.problems.append(f"{PLAYABLE_DIR}/{path.name}: not the recording the device sealed")
            bad += 1
    if copies and not bad:
        report.ok_steps.append(f"all {len(copies)} playable copies are the recording the device sealed "
                               "(their SHA-256 is the one in its signed entries)")
    if not copies:
        report.notes.append("the package holds no playable copies")


def main(argv: list[str]) -> int:
    """`python3 verifier/verify_export.py [PACKAGE] [--central-key KEY]`: 0 when the package holds, 1 if not."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="verify_export.py",
        description="Check an evidence package offline: central's signature over its manifest, every file against "
                    "the manifest, the recording against the device's signatures (FORMAT §14).")
    parser.add_argument("package", type=Path, nargs="?", default=Path("."),
                        help="the package's top folder (the disc, or a copy of it); default: the current folder")
    parser.add_argument("--central-key", metavar="BASE64",
                        help="central's signing public key as the agency publishes it (anchors the package)")
    args = parser.parse_args(argv)
    report = check_package(args.package, args.central_key)
    print(report.text())
    return 0 if report.ok else 1
