"""The spool is freed of what central proved it holds, and of nothing else (DEVICE-CHECK, TAMPER-PROOF-IT)."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from capture.pruning import DOOMED_PREFIX, Pruner
from capture.spool import Spool
from evidence import layout
from evidence.entry import parse_entry
from mqtt import protocol
from provisioning.identity import DeviceIdentity
from tests.forge import StepClock, forge

DEVICE = "ROOM-7"
CENTRAL = DeviceIdentity(Ed25519PrivateKey.generate())
FORGER = DeviceIdentity(Ed25519PrivateKey.generate())
LONG_AGO = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
NOW = dt.datetime(2026, 11, 29, 9, 0, tzinfo=dt.UTC)


def _receipt_ok(raw: bytes, session: str, seq: int, digest: str) -> bool:
    return protocol.proves_delivery(raw, session, seq, digest, CENTRAL.public_key)


def _session(spool_dir: Path, name: str, opened: dt.datetime, closed: bool = True) -> Path:
    session_dir = spool_dir / name
    forge(session_dir, DEVICE, DeviceIdentity(Ed25519PrivateKey.generate()), StepClock(opened), {}, 3, closed=closed)
    return session_dir


def _receipt_all(session_dir: Path, sign: protocol.Sign | None = CENTRAL.sign,
                 skip: int | None = None, hash_of: Callable[[int, str], str] = lambda seq, digest: digest) -> None:
    for seq in layout.entry_seqs(session_dir):
        if seq == skip:
            continue
        entry = parse_entry(layout.entry_path(session_dir, seq).read_bytes())
        receipt = protocol.encode_receipt(session_dir.name, seq, hash_of(seq, entry.hash), "2026-01-05T09:10:00Z",
                                          "receiver-1", sign)
        layout.receipt_path(session_dir, seq).write_bytes(receipt)


def _names(n: int, day: int = 5) -> str:
    return f"202601{day:02d}T0900{n:02d}Z-{n:06x}"


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    """A spool holding both kinds: sessions central proved it holds, and sessions it did not."""
    root = tmp_path / "spool"
    proven = _session(root, _names(1), LONG_AGO)
    _receipt_all(proven)
    _receipt_all(_session(root, _names(2), LONG_AGO), skip=2)  # one entry never receipted
    _receipt_all(_session(root, _names(3), LONG_AGO), sign=None)  # receipts without central's signature
    _receipt_all(_session(root, _names(4), LONG_AGO), sign=FORGER.sign)  # signed, by someone else
    # Signed by central, but for other bytes than the entry held here.
    _receipt_all(_session(root, _names(5), LONG_AGO), hash_of=lambda seq, digest: "0" * 64 if seq == 1 else digest)
    _receipt_all(_session(root, _names(6), LONG_AGO, closed=False))  # still open
    recent = _session(root, _names(7, day=28), NOW - dt.timedelta(days=1))
    _receipt_all(recent)
    unreceipted = _session(root, _names(8), LONG_AGO)
    assert unreceipted.is_dir()
    return root


def _pruner(spool: Spool, free: Callable[[], int] = lambda: 10**12, floor: int = 10**9,
            live: str | None = None) -> Pruner:
    return Pruner(spool, _receipt_ok, keep_days=30, floor_bytes=floor, free_bytes=free, live=lambda: live)


def test_only_sessions_central_signed_for_are_removed_after_their_age__DEVICE_CHECK(spool_dir: Path) -> None:
    spool = Spool(spool_dir)
    before = {p.name for p in spool_dir.iterdir()}
    pruned = _pruner(spool).run(now=NOW.timestamp())
    assert [p.session for p in pruned] == [_names(1)]
    assert pruned[0].why == "age" and pruned[0].bytes > 0
    assert {p.name for p in spool_dir.iterdir()} == before - {_names(1)}
    # Everything kept is whole: the pruner reads, it never touches what it keeps.
    for name in before - {_names(1)}:
        assert layout.entry_seqs(spool_dir / name)


def test_planted_and_forged_receipts_free_nothing__TAMPER_PROOF_IT(spool_dir: Path) -> None:
    spool = Spool(spool_dir)
    pruner = _pruner(spool, free=lambda: 0)  # even with the disk full
    kept = {_names(n) for n in (2, 3, 4, 5, 6, 8)}
    pruner.run(now=NOW.timestamp())
    assert kept <= {p.name for p in spool_dir.iterdir()}
    for n in (2, 3, 4, 5):
        assert pruner.unproven(_names(n)) is not None
    assert pruner.unproven(_names(2)) == "entry 2 has no readable receipt"  # the entry is named
    assert pruner.unproven(_names(4)) == "entry 0 has no receipt signed by central for it"


def test_low_free_space_removes_proven_sessions_oldest_first_until_the_floor__DEVICE_CHECK(
        spool_dir: Path) -> None:
    spool = Spool(spool_dir)
    extra = _session(spool_dir, _names(9, day=27), NOW - dt.timedelta(days=2))
    _receipt_all(extra)
    # The card is short of space until one more session has gone: the oldest proven young one goes, then it stops.
    free = {"bytes": 0}
    pruner = _pruner(spool, free=lambda: free["bytes"], floor=1)

    def count_removed() -> None:
        gone = {_names(1), _names(9, day=27), _names(7, day=28)} - {p.name for p in spool_dir.iterdir()}
        free["bytes"] = 1 if len(gone) >= 2 else 0

    pruned = pruner.run(now=NOW.timestamp(), beat=count_removed)
    assert [(p.session, p.why) for p in pruned] == [(_names(1), "age"), (_names(9, day=27), "space")]
    assert (spool_dir / _names(7, day=28)).is_dir()


def test_nothing_is_removed_without_centrals_key_or_while_live_or_pending__DEVICE_CHECK(spool_dir: Path) -> None:
    spool = Spool(spool_dir)
    assert Pruner(spool, None, 0, 10**15, lambda: 0, lambda: None).run(now=NOW.timestamp()) == []
    assert (spool_dir / _names(1)).is_dir()
    assert _pruner(spool, live=_names(1)).run(now=NOW.timestamp()) == []
    # An entry the spool still counts as pending keeps its session, whatever the receipts folder says.
    layout.receipt_path(spool_dir / _names(8), 0).write_bytes(b"{}")
    assert spool.has_pending(_names(8))
    assert _names(8) not in [p.session for p in _pruner(Spool(spool_dir), free=lambda: 0).run(now=NOW.timestamp())]


def test_a_removal_cut_short_is_finished_at_the_next_start__DEVICE_CHECK(spool_dir: Path) -> None:
    # A crash after the rename: the folder is out of the spool's sight, so the spool is consistent; the next
    # pruner removes the rest.
    doomed = spool_dir / (DOOMED_PREFIX + _names(1))
    shutil.move(spool_dir / _names(1), doomed)
    spool = Spool(spool_dir)
    assert not spool.has_pending(_names(1))
    _pruner(spool)
    assert not doomed.exists()


def test_media_no_receipted_entry_commits_keeps_its_session__DEVICE_CHECK(spool_dir: Path) -> None:
    # Crash recovery leaves a segment it could not seal in place (capture/leftovers.py): central never had it,
    # so every entry being receipted does not make the session safe to remove.
    for name in ("000099.ts", "000100.ts.part"):
        (spool_dir / _names(1) / layout.MEDIA / name).write_bytes(b"never sent")
        spool = Spool(spool_dir)
        assert _names(1) not in [p.session for p in _pruner(spool, free=lambda: 0).run(now=NOW.timestamp())]
        assert _pruner(spool).unproven(_names(1)) == f"media/{name} is in no receipted entry"
        (spool_dir / _names(1) / layout.MEDIA / name).unlink()
    assert [p.session for p in _pruner(Spool(spool_dir)).run(now=NOW.timestamp())] == [_names(1)]
