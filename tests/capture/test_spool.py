"""The device's outbox: central's receipts are kept, a burst at a time, as proof of delivery (UPLOAD-24H)."""

from __future__ import annotations

import json
from pathlib import Path

from capture.spool import PendingItem, Spool
from evidence import layout
from evidence.entry import Entry
from hal.clock.sim import SimClock
from mqtt.protocol import Receipt, decode_receipt, encode_receipt
from provisioning.identity import DeviceIdentity
from tests.forge import open_session

SESSION = "20261122T080000Z-abcdef"


def _spool_with_entries(tmp_path: Path, count: int) -> tuple[Spool, list[Entry]]:
    spool = Spool(tmp_path / "spool")
    ledger = open_session(spool.root / SESSION, "SIM-0001", DeviceIdentity.load_or_create(tmp_path / "keys"),
                          SimClock("Asia/Shanghai"))
    ledger.subscribe(spool.added)  # after the open entry: only the events below are pending
    return spool, [ledger.append("event", {"name": f"mark {n}"}) for n in range(count)]


def _receipt(entry: Entry, stored_at: str, entry_hash: str | None = None) -> tuple[PendingItem, Receipt]:
    return PendingItem(SESSION, entry.seq), decode_receipt(encode_receipt(SESSION, entry.seq, entry_hash or entry.hash,
                                                                          stored_at, "receiver-1"))


def test_a_burst_of_receipts_is_kept_and_leaves_the_pending_set__UPLOAD_24H(tmp_path: Path) -> None:
    spool, appended = _spool_with_entries(tmp_path, 4)
    assert spool.backlog().entries == 4
    assert spool.receipts([_receipt(a, "t1") for a in appended[:3]]) == [True, True, True]
    assert spool.backlog().entries == 1
    for a in appended[:3]:
        assert json.loads(layout.receipt_path(spool.root / SESSION, a.seq).read_text())["stored_at"] == "t1"
    assert not layout.receipt_path(spool.root / SESSION, appended[3].seq).exists()


def test_only_the_first_receipt_is_kept_as_the_time_of_delivery__UPLOAD_24H(tmp_path: Path) -> None:
    spool, (first,) = _spool_with_entries(tmp_path, 1)
    # Twice in one burst (central answers each resend), then once more later: the first stays.
    assert spool.receipts([_receipt(first, "early"), _receipt(first, "later")]) == [True, True]
    assert spool.receipts([_receipt(first, "much later")]) == [True]
    kept = json.loads(layout.receipt_path(spool.root / SESSION, first.seq).read_text())
    assert kept["stored_at"] == "early"


def test_receipts_that_match_nothing_held_are_not_kept(tmp_path: Path) -> None:
    spool, (held,) = _spool_with_entries(tmp_path, 1)
    item, wrong_hash = _receipt(held, "t", entry_hash="0" * 64)
    unknown_seq = (PendingItem(SESSION, 99), wrong_hash)
    not_a_session = (PendingItem("../../etc", 0), wrong_hash)
    assert spool.receipts([not_a_session, (item, wrong_hash), unknown_seq]) == [False, False, False]
    assert spool.backlog().entries == 1
    assert not (spool.root / SESSION / layout.RECEIPTS / f"{held.seq:08d}.json").exists()
