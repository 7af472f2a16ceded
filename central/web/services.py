"""What the web application works with, made once per process from central's configuration: the store, the
session index, the access audit and central's keys."""

from __future__ import annotations

import collections
import dataclasses
import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from django.conf import settings

from central.audit import AuditLog
from central.bookings import Bookings
from central.build import build_audit, build_bookings, build_retention, central_key
from central.config import CentralConfig
from central.index import SessionIndex
from central.retention import Retention
from central.store import FileStore
from central.web.playback import Ledger, read_ledger
from evidence.entry import Segment

REPORT_SECONDS = 60.0
SESSIONS_KEPT = 32


@dataclass
class _Kept:
    """What the pages and the player have learnt of one session; stored entries and written working copies
    never change, so it only grows."""

    ledger: Ledger
    viewable: set[str] = dataclasses.field(default_factory=set)
    """Segment files whose working copy is known to be written."""
    codecs: str | None = None
    report: tuple[int, float, Any] | None = None
    """(entries judged, when, the verification report)."""


@dataclass
class Services:
    config: CentralConfig
    store: FileStore
    index: SessionIndex
    audit: AuditLog
    central_key: X25519PrivateKey | None
    retention: Retention
    bookings: Bookings
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    banner_cache: tuple[float, list[dict[str, Any]]] | None = None
    _kept: collections.OrderedDict[tuple[str, str], _Kept] = dataclasses.field(
        default_factory=collections.OrderedDict)
    """The SESSIONS_KEPT sessions most recently asked about, each with what is known of it."""

    def _session(self, device: str, session: str) -> _Kept:
        """The session's record, its ledger brought up to date: a live page's player asks four times a
        second, and only the entries stored since its last question are read."""
        key = (device, session)
        with self._lock:
            kept = self._kept.get(key)
        ledger = read_ledger(self.store, device, session, self.central_key, kept.ledger if kept else None)
        with self._lock:
            kept = self._kept.get(key)
            if kept is None:
                kept = self._kept[key] = _Kept(ledger)
            kept.ledger = ledger
            self._kept.move_to_end(key)
            while len(self._kept) > SESSIONS_KEPT:
                self._kept.popitem(last=False)
        return kept

    def ledger(self, device: str, session: str) -> Ledger:
        return self._session(device, session).ledger

    def viewable(self, device: str, session: str) -> tuple[Ledger, list[Segment]]:
        """The ledger, and the segments that can be viewed now: one in the clear is stored with its entry, a
        sealed one once its working copy is written (each looked for until it is)."""
        kept = self._session(device, session)
        ledger = kept.ledger
        if ledger.opening is None or not ledger.opening.encrypted:
            return ledger, list(ledger.segments)
        for segment in ledger.segments:
            if segment.file not in kept.viewable and self.store.has_working_copy(device, session, segment.file):
                kept.viewable.add(segment.file)
        return ledger, [s for s in ledger.segments if s.file in kept.viewable]

    def codecs(self, device: str, session: str, find: Callable[[], str | None]) -> str | None:
        """The session's codecs string, found once (`find` gives None while it cannot tell yet); ask after
        `viewable`, which keeps the session."""
        with self._lock:
            kept = self._kept.get((device, session))
        if kept is None:  # asked about so long ago that it was let go: find it again, unkept
            return find()
        if kept.codecs is None:
            kept.codecs = find()
        return kept.codecs

    def report(self, device: str, session: str, make: Callable[[], Any]) -> Any:
        """The verification report of the session as stored now, made again when entries have arrived or after
        REPORT_SECONDS (it reads every segment through, about a second for an hour; a file changed on disk
        shows within that)."""
        kept = self._session(device, session)
        entries = len(kept.ledger.entries)
        if kept.report is not None and kept.report[0] == entries and time.monotonic() - kept.report[1] < REPORT_SECONDS:
            return kept.report[2]
        report = make()
        kept.report = (entries, time.monotonic(), report)
        return report


def build_services(cfg: CentralConfig, store_root: Path) -> Services:
    store = FileStore(store_root)
    key = central_key(cfg)
    audit = build_audit(cfg, store)
    index = SessionIndex(store, key)
    return Services(cfg, store, index, audit, key, build_retention(cfg, store, audit),
                    build_bookings(cfg, store, audit, index))


@functools.cache
def services() -> Services:
    recorder = settings.RECORDER
    return build_services(recorder["config"], recorder["store_root"])
