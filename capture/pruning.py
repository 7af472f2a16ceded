"""Freeing the spool of what central has proven it holds, and only that (DEVICE-CHECK, TAMPER-PROOF-IT).

At about 0.9 GB per recorded hour a card fills in weeks, and a full card refuses every session. So a closed
session is removed from the device once every one of its entries has central's *signed* receipt kept beside
it, the receipt names that entry's hash, and either the session closed `keep_days` ago or free space has
fallen below the floor (then the oldest proven sessions go first, until the floor is reached again).

Nothing else is ever removed: not an open or live session, not one with a single entry unreceipted, not one
whose receipts are unsigned (a device that ran without central's key), forged or for other bytes. Whether a
kept receipt proves delivery is decided by the wire protocol's rules (`mqtt.protocol.proves_delivery`),
passed in as `receipt_ok`, and checked again from the files at the moment of removal: a receipt file planted
in the spool cannot free anything.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from capture.spool import Spool
from evidence import layout
from evidence.durable import fsync_dir
from evidence.entry import CLOSE, parse_entry
from evidence.errors import MalformedEntry

log = logging.getLogger(__name__)

DAY = 86400.0
DOOMED_PREFIX = ".pruning-"
"""A session being removed is first renamed to this prefix and its id: whole under its name or not there."""

ReceiptCheck = Callable[[bytes, str, int, str], bool]
"""(kept receipt bytes, session, seq, entry hash) -> central signed a receipt for exactly that entry."""


@dataclass(frozen=True)
class Pruned:
    session: str
    closed: str
    """The close entry's time, as the device wrote it."""
    bytes: int
    why: str
    """"age" or "space"."""


@dataclass(frozen=True)
class ClosedSession:
    session: str
    closed_at: float
    closed: str
    entries: int


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


class Pruner:
    def __init__(self, spool: Spool, receipt_ok: ReceiptCheck | None, keep_days: float, floor_bytes: int,
                 free_bytes: Callable[[], int], live: Callable[[], str | None]) -> None:
        self._spool = spool
        self._receipt_ok = receipt_ok
        self._keep_s = keep_days * DAY
        self._floor = floor_bytes
        self._free = free_bytes
        self._live = live
        self._closed: dict[str, ClosedSession] = {}
        self._unproven: dict[str, int] = {}
        """Sessions found not wholly proven, with their count of receipt files then: looked at again only when
        that changes (a session of hours has thousands of receipts to check)."""
        if receipt_ok is None:
            log.warning("spool pruning is off: without central's signing key (device.central_signing_key) no "
                        "receipt proves delivery, so nothing recorded is ever removed from this device")
        self._finish_interrupted()

    def _finish_interrupted(self) -> None:
        """A removal cut short by a crash left its renamed folder: it was proven then, so finish it."""
        if not self._spool.root.is_dir():
            return
        for doomed in self._spool.root.glob(DOOMED_PREFIX + "*"):
            if layout.SESSION_ID.match(doomed.name[len(DOOMED_PREFIX):]):
                shutil.rmtree(doomed, ignore_errors=True)

    def closed_sessions(self) -> list[ClosedSession]:
        """Closed sessions with no entry pending in the spool, oldest close first."""
        live = self._live()
        found: list[ClosedSession] = []
        for session_dir in self._spool.root.iterdir():
            session = session_dir.name
            if not layout.SESSION_ID.match(session) or session == live or self._spool.has_pending(session):
                continue
            known = self._closed.get(session)
            if known is not None:
                found.append(known)
                continue
            seqs = layout.entry_seqs(session_dir)
            if not seqs:
                continue
            try:
                last = parse_entry(layout.entry_path(session_dir, seqs[-1]).read_bytes())
                closed_at = dt.datetime.fromisoformat(last.time).timestamp()
            except (MalformedEntry, OSError, ValueError):
                continue  # not provable; left for `recorder verify` to name
            if last.kind == CLOSE:
                # Nothing follows a close (the rules refuse it), so what is found here stays true: each run
                # after the first reads only the sessions closed since.
                self._closed[session] = ClosedSession(session, closed_at, last.time, len(seqs))
                found.append(self._closed[session])
        return sorted(found, key=lambda c: (c.closed_at, c.session))

    def unproven(self, session: str) -> str | None:
        """What in `session`'s folder central's signed receipts do not prove delivered, in words (None: all is
        proven). Entries must run 0, 1, 2, … without a gap, each with a receipt that verifies, and every file
        in the folder must be one of them, a receipt, or a media file a receipted entry commits: a segment
        left unsealed by crash recovery (capture/leftovers.py) never reached central, so it keeps the session
        here."""
        if self._receipt_ok is None:
            return "no central signing key to check receipts with"
        session_dir = self._spool.session_dir(session)
        known: set[Path] = set()
        for expected, seq in enumerate(layout.entry_seqs(session_dir)):
            if seq != expected:
                return f"entry {expected} is missing"
            entry_path, receipt_path = layout.entry_path(session_dir, seq), layout.receipt_path(session_dir, seq)
            try:
                entry = parse_entry(entry_path.read_bytes())
                receipt = receipt_path.read_bytes()
            except (MalformedEntry, OSError):
                return f"entry {seq} has no readable receipt"
            if not self._receipt_ok(receipt, session, seq, entry.hash):
                return f"entry {seq} has no receipt signed by central for it"
            known |= {entry_path, receipt_path}
            if entry.segment is not None:
                known.add(layout.media_path(session_dir, entry.segment.file))
        for path in sorted(session_dir.rglob("*")):
            if path.is_file() and path not in known:
                return f"{path.relative_to(session_dir)} is in no receipted entry"
        return None

    def run(self, now: float | None = None, beat: Callable[[], None] = lambda: None) -> list[Pruned]:
        """Remove what may go now; returns what was removed, oldest first."""
        if self._receipt_ok is None:
            return []
        now = time.time() if now is None else now
        removed: list[Pruned] = []
        for closed in self.closed_sessions():
            beat()
            aged = now - closed.closed_at >= self._keep_s
            short = self._free() < self._floor
            if not aged and not short:
                break  # sorted by close: the rest are younger still
            if not self._proven(closed.session):
                continue
            try:
                size = self._remove(closed.session)
                self._closed.pop(closed.session, None)
            except OSError as err:
                log.error("cannot remove session %s from the spool: %s", closed.session, err)
                break
            pruned = Pruned(closed.session, closed.closed, size, "age" if aged else "space")
            log.info("removed session %s (closed %s, %d entries, %.1f MB) from the spool: central's signed receipt "
                     "proves every entry delivered; %s", closed.session, closed.closed, closed.entries, size / 1e6,
                     "older than spool.keep_receipted_days" if aged else "free space below spool's floor")
            removed.append(pruned)
        return removed

    def _proven(self, session: str) -> bool:
        receipts_dir = self._spool.session_dir(session) / layout.RECEIPTS
        try:
            receipts = len(os.listdir(receipts_dir))
        except OSError:
            receipts = 0
        if self._unproven.get(session) == receipts:
            return False
        missing = self.unproven(session)
        if missing is None:
            self._unproven.pop(session, None)
            return True
        if session not in self._unproven:
            log.info("session %s stays on the device: %s", session, missing)
        self._unproven[session] = receipts
        return False

    def _remove(self, session: str) -> int:
        source = self._spool.session_dir(session)
        size = _tree_bytes(source)
        doomed = self._spool.root / (DOOMED_PREFIX + session)
        os.rename(source, doomed)
        fsync_dir(self._spool.root)
        shutil.rmtree(doomed)
        fsync_dir(self._spool.root)
        return size
