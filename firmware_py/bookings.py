"""The room's bookings as the device holds them (ROOM, RECORD-FIELDS; PROTOCOL §14.3).

Central sends the whole signed set of the room's bookings on the device's own topic, retained; the device
takes a set only when `evidence.booking.accept` does (its own id, central's signature, a newer serial) and
keeps it, so bookings work off-line and survive a restart. The set is kept as the bytes central signed and
read back with `parse_booking_set` and `accept` at every start, so what the device uses is always what
central signed. Beside it the cache remembers which bookings have had their session (started by START, by
the booking's automatic start, or declined), so an automatic start never happens twice for one booking,
across restarts too.

Kept in tinydb, with a storage that replaces its file atomically (write a temporary file, flush, fsync,
rename, fsync the folder): tinydb's own JSONStorage rewrites its file in place, which a power cut can tear.
A file that cannot be read back is moved aside (`bookings.json.bad-<time>`) and reported, never silently
dropped: the device then holds no set until central's retained set comes again.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.storages import Storage
from tinydb.table import Document

from evidence.booking import Booking, BookingSet, MalformedBookings, accept, parse_booking_set
from evidence.durable import atomic_write, commit_rename
from evidence.entry import BookingRef
from evidence.errors import StorageFault
from evidence.keys import VerifyKey
from firmware_py.errors import ServiceError

log = logging.getLogger(__name__)

HELD, USED = "held", "used"
"""The cache's tables, each of one document (id 1, so each change is one write of the file): the set held (its
bytes and serial), and the bookings that have had their session (`marks`: booking id -> how)."""
ONLY = 1
STARTED, AUTO_STARTED, DECLINED, OPEN_AT_START = "started", "auto_started", "declined", "open_at_start"
"""How a booking came to have its session: START pressed under it, its automatic start, a session declined
under it, or a session already open when it was due to start automatically."""


class CacheUnreadable(ServiceError):
    """The booking cache's file is not what this module writes."""


class AtomicJSONStorage(Storage):
    """tinydb's storage in one JSON file, replaced whole at every write (evidence.durable.atomic_write): a
    crash leaves the old file or the new one, never a torn one."""

    def __init__(self, path: str) -> None:
        self._path = Path(path)

    def read(self) -> dict[str, dict[str, Any]] | None:
        try:
            data = self._path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise CacheUnreadable(f"{self._path}: cannot read it: {err.strerror or err}") from err
        try:
            value = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            raise CacheUnreadable(f"{self._path}: not the JSON this device writes ({err})") from err
        if not isinstance(value, dict) or not all(isinstance(t, dict) for t in value.values()):
            raise CacheUnreadable(f"{self._path}: not a tinydb file (an object of tables)")
        return value

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        atomic_write(self._path, json.dumps(data, ensure_ascii=False, sort_keys=True).encode())


def booking_ref(booking: Booking) -> BookingRef:
    """What a session's `open` entry names of its booking (FORMAT §4.2 `booking`)."""
    return BookingRef(booking.id, booking.version, booking.act, booking.retention, booking.start, booking.end)


def _booking_summary(booking: Booking, zone: dt.tzinfo | None, names: bool) -> dict[str, Any]:
    start, end = booking.start.astimezone(zone), booking.end.astimezone(zone)
    return {"id": booking.id, "version": booking.version, "room": booking.room,
            "start": start.isoformat(timespec="minutes"), "end": end.isoformat(timespec="minutes"),
            **({"case": booking.case, "matter": booking.matter} if names else {}), "act": booking.act,
            "auto_start": booking.auto_start}


def summary(held: BookingSet | None, now: dt.datetime, zone: dt.tzinfo | None = None,
            names: bool = True) -> dict[str, Any]:
    """The held set in short: serial, how many bookings, and the next one not yet over; its case and matter
    only with `names` (`recorder status` on the box), not in the status the box publishes and leaves on disk."""
    upcoming = held.upcoming(now) if held is not None else None
    return {"serial": held.serial if held is not None else 0,
            "held": len(held.bookings) if held is not None else 0,
            "next": _booking_summary(upcoming, zone, names) if upcoming is not None else None}


def read_held(path: Path) -> BookingSet | None:
    """The set the cache at `path` holds, read without changing anything (for `recorder status`); None if it
    holds none. CacheUnreadable if the file cannot be read back."""
    if not path.exists():
        return None
    tables = AtomicJSONStorage(str(path)).read() or {}
    return _held_from(tables.get(HELD, {}), path)


def _held_from(table: Mapping[str, Any], path: Path) -> BookingSet | None:
    docs = list(table.values())
    if not docs:
        return None
    doc = docs[0]
    if len(docs) != 1 or not isinstance(doc, dict) or not isinstance(doc.get("raw"), str):
        raise CacheUnreadable(f"{path}: its '{HELD}' table is not one set's bytes")
    try:
        return parse_booking_set(doc["raw"].encode("utf-8"))
    except MalformedBookings as err:
        raise CacheUnreadable(f"{path}: the set held does not parse: {err}") from err


class BookingCache:
    def __init__(self, path: Path, device: str, central_key: VerifyKey | None) -> None:
        self._path = path
        self._device = device
        self._key = central_key
        self._lock = threading.Condition()
        self._pending: BookingSet | None = None
        """A set taken on the network thread, not yet kept (the room thread keeps it: `commit`)."""
        self.refused = 0
        """Sets refused since the service started."""
        self.problem: str | None = None
        """What was wrong with the cache's file at start (it was moved aside), or with keeping a set."""
        self.held: BookingSet | None = None
        self._used: dict[str, str] = {}
        """Booking id -> how it had its session."""
        self._db = self._open()

    # ---- start -------------------------------------------------------------------------------------
    def _open(self) -> TinyDB:
        try:
            tables = AtomicJSONStorage(str(self._path)).read() or {}
            self.held = self._checked(_held_from(tables.get(HELD, {}), self._path))
            doc = tables.get(USED, {}).get(str(ONLY), {})
            marks = doc.get("marks", {}) if isinstance(doc, dict) else None
            if not isinstance(marks, dict):
                raise CacheUnreadable(f"{self._path}: its '{USED}' table is not the marks this device writes")
            self._used = {k: v for k, v in marks.items() if isinstance(v, str)}
        except (CacheUnreadable, MalformedBookings) as err:
            # Moved out of the way: an empty cache, until central's retained set comes again.
            self._set_aside(str(err))
        return TinyDB(str(self._path), storage=AtomicJSONStorage)

    def _checked(self, found: BookingSet | None) -> BookingSet | None:
        """The set held, checked again as it was when taken: a set that no longer passes (another device's
        file, a changed central key) is not used."""
        if found is None:
            return None
        accept(found.raw, self._device, self._key, 0)
        return found

    def _set_aside(self, why: str) -> None:
        aside = self._path.with_name(f"{self._path.name}.bad-{time.strftime('%Y%m%dT%H%M%S')}")
        try:
            commit_rename(self._path, aside)
        except StorageFault as err:
            why = f"{why}; it could not be moved aside either: {err}"
            aside = self._path
        self.problem = f"booking cache {self._path} could not be read back, moved to {aside.name}: {why}"
        log.error("%s; no bookings are held until central sends the set again", self.problem)
        self.held, self._used = None, {}

    # ---- taking a set ----------------------------------------------------------------------------
    @property
    def serial(self) -> int:
        with self._lock:
            return self._newest_serial()

    def _newest_serial(self) -> int:
        newest = self._pending or self.held
        return newest.serial if newest is not None else 0

    def receive(self, payload: bytes) -> None:
        """A set as it came on the device's bookings topic (on the MQTT client's network thread): checked at
        once, and if taken, handed to `commit`; a refused set is logged with the reason and counted."""
        with self._lock:
            held = self._newest_serial()
        try:
            found = accept(payload, self._device, self._key, held)
        except MalformedBookings as err:
            with self._lock:
                self.refused += 1
            log.warning("refused a booking set: %s; the set held (serial %d) stays", err, held)
            return
        if found is None:
            log.debug("booking set %d again (a retained message delivered anew): nothing to do", held)
            return
        with self._lock:
            if self._pending is None or found.serial > self._pending.serial:
                self._pending = found
            self._lock.notify_all()

    def wait(self, timeout: float) -> bool:
        """Whether a set is waiting for `commit`, waiting up to `timeout` seconds for one."""
        with self._lock:
            return self._lock.wait_for(lambda: self._pending is not None, timeout)

    def commit(self) -> BookingSet | None:
        """Keep the set taken last (durably, before it is used); the set, or None if none was waiting."""
        with self._lock:
            found, self._pending = self._pending, None
            if found is None or (self.held is not None and found.serial <= self.held.serial):
                return None
            # Marks of bookings no longer in the set go: such a booking is over or cancelled, never started.
            ids = {b.id for b in found.bookings}
            self._used = {k: v for k, v in self._used.items() if k in ids}
            self.held = found
            try:
                # The set first: a crash before the marks are pruned leaves marks of bookings gone, which is
                # harmless, never a booking without its mark.
                self._db.table(HELD).upsert(Document({"raw": found.raw.decode("utf-8"), "serial": found.serial},
                                                     doc_id=ONLY))
                self._write_used()
            except StorageFault as err:
                self.problem = f"booking set {found.serial} is used but not kept on disk: {err}"
                log.error("%s", self.problem)
            self._lock.notify_all()
        log.info("booking set %d taken: %d booking(s)", found.serial, len(found.bookings))
        return found

    def _write_used(self) -> None:
        self._db.table(USED).upsert(Document({"marks": dict(sorted(self._used.items()))}, doc_id=ONLY))

    def wait_serial(self, serial: int, timeout: float) -> bool:
        """Whether the set with `serial` (or a newer one) is held, waiting up to `timeout` seconds (tests, the
        rig and the benchmark)."""
        with self._lock:
            return self._lock.wait_for(lambda: self.held is not None and self.held.serial >= serial, timeout)

    # ---- using it --------------------------------------------------------------------------------
    def current(self, now: dt.datetime, lead: dt.timedelta) -> Booking | None:
        """The booking a session started now belongs to (PROTOCOL §14.3), if any."""
        with self._lock:
            return self.held.current(now, lead) if self.held is not None else None

    def find(self, booking_id: str) -> Booking | None:
        with self._lock:
            held = self.held
        return next((b for b in held.bookings if b.id == booking_id), None) if held is not None else None

    def due(self, now: dt.datetime) -> list[Booking]:
        """The bookings that ask for an automatic start, are under way and have not had their session."""
        with self._lock:
            if self.held is None:
                return []
            return [b for b in self.held.bookings
                    if b.auto_start and b.start <= now < b.end and b.id not in self._used]

    def next_start(self, now: dt.datetime) -> dt.datetime | None:
        """When the next automatic start not yet due is."""
        with self._lock:
            if self.held is None:
                return None
            return min((b.start for b in self.held.bookings
                        if b.auto_start and b.start > now and b.id not in self._used), default=None)

    def used(self, booking_id: str) -> str | None:
        """How the booking had its session (STARTED, AUTO_STARTED, DECLINED, OPEN_AT_START); None if not yet."""
        with self._lock:
            return self._used.get(booking_id)

    def mark(self, booking: Booking, how: str) -> None:
        """The booking has had its session (`how`): it is never started automatically again, across restarts
        too. Kept on disk before it returns, as far as the disk allows."""
        with self._lock:
            if booking.id in self._used:
                return
            self._used[booking.id] = how
            try:
                self._write_used()
            except StorageFault as err:
                log.error("booking %s %s: not noted on disk (%s); noted until the service stops", booking.id, how,
                          err)

    def summary(self, now: dt.datetime, zone: dt.tzinfo | None = None) -> dict[str, Any]:
        """For the status the device publishes: no case or matter (the status is for watching the fleet)."""
        with self._lock:
            held, refused, problem = self.held, self.refused, self.problem
        return {**summary(held, now, zone, names=False), "refused": refused, "problem": problem}

    def close(self) -> None:
        with self._lock:
            self._db.close()
