"""An evidence export package (ARCHIVE; FORMAT §14) checked offline: the manifest signed by central, every file
against it, and the session in it: a whole session by the verifier's own rules (evidence/verify.py), a time
range by each entry's signature, the chain inside the range and each entry's Merkle inclusion proof to the
root the signed closing entry names; and each playable copy against the hash the device signed.

Only the standard library and the `evidence` modules this imports are needed (the package carries them), so a
court's expert with Python and nothing else can run it: `python3 verifier/verify_export.py .`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evidence.audit import REGISTER, MalformedAudit, check_audit, parse_record
from evidence.canonical import NotCanonical, parse_canonical
from evidence.entry import Entry, parse_entry
from evidence.errors import EvidenceError, MalformedEntry
from evidence.hashing import sha256_file
from evidence.keys import VerifyKey, load_public_key_b64, verify_signature
from evidence.layout import ENTRIES, MEDIA, entry_name
from evidence.merkle import root_from_proof
from evidence.rules import SessionRules, Violation
from evidence.verify import verify_session

EXPORT_FORMAT = "room-recorder-export/1"
EXPORT_CONTEXT = b"room-recorder/export/v1\x00"
MANIFEST, MANIFEST_SIG = "MANIFEST.json", "MANIFEST.sig"
SESSION_DIR, PLAYABLE_DIR, PLAYLIST = "session", "playable", "session.m3u8"
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
    """Check the package in `root` (FORMAT §14.2). `central_key_b64`: central's signing key as the agency
    publishes it; without it the key the manifest names is used, and the report says the package is not
    anchored. Every problem found is reported, not only the first."""
    report = PackageReport(str(root))
    try:
        manifest, key = _manifest(root, central_key_b64, report)
        _files(root, manifest, report)
        entries, removed = _session(root, manifest, key, report)
        _playable(root, entries, removed, report)
    except _Stop as stop:
        report.problems.append(str(stop))
    return report


class _Stop(Exception):
    """A problem after which nothing further can be checked."""


def _manifest(root: Path, central_key_b64: str | None, report: PackageReport) -> tuple[dict[str, Any], VerifyKey]:
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
    listed = manifest.get("files")
    if not isinstance(listed, list) or not all(
            isinstance(f, dict) and isinstance(f.get("name"), str) and isinstance(f.get("sha256"), str)
            and isinstance(f.get("bytes"), int) for f in listed):
        raise _Stop(f"{MANIFEST}: 'files' is not a list of {{name, sha256, bytes}}")
    names = [f["name"] for f in listed]
    if names != sorted(set(names)):
        report.problems.append(f"{MANIFEST}: its files are not listed once each, sorted by name")
    for name in ("device", "session", "device_key", "close_hash", "merkle_root", "central_signing_key"):
        if not isinstance(manifest.get(name), str):
            raise _Stop(f"{MANIFEST}: {name!r} is missing or not a string")
    named = manifest["central_signing_key"]
    if central_key_b64 and named != central_key_b64:
        report.problems.append("the manifest names another central key than the one given")
    key_b64 = central_key_b64 or named
    try:
        key = load_public_key_b64(key_b64)
    except EvidenceError as err:
        raise _Stop(f"central's key: {err}") from err
    if verify_signature(key, signature, manifest_message(data)):
        report.ok_steps.append(f"{MANIFEST} is signed by central's key {key_b64[:12]}…")
    else:
        report.problems.append(f"{MANIFEST_SIG} is not central's signature over {MANIFEST}: the manifest was changed "
                               "or forged (what follows is checked against it all the same)")
    if not central_key_b64:
        report.notes.append("central's key was taken from the manifest itself: compare it with the key the agency "
                            "publishes (--central-key) to anchor the package")
    return manifest, key


def _files(root: Path, manifest: Mapping[str, Any], report: PackageReport) -> None:
    listed: dict[str, Any] = {f["name"]: f for f in manifest["files"]}
    bad = 0
    for name, item in sorted(listed.items()):
        path = root / name
        if ".." in Path(name).parts or Path(name).is_absolute() or not path.is_file() or path.is_symlink():
            report.problems.append(f"{name}: listed in the manifest but not in the package (or not a plain file)")
            bad += 1
            continue
        if sha256_file(path) != (item["sha256"], item["bytes"]):
            report.problems.append(f"{name}: its SHA-256 or size differs from the manifest (changed)")
            bad += 1
    links = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_symlink())
    for name in links:
        report.problems.append(f"{name}: a link, not a file: a package holds plain files only")
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and not p.is_symlink()}
    extra = sorted(present - set(listed) - {MANIFEST, MANIFEST_SIG})
    for name in extra:
        report.problems.append(f"{name}: in the package but not in the manifest (added)")
    if not bad and not extra and not links:
        report.ok_steps.append(f"all {len(listed)} files match the manifest")


def _session(root: Path, manifest: Mapping[str, Any], central: VerifyKey,
             report: PackageReport) -> tuple[dict[int, Entry], dict[str, tuple[str, int]]]:
    session = manifest["session"]
    folder = root / SESSION_DIR / session
    try:
        enrollment = json.loads((root / ENROLLMENT).read_bytes())
        known = {k["key"] for k in enrollment.get("keys", []) if isinstance(k, dict) and isinstance(k.get("key"), str)}
    except (OSError, ValueError, AttributeError) as err:
        raise _Stop(f"{ENROLLMENT} cannot be read: {err}") from err
    entries: dict[int, Entry] = {}
    for path in sorted((folder / ENTRIES).glob("*")):
        try:
            entry = parse_entry(path.read_bytes())
        except (OSError, MalformedEntry) as err:
            raise _Stop(f"{path.relative_to(root)}: {err}") from err
        if path.name != entry_name(entry.seq):
            raise _Stop(f"{path.relative_to(root)} holds entry {entry.seq}: in a package every entry file is named "
                        "by its seq")
        entries[entry.seq] = entry
    opening = entries.get(0)
    if opening is None or opening.opening is None:
        raise _Stop("the session's open entry (seq 0) is not in the package")
    device_key = opening.opening.device_key
    if device_key not in known:
        report.problems.append("the session is signed by a key the device's enrollment record does not name")
    close = entries[max(entries)]
    said = {"device": opening.device, "session": opening.session, "device_key": device_key,
            "close_hash": close.hash, "merkle_root": close.closing.merkle_root if close.closing else None}
    for name, value in said.items():
        if manifest[name] != value:
            report.problems.append(f"{MANIFEST}: {name!r} is not the session's ({value})")
    removed = _register(root, central, f"{opening.device}/{opening.session}", report)
    if manifest.get("range") is None:
        result = verify_session(folder, device_key, removed=removed)
        if result.ok:
            report.ok_steps.append(f"the whole session verifies: {result.entries} entries, {result.segments} segments, "
                                   f"{result.duration_ns / 1e9:.1f} s, signed by the enrolled device key"
                                   + (f"; {result.removed} segments removed after expiry, as central's tombstone "
                                      "names them" if result.removed else ""))
        for finding in result.findings:
            report.problems.append(f"session: {finding}")
        return entries, removed
    _range(root, folder, manifest["range"], entries, device_key, report)
    return entries, removed


def _register(root: Path, central: VerifyKey, target: str, report: PackageReport) -> dict[str, tuple[str, int]]:
    """The session's register, if the package holds one: checked as FORMAT §13.1 says, under central's key;
    the segment files a valid removal record names (with their hashes and sizes)."""
    path = root / REGISTER_COPY
    if not path.is_file():
        return {}
    with path.open("rb") as f:
        found = check_audit(f, central, REGISTER)
    problems = list(found.problems) + (["its last line is incomplete"] if found.torn_tail else [])
    removed: dict[str, tuple[str, int]] = {}
    with path.open("rb") as f:
        for line in f:
            try:
                record = parse_record(line.rstrip(b"\n"), REGISTER)
            except MalformedAudit:
                continue
            if record.target != target:
                problems.append(f"record {record.seq} is about {record.target}, not this session")
            elif record.action == "removal" and isinstance(record.detail.get("files"), list):
                removed.update({f["file"]: (f["sha256"], f["bytes"]) for f in record.detail["files"]
                                if isinstance(f, dict) and {"file", "sha256", "bytes"} <= set(f)})
    for problem in problems:
        report.problems.append(f"{REGISTER_COPY}: {problem}")
    if not problems:
        report.ok_steps.append(f"{REGISTER_COPY} holds: {found.records} records, chained and signed by central")
        return removed
    return {}


def _proofs(root: Path) -> dict[str, list[bytes]]:
    try:
        value = json.loads((root / PROOFS).read_bytes())
        return {str(seq): [bytes.fromhex(h) for h in path] for seq, path in value.items()}
    except (OSError, ValueError, TypeError, AttributeError) as err:
        raise _Stop(f"{PROOFS} cannot be read as an object of seq to a list of hex hashes: {err}") from err


def _range(root: Path, folder: Path, span: Any, entries: dict[int, Entry], device_key: str,
           report: PackageReport) -> None:
    seqs = sorted(entries)
    close = entries[seqs[-1]]
    if close.closing is None:
        raise _Stop("a range package must hold the session's closing entry, which signs the Merkle root")
    if not isinstance(span, dict) or not all(isinstance(span.get(k), (int, float)) for k in ("start_s", "end_s")) \
            or not 0 <= span["start_s"] < span["end_s"]:
        raise _Stop(f"{MANIFEST}: 'range' is not {{start_s, end_s}} with 0 <= start_s < end_s")
    proofs = _proofs(root)
    run = seqs[1:-1]
    if not run or run != list(range(run[0], run[-1] + 1)):
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
        reached = None if proof is None else root_from_proof(bytes.fromhex(entry.hash), seq, close.seq, proof)
        if reached is None or reached.hex() != close.closing.merkle_root:
            report.problems.append(f"entry {seq}: its inclusion proof does not lead to the root the closing entry "
                                   "signs")
    # The chain inside the run, and at its ends where they touch entry 0 or the closing entry.
    for before, after in itertools.pairwise(seqs):
        if after == before + 1 and entries[after].prev != entries[before].hash:
            report.problems.append(f"entry {after}: prev does not name entry {before}'s hash")
    lo, hi = span["start_s"] * 1e9, span["end_s"] * 1e9
    covered: list[tuple[int, int]] = []
    for seq in run:
        segment = entries[seq].segment
        if segment is None:
            continue
        if not (segment.start_ns < hi and segment.end > lo):
            report.problems.append(f"entry {seq}: its segment ({segment.start_ns / 1e9:.1f}–{segment.end / 1e9:.1f} s) "
                                   "lies outside the range the manifest names")
        covered.append((segment.start_ns, segment.end))
        path = folder / MEDIA / segment.file
        if not path.is_file() or sha256_file(path) != (segment.sha256, segment.bytes):
            report.problems.append(f"{segment.file}: missing, or not the file entry {seq} seals")
    sealed = {segment.file for seq in run if (segment := entries[seq].segment) is not None}
    for path in sorted((folder / MEDIA).glob("*")):
        if path.name not in sealed:
            report.problems.append(f"{path.name}: no entry of the range seals it")
    if not covered:
        report.problems.append("the range holds no segment")
    elif not report.problems:
        first, last = min(c[0] for c in covered) / 1e9, max(c[1] for c in covered) / 1e9
        report.ok_steps.append(
            f"the range verifies: entries {run[0]} to {run[-1]} ({len(covered)} segments, "
            f"{first:.1f}–{last:.1f} s of the recording, for the "
            f"range {span['start_s']:g}–{span['end_s']:g} s) belong to the session by their signatures and Merkle "
            f"inclusion proofs to the root its closing entry (seq {close.seq}) signs")


def _playable(root: Path, entries: dict[int, Entry], removed: Mapping[str, Any], report: PackageReport) -> None:
    """Each playable copy is the decrypted segment: its SHA-256 is the one the device signed (`plain_sha256`, or
    `sha256` for a session recorded in the clear). Nothing else is in `playable/` but the playlist."""
    by_file = {e.segment.file: e.segment for e in entries.values() if e.segment is not None}
    folder = root / PLAYABLE_DIR
    found = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
    copies = 0
    bad = 0
    for path in found:
        name = path.relative_to(folder).as_posix()
        if name == PLAYLIST:
            continue
        segment = by_file.get(name)
        if segment is None or name in removed:
            report.problems.append(f"{PLAYABLE_DIR}/{name}: no segment entry of the package names it")
            bad += 1
            continue
        copies += 1
        expected = segment.plain_sha256 or segment.sha256
        if sha256_file(path)[0] != expected:
            report.problems.append(f"{PLAYABLE_DIR}/{name}: not the recording the device sealed")
            bad += 1
    if copies and not bad:
        report.ok_steps.append(f"all {copies} playable copies are the recording the device sealed "
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
