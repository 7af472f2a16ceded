"""The device's outbox: every session's entries and media, until central has receipted them.

State is the files alone: an entry is pending while it has no receipt file. The index is built from a
directory scan at start and then kept in memory, so per-segment bookkeeping does not grow with the
spool. Nothing here deletes media: freeing space on receipt is a separate, explicit step.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capture import layout
from capture.durable import atomic_write
from capture.errors import CaptureError
from capture.ledger import Appended, entry_hash, parse_entry

log = logging.getLogger(__name__)


@dataclass(frozen=True, order=True)
class PendingItem:
    session: str
    seq: int


@dataclass(frozen=True)
class Backlog:
    entries: int
    bytes: int
    oldest_age_s: float | None


class Spool:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._pending: dict[PendingItem, tuple[int, float]] = {}
        """Pending entry -> (media bytes it carries, wall time it was written)."""
        self._scan()

    def _scan(self) -> None:
        for session_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            if not layout.SESSION_ID.match(session_dir.name):
                continue
            receipted = {int(p.stem) for p in (session_dir / layout.RECEIPTS).glob("*.json") if p.stem.isdigit()}
            for seq in layout.entry_seqs(session_dir):
                if seq in receipted:
                    continue
                path = layout.entry_path(session_dir, seq)
                try:
                    media = self._media_bytes(parse_entry(path.read_bytes()))
                except CaptureError as err:
                    # Kept, and still pending: central refuses it and `recorder verify` names it.
                    log.error("spool entry %s is unreadable: %s", path, err)
                    media = 0
                self._pending[PendingItem(session_dir.name, seq)] = (media, path.stat().st_mtime)

    @staticmethod
    def _media_bytes(entry: dict[str, Any]) -> int:
        return int(entry["body"].get("bytes", 0)) if entry["kind"] == "segment" else 0

    def session_dir(self, session: str) -> Path:
        if not layout.SESSION_ID.match(session):
            raise CaptureError(f"not a session id: {session!r}")
        return self.root / session

    def added(self, appended: Appended) -> None:
        """Ledger listener: a new entry waits for its receipt."""
        item = PendingItem(appended.entry["session"], appended.seq)
        with self._changed:
            self._pending[item] = (self._media_bytes(appended.entry), time.time())
            self._changed.notify_all()

    def pending(self) -> list[PendingItem]:
        with self._lock:
            return sorted(self._pending)

    def load_entry(self, item: PendingItem) -> bytes:
        return layout.entry_path(self.session_dir(item.session), item.seq).read_bytes()

    def receipt(self, item: PendingItem, receipt: dict[str, Any]) -> bool:
        """Keep central's receipt as proof of delivery, if it matches the entry we hold."""
        session_dir = self.session_dir(item.session)
        path = layout.entry_path(session_dir, item.seq)
        if not path.exists():
            return False
        if receipt.get("entry_hash") != entry_hash(parse_entry(path.read_bytes())):
            return False
        kept = layout.receipt_path(session_dir, item.seq)
        if not kept.exists():
            # The first receipt is the proof of delivery time; a later duplicate must not move it.
            atomic_write(kept, json.dumps(receipt, sort_keys=True, ensure_ascii=False).encode())
        with self._changed:
            self._pending.pop(item, None)
            self._changed.notify_all()
        return True

    def backlog(self) -> Backlog:
        with self._lock:
            values = list(self._pending.values())
        oldest = min((written for _, written in values), default=None)
        return Backlog(len(values), sum(b for b, _ in values), None if oldest is None else time.time() - oldest)

    def wait_drained(self, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: not self._pending, timeout)
