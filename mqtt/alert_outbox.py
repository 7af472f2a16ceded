"""The device's alerts waiting for central (PROTOCOL §4.5): each is sent again every `resend_after` seconds
until central acknowledges it.

Held in memory first, so a full disk (often the very cause of the alert) cannot stop it from going out, and
kept in `alerts/` in the state folder when the disk takes it, so one not yet acknowledged is sent again after
a restart. An acknowledged alert's file is renamed `<id>.acked.json`, never deleted.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from evidence.alert import Alert, MalformedAlert, parse_alert
from evidence.durable import atomic_write, commit_rename
from evidence.errors import StorageFault

log = logging.getLogger(__name__)


class AlertOutbox:
    def __init__(self, folder: Path, resend_after: float) -> None:
        self._folder = folder
        self._resend_after = resend_after
        self._lock = threading.Lock()
        self._open: dict[str, Alert] = {}
        self._sent: dict[str, float] = {}
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            if path.name.endswith(".acked.json"):
                continue
            try:
                alert = parse_alert(path.read_bytes())
            except (OSError, MalformedAlert) as err:
                log.error("alert %s cannot be read, not sent: %s", path, err)
                continue
            self._open[alert.id] = alert

    def add(self, alert: Alert) -> None:
        # The file first: an acknowledgement that comes back at once then finds it to mark.
        try:
            self._folder.mkdir(parents=True, exist_ok=True)
            atomic_write(self._folder / f"{alert.id}.json", alert.raw)
        except (OSError, StorageFault) as err:
            log.error("alert %s kept in memory only (it is sent all the same): %s", alert.id, err)
        with self._lock:
            self._open[alert.id] = alert

    def due(self) -> list[Alert]:
        """The alerts to send now (each marked sent)."""
        now = time.monotonic()
        with self._lock:
            due = [a for a in self._open.values() if now - self._sent.get(a.id, -1e9) >= self._resend_after]
            for alert in due:
                self._sent[alert.id] = now
        return due

    def acknowledged(self, alert_id: str) -> bool:
        """Central has it; False if no such alert is waiting (a duplicate or a stray acknowledgement)."""
        with self._lock:
            alert = self._open.pop(alert_id, None)
            self._sent.pop(alert_id, None)
        if alert is None:
            return False
        path = self._folder / f"{alert_id}.json"
        try:
            if path.exists():
                commit_rename(path, self._folder / f"{alert_id}.acked.json")
        except StorageFault as err:
            log.warning("alert %s acknowledged, but its file stays as it was: %s", alert_id, err)
        log.info("central acknowledged alert %s", alert_id)
        return True

    def waiting(self) -> list[Alert]:
        with self._lock:
            return list(self._open.values())
