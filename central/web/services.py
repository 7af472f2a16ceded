"""What the web application works with, made once per process from central's configuration: the store, the
session index, the access audit and central's keys."""

from __future__ import annotations

import collections
import dataclasses
import functools
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from django.conf import settings

from central.audit import AUDIT_FILE, AuditLog
from central.build import central_key
from central.config import CentralConfig
from central.errors import CentralError
from central.index import SessionIndex
from central.store import FileStore
from central.web.playback import Ledger, read_ledger
from provisioning.central_key import load_signing_key

REPORT_SECONDS = 60.0
LEDGERS = 32


@dataclass
class Services:
    config: CentralConfig
    store: FileStore
    index: SessionIndex
    audit: AuditLog
    central_key: X25519PrivateKey | None
    _reports: dict[tuple[str, str, int], tuple[float, Any]]
    _lock: threading.Lock
    banner_cache: tuple[float, list[dict[str, Any]]] | None = None
    _ledgers: collections.OrderedDict[tuple[str, str], Ledger] = dataclasses.field(
        default_factory=collections.OrderedDict)
    codecs: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)
    """Each session's codecs string, as its first segment gives it."""

    def ledger(self, device: str, session: str) -> Ledger:
        """The session's ledger as stored so far: a live page's player asks every second, and only the entries
        stored since its last question are read (the most recently asked LEDGERS sessions are kept)."""
        key = (device, session)
        with self._lock:
            known = self._ledgers.get(key)
        ledger = read_ledger(self.store, device, session, self.central_key, known)
        with self._lock:
            self._ledgers[key] = ledger
            self._ledgers.move_to_end(key)
            while len(self._ledgers) > LEDGERS:
                self._ledgers.popitem(last=False)
        return ledger

    def report(self, device: str, session: str, entries: int, make: Any) -> Any:
        """The verification report of a session with this many entries, made again after REPORT_SECONDS (it
        reads every segment through, about a second for an hour; a file changed on disk shows within that)."""
        key = (device, session, entries)
        with self._lock:
            kept = self._reports.get(key)
            if kept is not None and time.monotonic() - kept[0] < REPORT_SECONDS:
                return kept[1]
        report = make()
        with self._lock:
            self._reports[key] = (time.monotonic(), report)
        return report


def build_services(cfg: CentralConfig, store_root: Path) -> Services:
    if not cfg.receiver.signing_key_file:
        raise CentralError("receiver.signing_key_file is empty: the web application signs its access audit with "
                           "central's signing key; make one with `recorder central key --out K --signing-out S`")
    identity = load_signing_key(Path(cfg.receiver.signing_key_file))
    store = FileStore(store_root)
    key = central_key(cfg)
    audit = AuditLog(store.state_file(AUDIT_FILE), identity.sign, identity.public_key_b64, cfg.central.zone)
    return Services(cfg, store, SessionIndex(store, key), audit, key, {}, threading.Lock())


@functools.cache
def services() -> Services:
    recorder = settings.RECORDER
    return build_services(recorder["config"], recorder["store_root"])
