"""The device's outbox: every session's entries and media, until central has receipted them.

State is the files alone: an entry is pending while it has no receipt file. The index is built from a
directory scan at start and then kept in memory, so per-segment bookkeeping does not grow with the
spool. Nothing here deletes media: freeing space on receipt is a separate, explicit step.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Container, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capture import layout
from capture.durable import group_commit
from capture.errors import CaptureError
from capture.ledger import Appended, entry_hash, parse_entry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PendingItem:
    session: str
    seq: int


@dataclass(frozen=True)
class Backlog:
    entries: int
    bytes: int
    oldest_age_s: float | None


@dataclass(frozen=True)
class Deadline:
    """A recording not yet wholly receipted by central, against its upload deadline (UPLOAD-24H)."""

    session: str
    finished_at: float | None
    """When the session closed (epoch seconds); None while it is still being recorded."""
    pending_entries: int
    pending_bytes: int

    def hours_since_finished(self, now: float) -> float:
        return 0.0 if self.finished_at is None else (now - self.finished_at) / 3600


class Spool:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._pending: dict[str, dict[int, tuple[int, float]]] = {}
        """Session -> {seq: (media bytes, wall time written)} of entries without a receipt. Sessions and
        their entries are kept in the order they were made (the scan inserts in order, new entries arrive
        in order), so no listing is ever sorted again and the cost per segment does not grow with the spool."""
        self._finished: dict[str, float] = {}
        self._count = 0
        self._bytes = 0
        self._scan()

    def _scan(self) -> None:
        for session_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            if not layout.SESSION_ID.match(session_dir.name):
                continue
            receipted = {int(p.stem) for p in (session_dir / layout.RECEIPTS).glob("*.json") if p.stem.isdigit()}
            seqs = layout.entry_seqs(session_dir)
            for seq in seqs:
                if seq in receipted:
                    continue
                path = layout.entry_path(session_dir, seq)
                try:
                    entry: dict[str, Any] | None = parse_entry(path.read_bytes())
                except (CaptureError, OSError) as err:
                    # Kept, and still pending: central refuses it and `recorder verify` names it.
                    log.error("spool entry %s is unreadable: %s", path, err)
                    entry = None
                self._add(session_dir.name, seq, entry, path.stat().st_mtime if entry else time.time())
            if session_dir.name in self._pending and seqs and seqs[-1] in receipted:
                last = parse_entry(layout.entry_path(session_dir, seqs[-1]).read_bytes())
                self._note_finished(session_dir.name, last)

    def _add(self, session: str, seq: int, entry: dict[str, Any] | None, written: float) -> None:
        media = int(entry["body"].get("bytes") or 0) if entry and entry["kind"] == "segment" else 0
        self._pending.setdefault(session, {})[seq] = (media, written)
        self._count += 1
        self._bytes += media
        if entry is not None:
            self._note_finished(session, entry)

    def _note_finished(self, session: str, entry: dict[str, Any]) -> None:
        if entry["kind"] == "close":
            try:
                self._finished[session] = dt.datetime.fromisoformat(entry["time"]).timestamp()
            except ValueError:
                self._finished[session] = time.time()

    def session_dir(self, session: str) -> Path:
        if not layout.SESSION_ID.match(session):
            raise CaptureError(f"not a session id: {session!r}")
        return self.root / session

    def added(self, appended: Appended) -> None:
        """Ledger listener: a new entry waits for its receipt."""
        with self._changed:
            self._add(appended.entry["session"], appended.seq, appended.entry, time.time())
            self._changed.notify_all()

    def next_pending(self, limit: int, skip: Container[PendingItem], first: str | None = None) -> list[PendingItem]:
        """Up to `limit` pending entries not in `skip`: those of session `first` (the live one) before all
        others, then the oldest. The cost grows with the window, not with the spool."""
        out: list[PendingItem] = []
        with self._lock:
            order = ([first] if first in self._pending else []) + [s for s in self._pending if s != first]
            for session in order:
                for seq in self._pending[session]:
                    if len(out) >= limit:
                        return out
                    item = PendingItem(session, seq)
                    if item not in skip:
                        out.append(item)
        return out

    def load_entry(self, item: PendingItem) -> bytes:
        return layout.entry_path(self.session_dir(item.session), item.seq).read_bytes()

    def receipts(self, batch: Sequence[tuple[PendingItem, dict[str, Any]]]) -> list[bool]:
        """Keep central's receipts as proof of delivery, each that matches the entry held here (a list of
        which did), in one group commit: receipts come in bursts, and a flush each would pace the upload."""
        matched: list[bool] = []
        writes: dict[Path, bytes] = {}
        for item, receipt in batch:
            try:
                session_dir = self.session_dir(item.session)
                held = layout.entry_path(session_dir, item.seq).read_bytes()
                ok = receipt.get("entry_hash") == entry_hash(parse_entry(held))
            except (CaptureError, OSError):
                matched.append(False)
                continue
            matched.append(ok)
            kept = layout.receipt_path(session_dir, item.seq)
            if ok and kept not in writes and not kept.exists():
                # The first receipt is the proof of delivery time; a later duplicate must not move it.
                writes[kept] = json.dumps(receipt, sort_keys=True, ensure_ascii=False).encode()
        group_commit(self.root, list(writes.items()))
        with self._changed:
            for (item, _), ok in zip(batch, matched, strict=True):
                entries = self._pending.get(item.session, {})
                if ok and item.seq in entries:
                    media, _ = entries.pop(item.seq)
                    self._count -= 1
                    self._bytes -= media
                if ok and not entries:
                    self._pending.pop(item.session, None)
                    self._finished.pop(item.session, None)
            self._changed.notify_all()
        return matched

    def backlog(self) -> Backlog:
        with self._lock:
            first = next(iter(self._pending.values()), {})
            oldest = next(iter(first.values()), None)
            count, size = self._count, self._bytes
        return Backlog(count, size, None if oldest is None else time.time() - oldest[1])

    def deadlines(self) -> list[Deadline]:
        """Every recording with entries still unreceipted, oldest first."""
        with self._lock:
            return [Deadline(s, self._finished.get(s), len(e), sum(m for m, _ in e.values()))
                    for s, e in self._pending.items()]

    def wait_drained(self, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: not self._count, timeout)
