"""Fleet health at central: what each device last said of itself on its status topic (PROTOCOL §4.4), and
since when it has been online or offline (its Last Will says when it vanished).

A status is monitoring, not evidence: it is not signed, and nothing here decides anything about a
recording. It is read strictly all the same (a bounded, strict JSON object naming the device of its topic,
with the known fields of the known types), so a hostile message cannot mislead the table or crash the
receiver; unknown fields are ignored, as PROTOCOL §4.4 asks of consumers.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from central.errors import Refused
from evidence.canonical import read_object

if TYPE_CHECKING:
    from central.store import CentralStore

MAX_STATUS = 64 * 1024
"""A status is about 600 bytes; one naming many late sessions or alerts stays far below this."""

_FIELDS: dict[str, tuple[type, ...]] = {
    "state": (str,), "session": (str, type(None)), "backlog_entries": (int,), "backlog_bytes": (int,),
    "oldest_unreceipted_s": (int, float, type(None)), "free_bytes": (int,), "clock_synced": (bool,),
    "last_fault": (str, type(None)), "upload_alerts": (list,), "alerts": (list,), "time": (str,),
}


@dataclass(frozen=True)
class DeviceStatus:
    device: str
    online: bool
    fields: dict[str, Any]
    """The known fields the device sent, each of its type (PROTOCOL §4.4); absent ones are left out."""
    received: str
    """When central received it (UTC, ISO 8601)."""
    since: str
    """When central first saw the device in this online state (UTC, ISO 8601)."""

    def as_json(self) -> dict[str, Any]:
        return {"device": self.device, "online": self.online, "since": self.since, "received": self.received,
                **self.fields}


@dataclass(frozen=True)
class Presence:
    """A device went online or offline at `since` (as central saw it): one line of its presence history, kept
    so the statistics can tell how much of a period it was online (central/stats.py)."""

    since: dt.datetime
    online: bool


def parse_status(device: str, payload: bytes) -> tuple[bool, dict[str, Any]]:
    """A status message from `device`'s topic: whether it is online, and its known fields. Refused if it is not
    a strict JSON object of at most MAX_STATUS bytes naming `device`, with `online` a boolean."""
    value = read_object(payload, MAX_STATUS, f"status from {device}", Refused, exact=False)
    if value.get("device") != device:
        raise Refused(f"status on {device}'s topic names device {value.get('device')!r}")
    online = value.get("online")
    if not isinstance(online, bool):
        raise Refused(f"status from {device}: 'online' must be true or false")
    fields = {}
    for key, types in _FIELDS.items():
        if key in value and isinstance(value[key], types) and not (isinstance(value[key], bool) and bool not in types):
            fields[key] = value[key]
    said = value.get("bookings")
    if isinstance(said, dict):
        # Which set the device holds (PROTOCOL §14), and no more: the next booking it names stays out of the
        # fleet's records, which technicians read.
        held = {k: said[k] for k in ("serial", "held") if type(said.get(k)) is int}
        if held:
            fields["bookings"] = held
    return online, fields


def updated(previous: DeviceStatus | None, device: str, online: bool, fields: dict[str, Any],
            now: dt.datetime) -> DeviceStatus:
    """The device's status after this message: `since` moves only when it goes online or offline. An offline
    message (the Last Will) says nothing else, so what the device last said of itself is kept with it."""
    stamp = now.isoformat(timespec="seconds")
    since = previous.since if previous is not None and previous.online == online else stamp
    if not online and not fields and previous is not None:
        fields = previous.fields
    return DeviceStatus(device, online, fields, stamp, since)


def _selftest_summary(raw: bytes | None) -> dict[str, Any] | None:
    """The kept self-test report in short: when, whether it passed, what failed."""
    from mqtt import protocol
    from mqtt.errors import ProtocolError

    if raw is None:
        return None
    try:
        report = protocol.decode_selftest(raw)
    except ProtocolError:
        return None
    return {"time": report.time, "passed": report.passed, "failed": [c.name for c in report.checks if not c.ok]}


def fleet_rows(store: CentralStore) -> list[dict[str, Any]]:
    """Each enrolled device (and any other with an alert kept), as its latest status says, with its alerts
    waiting at central, its last self-test, its certificate's expiry and any key change waiting: the rows of
    `recorder central devices` and of the web application's fleet page."""
    waiting: dict[str, int] = {}
    for kept in store.alerts():
        if kept.handled is None:
            waiting[kept.alert.device] = waiting.get(kept.alert.device, 0) + 1
    enrolled = set(store.enrolled())
    rows: list[dict[str, Any]] = []
    for device in sorted(enrolled | set(waiting)):
        status = store.device_status(device)
        row: dict[str, Any] = {"device": device, "enrolled": device in enrolled,
                               "alerts_at_central": waiting.get(device, 0)}
        row.update(status.as_json() if status is not None else {"online": None})
        row["selftest"] = _selftest_summary(store.latest_selftest(device))
        current = [k for k in store.device_keys(device) if k.get("retired") is None]
        row["certificate_expires"] = current[-1].get("certificate_expires") if current else None
        pending = store.pending_key(device)
        row["key_change_pending"] = str(pending["key"])[:12] if pending is not None else None
        rows.append(row)
    return rows
