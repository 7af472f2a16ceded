"""The device's outbox: every session's entries and media, until central has receipted them.

State is the files alone: an entry is pending while it has no receipt file. The index is built from a
directory scan at start (each pending entry parsed once) and then kept in memory, fed by the ledger with
the entries it writes, so per-segment bookkeeping does not grow with the spool and no entry is parsed
again on its way out. Nothing here deletes media: freeing space on receipt is a separate, explicit step.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from capture.errors import CaptureError
from evidence import layout
from evidence.durable import group_commit
from evidence.entry import CLOSE, Entry, parse_entry
from evidence.errors import MalformedEntry

log = logging.getLogger(__name__)


class Receipt(Protocol):
    """Central's receipt for one entry, as the wire protocol decoded it (mqtt.protocol.Receipt)."""

    @property
    def entry_hash(self) -> str: ...

    @property
    def raw(self) -> bytes: ...


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
class PendingRecording:
    """A recording not yet wholly receipted by central, for its upload deadline (UPLOAD-24H)."""

    session: str
    finished_at: float | None
    """When the session closed (epoch seconds); None while it is still being recorded."""
    pending_entries: int
    pending_bytes: int


@dataclass(frozen=True)
class Media:
    """The segment file an entry commits, as the entry records it."""

    file: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class _Pending:
    """What the spool keeps in memory of an entry waiting for its receipt (a few hundred bytes, not the entry:
    a backlog of days is hundreds of thousands of them)."""

    written: float
    hash: str | None
    """The entry's hash, which central's receipt must name; None for an entry file that could not be read or
    parsed at start (kept, and still pending)."""
    media: Media | None

    @classmethod
    def of(cls, entry: Entry, written: float) -> _Pending:
        segment = entry.segment
        return cls(written, entry.hash, None if segment is None else Media(segment.file, segment.sha256,
                                                                           segment.bytes))

    @property
    def media_bytes(self) -> int:
        return self.media.bytes if self.media is not None else 0


@dataclass(frozen=True)
class Outgoing:
    """What the uploader sends for one pending entry: its bytes and, for a segment, the file it commits."""

    data: bytes
    media: Media | None
    path: Path | None
    """Where the segment file is."""


class Spool:
    def __init__(self, root: Path, create: bool = True) -> None:
        self.root = root
        if create:
            root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._pending: dict[str, dict[int, _Pending]] = {}
        """Session -> {seq: pending entry} without a receipt. Sessions and their entries are kept in the order
        they were made (the scan inserts in order, new entries arrive in order), so no listing is ever sorted
        again and the cost per segment does not grow with the spool."""
        self._finished: dict[str, float] = {}
        self.delivered_listeners: list[Callable[[str], None]] = []
        """Called with a session's id when its last pending entry has been receipted."""
        self._count = 0
        self._bytes = 0
        if root.is_dir():
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
                    entry = parse_entry(path.read_bytes())
                except (MalformedEntry, OSError) as err:
                    # Kept, and still pending: central refuses it and `recorder verify` names it.
                    log.error("spool entry %s is unreadable: %s", path, err)
                    self._add(session_dir.name, seq, _Pending(time.time(), None, None))
                    continue
                self._add(session_dir.name, seq, _Pending.of(entry, path.stat().st_mtime))
                self._note_finished(session_dir.name, entry)
            if session_dir.name in self._pending and seqs and seqs[-1] in receipted:
                try:
                    self._note_finished(session_dir.name, parse_entry(
                        layout.entry_path(session_dir, seqs[-1]).read_bytes()))
                except (MalformedEntry, OSError) as err:
                    log.error("spool entry %s/%d is unreadable: %s", session_dir.name, seqs[-1], err)

    def _add(self, session: str, seq: int, pending: _Pending) -> None:
        self._pending.setdefault(session, {})[seq] = pending
        self._count += 1
        self._bytes += pending.media_bytes

    def _note_finished(self, session: str, entry: Entry) -> None:
        if entry.kind == CLOSE:
            try:
                self._finished[session] = dt.datetime.fromisoformat(entry.time).timestamp()
            except ValueError:
                self._finished[session] = time.time()

    def session_dir(self, session: str) -> Path:
        if not layout.SESSION_ID.match(session):
            raise CaptureError(f"not a session id: {session!r}")
        return self.root / session

    def added(self, entry: Entry) -> None:
        """Ledger listener: a new entry waits for its receipt."""
        with self._changed:
            self._add(entry.session, entry.seq, _Pending.of(entry, time.time()))
            self._note_finished(entry.session, entry)
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

    def outgoing(self, item: PendingItem) -> Outgoing:
        """The entry's bytes as stored, and its segment file; raises MalformedEntry or OSError for an entry
        damaged on disk since it was written (it stays pending)."""
        session_dir = self.session_dir(item.session)
        data = layout.entry_path(session_dir, item.seq).read_bytes()
        with self._lock:
            pending = self._pending.get(item.session, {}).get(item.seq)
        if pending is None or pending.hash is None:
            pending = _Pending.of(parse_entry(data), time.time())  # unreadable at start: read it again now
        media = pending.media
        return Outgoing(data, media, None if media is None else layout.media_path(session_dir, media.file))

    def _entry_hash(self, item: PendingItem) -> str:
        with self._lock:
            pending = self._pending.get(item.session, {}).get(item.seq)
        if pending is not None and pending.hash is not None:
            return pending.hash
        # Not pending (a duplicate receipt), or unreadable at start: read it now.
        return parse_entry(layout.entry_path(self.session_dir(item.session), item.seq).read_bytes()).hash

    def receipts(self, batch: Sequence[tuple[PendingItem, Receipt]]) -> list[bool]:
        """Keep central's receipts as proof of delivery, each that matches the entry held here (a list of
        which did), in one group commit: receipts come in bursts, and a flush each would pace the upload."""
        matched: list[bool] = []
        writes: dict[Path, bytes] = {}
        for item, receipt in batch:
            try:
                ok = receipt.entry_hash == self._entry_hash(item)
            except (CaptureError, MalformedEntry, OSError):
                matched.append(False)
                continue
            matched.append(ok)
            kept = layout.receipt_path(self.session_dir(item.session), item.seq)
            if ok and kept not in writes and not kept.exists():
                # The first receipt is the proof of delivery time; a later duplicate must not move it.
                writes[kept] = receipt.raw
        group_commit(self.root, list(writes.items()))
        delivered = []
        with self._changed:
            for (item, _), ok in zip(batch, matched, strict=True):
                entries = self._pending.get(item.session, {})
                if ok and item.seq in entries:
                    pending = entries.pop(item.seq)
                    self._count -= 1
                    self._bytes -= pending.media_bytes
                if ok and not entries and self._pending.pop(item.session, None) is not None:
                    self._finished.pop(item.session, None)
                    delivered.append(item.session)
            self._changed.notify_all()
        for session in delivered:
            for listener in self.delivered_listeners:
                listener(session)
        return matched

    def has_pending(self, session: str) -> bool:
        """Whether any entry of `session` still waits for central's receipt."""
        with self._lock:
            return session in self._pending

    def backlog(self) -> Backlog:
        with self._lock:
            first = next(iter(self._pending.values()), {})
            oldest = next(iter(first.values()), None)
            count, size = self._count, self._bytes
        return Backlog(count, size, None if oldest is None else time.time() - oldest.written)

    def recordings(self) -> list[PendingRecording]:
        """Every recording with entries still unreceipted, oldest first."""
        with self._lock:
            return [PendingRecording(s, self._finished.get(s), len(e), sum(p.media_bytes for p in e.values()))
                    for s, e in self._pending.items()]

    def wait_drained(self, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: not self._count, timeout)
