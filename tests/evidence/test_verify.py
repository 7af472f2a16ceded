"""Every integrity claim, tested by trying to break it on a copy of a real recorded session."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from capture.probe import decodes
from evidence import layout
from evidence.canonical import canonical
from evidence.encryption import seal_bytes
from evidence.entry import GENESIS, entry_hash, signed_message
from evidence.merkle import tree_hash
from evidence.rules import Problem
from evidence.verify import Decoder, verify_session
from firmware_py.cli import main
from provisioning.central_key import load_central_key
from provisioning.identity import DeviceIdentity
from tests.conftest import RecordedSession
from tests.media import edit_opening_metadata, entries


@pytest.fixture
def copy(recorded: RecordedSession, tmp_path: Path) -> Path:
    target = tmp_path / recorded.session
    shutil.copytree(recorded.central_dir, target)
    return target


@pytest.fixture
def key(recorded: RecordedSession) -> str:
    return recorded.rig.service.identity.public_key_b64


def segments(session: Path) -> list[dict[str, Any]]:
    return [e for e in entries(session) if e["kind"] == "segment"]


def first_problem(session: Path, key: str, decode: Decoder | None = None, central: X25519PrivateKey | None = None,
                  ) -> Problem:
    report = verify_session(session, trusted_key_b64=key, decode=decode, central_key=central)
    assert not report.ok, "tampering went unnoticed"
    return report.findings[0].problem


def rewrite(session: Path, signer: DeviceIdentity, mutate: Callable[[dict[str, Any]], None]) -> None:
    """Re-sign and re-chain the whole ledger after `mutate` changed entries: a forger holding `signer`."""
    prev = GENESIS
    hashes: list[str] = []
    for seq in layout.entry_seqs(session):
        path = layout.entry_path(session, seq)
        entry = json.loads(path.read_bytes())
        mutate(entry)
        entry["prev"] = prev
        if entry["kind"] == "open":
            entry["body"]["device_key"] = signer.public_key_b64
        if entry["kind"] == "close":
            entry["body"]["merkle_root"] = tree_hash([bytes.fromhex(h) for h in hashes]).hex()
        entry["sig"] = signer.sign(signed_message(entry))
        path.write_bytes(canonical(entry))
        prev = entry_hash(entry)
        hashes.append(prev)


def test_intact_session_passes__NO_EDIT(copy: Path, key: str) -> None:
    report = verify_session(copy, trusted_key_b64=key, decode=decodes)
    assert report.ok and report.anchored


def test_flipped_media_byte_is_found__NO_EDIT(copy: Path, key: str) -> None:
    target = layout.media_path(copy, segments(copy)[1]["body"]["file"])
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    report = verify_session(copy, trusted_key_b64=key)
    assert report.findings[0].problem is Problem.CHANGED_SEGMENT
    assert "segment 2" in report.findings[0].where


def test_deleted_segment_file_is_found__NO_EDIT(copy: Path, key: str) -> None:
    layout.media_path(copy, segments(copy)[2]["body"]["file"]).unlink()
    assert first_problem(copy, key) is Problem.MISSING_SEGMENT


def test_deleted_segment_entry_is_found__NO_EDIT(copy: Path, key: str) -> None:
    layout.entry_path(copy, segments(copy)[1]["seq"]).unlink()
    assert first_problem(copy, key) is Problem.MISSING_ENTRY


def test_swapped_segments_are_found__NO_EDIT(copy: Path, key: str) -> None:
    a, b = (layout.media_path(copy, s["body"]["file"]) for s in segments(copy)[1:3])
    tmp = a.with_suffix(".swap")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    assert first_problem(copy, key) is Problem.CHANGED_SEGMENT


def test_swapped_entries_are_found__NO_EDIT(copy: Path, key: str) -> None:
    a, b = (layout.entry_path(copy, s["seq"]) for s in segments(copy)[1:3])
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    assert first_problem(copy, key) is Problem.REORDERED


def test_duplicated_segment_is_found__NO_EDIT(copy: Path, key: str) -> None:
    first = layout.media_path(copy, segments(copy)[0]["body"]["file"])
    shutil.copy(first, layout.media_path(copy, layout.media_name(999)))
    assert first_problem(copy, key) is Problem.INSERTED_SEGMENT


def test_cut_tail_is_found__NO_EDIT(copy: Path, key: str) -> None:
    seqs = layout.entry_seqs(copy)
    last_segment = segments(copy)[-1]
    for seq in seqs:
        if seq >= last_segment["seq"]:
            layout.entry_path(copy, seq).unlink()
    layout.media_path(copy, last_segment["body"]["file"]).unlink()
    assert first_problem(copy, key) is Problem.TRUNCATED


def test_edited_metadata_field_is_found__NO_EDIT(copy: Path, key: str) -> None:
    edit_opening_metadata(copy)
    assert first_problem(copy, key) is Problem.BAD_SIGNATURE


def test_forged_segment_signed_with_another_key_is_found__TAMPER_PROOF_IT(copy: Path, key: str) -> None:
    forger = DeviceIdentity(Ed25519PrivateKey.generate())
    victim = segments(copy)[1]
    media = layout.media_path(copy, victim["body"]["file"])
    forged = media.read_bytes()[:-188]  # drop the last TS packet: a "harmless" edit
    media.write_bytes(forged)
    path = layout.entry_path(copy, victim["seq"])
    entry = json.loads(path.read_bytes())
    entry["body"]["sha256"] = hashlib.sha256(forged).hexdigest()
    entry["body"]["bytes"] = len(forged)
    entry["sig"] = forger.sign(signed_message(entry))
    path.write_bytes(canonical(entry))
    # The chain breaks at the next entry, or the signature fails here: either way it is caught.
    assert first_problem(copy, key) in (Problem.BAD_SIGNATURE, Problem.BROKEN_CHAIN)


def test_whole_session_resigned_by_another_key_needs_the_anchor__TAMPER_PROOF_IT(copy: Path, key: str) -> None:
    forger = DeviceIdentity(Ed25519PrivateKey.generate())
    rewrite(copy, forger, lambda e: None)
    assert first_problem(copy, key) is Problem.UNKNOWN_KEY
    unanchored = verify_session(copy)
    assert unanchored.ok and not unanchored.anchored


@pytest.mark.parametrize(("shift_ns", "problem"), [(500_000_000, Problem.UNEXPLAINED_GAP),
                                                    (-500_000_000, Problem.TIMESTAMP_GAP)])
def test_gap_or_overlap_between_segments_is_found__CONTINUOUS(recorded: RecordedSession, copy: Path, key: str,
                                                               shift_ns: int, problem: Problem) -> None:
    victim = segments(copy)[2]["seq"]

    def shift(entry: dict[str, Any]) -> None:
        if entry["seq"] == victim:
            entry["body"]["start_ns"] += shift_ns

    rewrite(copy, recorded.rig.service.identity, shift)
    assert first_problem(copy, key) is problem


def central_key(recorded: RecordedSession) -> X25519PrivateKey:
    return load_central_key(Path(recorded.rig.central.receiver.private_key_file))


def replace_segment(recorded: RecordedSession, copy: Path, victim: dict[str, Any], stored: bytes,
                    plain: bytes) -> None:
    """A forger holding the device key swaps a segment and re-seals the ledger consistently."""
    layout.media_path(copy, victim["body"]["file"]).write_bytes(stored)

    def rehash(entry: dict[str, Any]) -> None:
        if entry["seq"] == victim["seq"]:
            entry["body"].update(sha256=hashlib.sha256(stored).hexdigest(), bytes=len(stored),
                                 plain_sha256=hashlib.sha256(plain).hexdigest(), plain_bytes=len(plain))
        if entry["kind"] == "close":
            entry["body"]["media_bytes"] += len(stored) - victim["body"]["bytes"]

    rewrite(copy, recorded.rig.service.identity, rehash)


def test_undecodable_segment_is_found(recorded: RecordedSession, copy: Path, key: str) -> None:
    junk = bytes(range(256)) * 64
    replace_segment(recorded, copy, segments(copy)[1], seal_bytes(junk, central_key(recorded).public_key()), junk)
    central = central_key(recorded)
    assert verify_session(copy, trusted_key_b64=key, central_key=central).ok  # the hashes are consistent ...
    assert first_problem(copy, key, decode=decodes, central=central) is Problem.UNDECODABLE  # ... not a recording


def test_segment_sealed_to_another_key_is_found__NO_LEAK(recorded: RecordedSession, copy: Path, key: str) -> None:
    plain = b"\x47" * 188
    replace_segment(recorded, copy, segments(copy)[1], seal_bytes(plain, X25519PrivateKey.generate().public_key()),
                    plain)
    assert first_problem(copy, key, central=central_key(recorded)) is Problem.UNDECRYPTABLE


def test_entry_after_close_and_foreign_entries_are_found__NO_EDIT(recorded: RecordedSession, copy: Path,
                                                                    key: str) -> None:
    signer = recorded.rig.service.identity
    last = entries(copy)[-1]
    extra = {**last, "seq": last["seq"] + 1, "prev": entry_hash(last), "kind": "event", "body": {"name": "late"}}
    extra["sig"] = signer.sign(signed_message(extra))
    layout.entry_path(copy, extra["seq"]).write_bytes(canonical(extra))
    assert first_problem(copy, key) is Problem.AFTER_CLOSE


def test_segment_record_naming_a_file_outside_media_is_malformed__NO_EDIT(recorded: RecordedSession, copy: Path,
                                                                          key: str) -> None:
    victim = segments(copy)[0]["seq"]

    def escape(entry: dict[str, Any]) -> None:
        if entry["seq"] == victim:
            entry["body"]["file"] = "../entries/00000000.json"

    rewrite(copy, recorded.rig.service.identity, escape)
    assert first_problem(copy, key) is Problem.MALFORMED_ENTRY


def test_verify_command_exit_status_and_json__NO_EDIT(copy: Path, key: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(copy), "--key", key]) == 0
    assert capsys.readouterr().out.startswith("OK")
    layout.media_path(copy, segments(copy)[0]["body"]["file"]).write_bytes(b"\x47" * 188)
    assert main(["verify", str(copy), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report[0]["ok"] is False
    assert report[0]["problems"][0]["kind"] == "changed_segment"
    assert report[0]["problems"][0]["where"].startswith("segment 1")


def test_verify_anchors_to_the_stores_enrolled_key_by_default__TAMPER_PROOF_IT(
        recorded: RecordedSession, capsys: pytest.CaptureFixture[str]) -> None:
    # Run on central's store, the session is checked against the key central enrolled, not just itself.
    assert main(["verify", str(recorded.central_dir)]) == 0
    out = capsys.readouterr().out
    assert f"(signed by the key enrolled for {recorded.rig.config.device.id}" in out


def test_verify_takes_the_key_or_a_file_holding_it__TAMPER_PROOF_IT(
        copy: Path, key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_file = tmp_path / "device.pub"
    key_file.write_text(key + "\n")
    assert main(["verify", str(copy), "--key", str(key_file)]) == 0
    assert f"(signed by --key {key_file})" in capsys.readouterr().out
    other = tmp_path / "other.pub"
    other.write_text(DeviceIdentity(Ed25519PrivateKey.generate()).public_key_b64)
    assert main(["verify", str(copy), "--key", str(other), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)[0]["problems"][0]["kind"] == "unknown_key"
    assert main(["verify", str(copy), "--key", str(tmp_path / "missing.pub")]) == 2
    assert "not a base64 Ed25519 public key" in capsys.readouterr().err
