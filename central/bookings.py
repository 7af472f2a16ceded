"""A room's bookings at central (ROOM, RECORD-FIELDS; PROTOCOL §14.4): made, changed and cancelled here (the web
application's rooms page, `recorder central book`), kept per device in the store, and signed as the next set
for the device to take (evidence/booking.py); the receiver publishes each new set on the device's topic.

A change is the whole of one step under the store's bookings lock, so the web application's threads and a
command in another process never lose one another's change nor sign two sets under one serial: read the
device's record, check the change against every rule, sign the next set (serial + 1: the bookings whose end
is still to come, cancelled ones left out), write the access audit's `booking` record, then write the record
durably. The audit comes first: a change it does not show must never reach a room.

The record (`bookings/<device>.json`, FORMAT §2.3) keeps every booking ever made for the room, cancelled ones
too, each with who made, changed and cancelled it and when, the last serial signed and that set's bytes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from central.audit import AuditLog
from central.errors import CentralError
from central.index import SessionIndex, SessionRow
from central.register import Actor
from central.store import CentralStore
from evidence import layout
from evidence.audit import MAX_RECORD_BYTES
from evidence.booking import (
    BOOKING_ID,
    MAX_BOOKINGS,
    MAX_BOOKINGS_BYTES,
    MAX_TEXT,
    Booking,
    BookingSet,
    MalformedBookings,
    booking_from_fields,
    make_booking_set,
    parse_booking_set,
)
from evidence.canonical import canonical
from evidence.entry import Officer
from evidence.errors import StorageFault
from evidence.reasons import RETENTION_CLASSES

RECORD_VERSION = 1
MADE, CHANGED, CANCELLED = "made", "changed", "cancelled"
AUDIT_ROOM = 2048
"""Bytes of an audit record besides its detail (sequence, hashes, time, actor, address, signature), with room
to spare: a booking whose detail leaves less than this under the record's limit is refused before anything
is written."""
DECLINED = "declined"
"""The close reason of a session declined before anything was recorded (FORMAT §4.6)."""
GAP_MINUTES = 5
"""A booked stretch with nothing recorded shorter than this is not called a gap (officers start a few minutes
late; a session matched to the booking covers it anyway)."""


class BookingRefused(CentralError):
    """A booking, change or cancellation the rules do not allow; the message names the field and what to do."""


@dataclass(frozen=True)
class Fields:
    """What a person says of a booking (its id, version and room are central's)."""

    start: dt.datetime
    end: dt.datetime
    case: str = ""
    matter: str = ""
    act: str = ""
    parties: tuple[str, ...] = ()
    officers: tuple[Officer, ...] = ()
    retention: str = RETENTION_CLASSES[0]
    auto_start: bool = False

    @classmethod
    def of(cls, booking: Booking) -> Fields:
        return cls(booking.start, booking.end, booking.case, booking.matter, booking.act, booking.parties,
                   booking.officers, booking.retention, booking.auto_start)


@dataclass(frozen=True)
class Step:
    """One change of a booking: made, changed or cancelled, by whom and when."""

    change: str
    version: int
    by: str
    role: str
    at: str
    """ISO 8601 with offset, in the agency's zone."""

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Kept:
    """A booking as central keeps it: its latest version and how it came to be."""

    booking: Booking
    history: tuple[Step, ...]

    @property
    def cancelled(self) -> Step | None:
        last = self.history[-1]
        return last if last.change == CANCELLED else None

    def state(self, now: dt.datetime) -> str:
        """`cancelled`, `over`, `under way` or `booked`."""
        if self.cancelled is not None:
            return "cancelled"
        if self.booking.end <= now:
            return "over"
        return "under way" if self.booking.start <= now else "booked"

    @property
    def made(self) -> Step:
        return self.history[0]

    def active(self) -> bool:
        return self.cancelled is None

    def pending(self, now: dt.datetime) -> bool:
        """Whether a set signed now holds it: not cancelled and its expected end still to come."""
        return self.cancelled is None and self.booking.end > now

    def as_json(self) -> dict[str, Any]:
        return {"booking": self.booking.as_json(), "history": [s.as_json() for s in self.history]}


@dataclass(frozen=True)
class RoomBookings:
    """Everything central keeps of one room's bookings."""

    device: str
    serial: int
    """The serial of the last set signed for the device; 0 before the first."""
    signed: bytes | None
    """That set, as signed and published."""
    bookings: tuple[Kept, ...]
    """Sorted by start."""

    def find(self, booking_id: str) -> Kept | None:
        return next((k for k in self.bookings if k.booking.id == booking_id), None)

    def as_json(self) -> dict[str, Any]:
        return {"v": RECORD_VERSION, "device": self.device, "serial": self.serial,
                "signed_set": None if self.signed is None else self.signed.decode("utf-8"),
                "bookings": [k.as_json() for k in self.bookings]}


@dataclass(frozen=True)
class Room:
    """A room as central knows it: its device, and the unit and name its enrollment (or, failing that, its latest
    session) gave."""

    device: str
    unit: str
    name: str


def _damaged(device: str, why: str) -> CentralError:
    return CentralError(f"the bookings kept for {device} cannot be read ({why}); restore bookings/{device}.json "
                        "from a backup: nothing is changed until then")


def _step(value: Any, device: str) -> Step:
    if not isinstance(value, dict) or set(value) != {"change", "version", "by", "role", "at"}:
        raise _damaged(device, "a history step is not {change, version, by, role, at}")
    if value["change"] not in (MADE, CHANGED, CANCELLED) or not isinstance(value["version"], int):
        raise _damaged(device, f"a history step says {value['change']!r} of version {value['version']!r}")
    return Step(value["change"], value["version"], str(value["by"]), str(value["role"]), str(value["at"]))


def parse_record(device: str, data: bytes | None) -> RoomBookings:
    """A device's bookings record as the store holds it (None: no booking was ever made for it)."""
    if data is None:
        return RoomBookings(device, 0, None, ())
    try:
        value = json.loads(data)
    except ValueError as err:
        raise _damaged(device, f"not JSON: {err}") from err
    if (not isinstance(value, dict) or value.get("v") != RECORD_VERSION or value.get("device") != device
            or not isinstance(value.get("serial"), int) or not isinstance(value.get("bookings"), list)):
        raise _damaged(device, f"not a version {RECORD_VERSION} record of this device's bookings")
    signed = value.get("signed_set")
    kept = []
    for item in value["bookings"]:
        if not isinstance(item, dict) or not isinstance(item.get("history"), list) or not item["history"]:
            raise _damaged(device, "a booking without its history")
        try:
            booking = booking_from_fields(item.get("booking") or {})
        except MalformedBookings as err:
            raise _damaged(device, str(err)) from err
        kept.append(Kept(booking, tuple(_step(s, device) for s in item["history"])))
    return RoomBookings(device, value["serial"], signed.encode("utf-8") if isinstance(signed, str) else None,
                        tuple(sorted(kept, key=lambda k: (k.booking.start, k.booking.id))))


def latest_set(store: CentralStore, device: str) -> bytes | None:
    """The last set signed for `device`, as the receiver publishes it; None if none was ever signed."""
    return parse_record(device, store.read_bookings(device)).signed


def _text(value: str, field: str) -> str:
    value = value.strip()
    if len(value) > MAX_TEXT:
        raise BookingRefused(f"{field}: {len(value)} characters, at most {MAX_TEXT}")
    if not value.isprintable():
        raise BookingRefused(f"{field}: holds a control character (a line break, a tab…); write it on one line")
    return value


def checked(fields: Fields, zone: dt.tzinfo) -> Fields:
    """`fields` tidied (text trimmed, times to the second in the agency's zone), or BookingRefused naming the
    first field that breaks a rule that needs nothing but the fields."""
    for name in ("start", "end"):
        when = getattr(fields, name)
        if when.tzinfo is None or when.utcoffset() is None:
            raise BookingRefused(f"{name}: {when.isoformat()} has no offset; give one, or read it in the agency's zone")
    start, end = (t.astimezone(zone).replace(microsecond=0) for t in (fields.start, fields.end))
    if end <= start:
        raise BookingRefused(f"end: {end.isoformat()} is not after start {start.isoformat()}")
    if fields.retention not in RETENTION_CLASSES:
        raise BookingRefused(f"retention: {fields.retention!r} is not a retention class "
                             f"({', '.join(RETENTION_CLASSES)})")
    parties = tuple(_text(p, f"parties[{n}]") for n, p in enumerate(fields.parties))
    if any(not p for p in parties):
        raise BookingRefused("parties: an empty name; leave it out")
    officers = []
    for n, officer in enumerate(fields.officers):
        name, certificate = _text(officer.name, f"officers[{n}].name"), _text(officer.certificate,
                                                                              f"officers[{n}].certificate")
        if not name or not certificate:
            raise BookingRefused(f"officers[{n}]: give the officer's name and certificate number (NAME:CERT)")
        officers.append(Officer(name, certificate))
    return Fields(start, end, _text(fields.case, "case"), _text(fields.matter, "matter"), _text(fields.act, "act"),
                  parties, tuple(officers), fields.retention, bool(fields.auto_start))


def _when(t: dt.datetime) -> str:
    return t.isoformat(sep=" ", timespec="minutes")


class Bookings:
    """Make, change and cancel bookings (the one rule book of them), signed with central's key and audited."""

    def __init__(self, store: CentralStore, sign: Callable[[bytes], str], audit: AuditLog, zone: dt.tzinfo,
                 index: SessionIndex | None = None) -> None:
        self.store = store
        self.sign = sign
        self.audit = audit
        self.zone = zone
        self.index = index
        """Names the rooms of devices enrolled by hand (no enrollment record) after their latest session."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(self.zone)

    def room(self, device: str) -> Room:
        """The device's unit and room name: its enrollment record's (a box enrolled with a token), else its latest
        indexed session's, else unknown (the device id for a name)."""
        return self._named(device, self.index.latest_rooms() if self.index is not None else {})

    def rooms(self) -> list[Room]:
        """Every enrolled device as a room, by unit and name."""
        latest = self.index.latest_rooms() if self.index is not None else {}
        return sorted((self._named(d, latest) for d in self.store.enrolled()), key=lambda r: (r.unit, r.name, r.device))

    def _named(self, device: str, latest: Mapping[str, tuple[str, str]]) -> Room:
        keys = self.store.device_keys(device)
        told = keys[-1].get("room") if keys else None
        if isinstance(told, dict) and isinstance(told.get("unit"), str) and isinstance(told.get("room"), str):
            return Room(device, told["unit"], told["room"] or device)
        if device in latest:
            return Room(device, latest[device][0], latest[device][1] or device)
        return Room(device, "", device)

    def of(self, device: str) -> RoomBookings:
        if not layout.DEVICE_ID.match(device):
            raise BookingRefused(f"device: {device!r} is not a device id")
        return parse_record(device, self.store.read_bookings(device))

    def every(self) -> list[RoomBookings]:
        """Every room that has bookings, by device."""
        return [self.of(device) for device in self.store.booked_devices()]

    def find(self, booking_id: str) -> tuple[RoomBookings, Kept]:
        if not BOOKING_ID.match(booking_id):
            raise BookingRefused(f"booking: {booking_id!r} is not a booking id (16 hex digits)")
        for room in self.every():
            kept = room.find(booking_id)
            if kept is not None:
                return room, kept
        raise BookingRefused(f"booking: no booking {booking_id}; `recorder central bookings` lists them")

    def make(self, device: str, fields: Fields, actor: Actor, now: dt.datetime | None = None, by: str = "") -> Kept:
        """A new booking of the room `device`; BookingRefused naming the field that breaks a rule. `actor` is who
        is audited as doing it (an account, or `cli:<user>`), `by` the person it is recorded as made by (default:
        the actor)."""
        if not layout.DEVICE_ID.match(device):
            raise BookingRefused(f"device: {device!r} is not a device id")
        with self.store.bookings_locked():
            if device not in self.store.enrolled():
                raise BookingRefused(f"device: {device} is not enrolled at central (or was revoked); "
                                     "`recorder central devices` lists the rooms")
            room = self.of(device)
            at = now or self.now()
            booking = self._booking(room, secrets.token_hex(8), 1, fields, at, None)
            kept = Kept(booking, (Step(MADE, 1, by or actor.name, actor.role, at.isoformat(timespec="seconds")),))
            return self._commit(room, kept, actor, at)

    def change(self, booking_id: str, fields: Fields, actor: Actor, now: dt.datetime | None = None,
               by: str = "") -> Kept:
        """The booking with `fields` as its next version."""
        with self.store.bookings_locked():
            room, old = self.find(booking_id)
            at = now or self.now()
            self._still_open(old, at, "changed")
            booking = self._booking(room, booking_id, old.booking.version + 1, fields, at, old)
            if dataclasses.replace(booking, version=old.booking.version) == old.booking:
                raise BookingRefused(f"booking {booking_id}: nothing to change (every field is as it is)")
            step = Step(CHANGED, booking.version, by or actor.name, actor.role, at.isoformat(timespec="seconds"))
            return self._commit(room, Kept(booking, (*old.history, step)), actor, at)

    def cancel(self, booking_id: str, actor: Actor, now: dt.datetime | None = None, by: str = "") -> Kept:
        """The booking cancelled: left out of the room's next set, and kept here for the record."""
        with self.store.bookings_locked():
            room, old = self.find(booking_id)
            at = now or self.now()
            self._still_open(old, at, "cancelled")
            step = Step(CANCELLED, old.booking.version, by or actor.name, actor.role,
                        at.isoformat(timespec="seconds"))
            return self._commit(room, Kept(old.booking, (*old.history, step)), actor, at)

    @staticmethod
    def _still_open(kept: Kept, now: dt.datetime, what: str) -> None:
        if kept.cancelled is not None:
            raise BookingRefused(f"booking {kept.booking.id} was cancelled by {kept.cancelled.by} at "
                                 f"{kept.cancelled.at}; it cannot be {what}: make a new one")
        if kept.booking.end <= now:
            raise BookingRefused(f"booking {kept.booking.id} ended at {kept.booking.end.isoformat()}; a booking "
                                 f"that is over stays as it was and cannot be {what}")

    def _booking(self, room: RoomBookings, booking_id: str, version: int, fields: Fields, now: dt.datetime,
                 old: Kept | None) -> Booking:
        f = checked(fields, self.zone)
        if f.end <= now:
            raise BookingRefused(f"end: {_when(f.end)} is already past; a booking is for time still to come")
        for other in room.bookings:
            b = other.booking
            if b.id != booking_id and other.active() and b.start < f.end and f.start < b.end:
                what = b.matter or b.case or b.act or "no matter given"
                raise BookingRefused(f"start/end: {_when(f.start)} to {_when(f.end)} overlaps booking {b.id} of the "
                                     f"same room ({_when(b.start.astimezone(self.zone))} to "
                                     f"{_when(b.end.astimezone(self.zone))}, {what}); move one of them")
        pending = [k for k in room.bookings if k.pending(now) and k.booking.id != booking_id]
        if len(pending) >= MAX_BOOKINGS:
            raise BookingRefused(f"device: {room.device} already has {len(pending)} bookings not yet over, the most "
                                 f"one set may hold ({MAX_BOOKINGS}); wait until some are over, or cancel some")
        name = old.booking.room if old is not None else self.room(room.device).name
        return Booking(booking_id, version, name, f.start, f.end, f.case, f.matter, f.act, f.parties, f.officers,
                       f.retention, f.auto_start)

    def _commit(self, room: RoomBookings, kept: Kept, actor: Actor, now: dt.datetime) -> Kept:
        """Sign the room's next set with `kept` in it (or out, cancelled), audit the change, keep the record.
        Called under the bookings lock."""
        others = [k for k in room.bookings if k.booking.id != kept.booking.id]
        bookings = tuple(sorted((*others, kept), key=lambda k: (k.booking.start, k.booking.id)))
        serial = room.serial + 1
        shown = [k.booking for k in bookings if k.pending(now)]
        try:
            signed = make_booking_set(room.device, serial, now, shown, self.sign)
        except MalformedBookings as err:
            size = len(canonical({"bookings": [b.as_json() for b in shown]}))
            raise BookingRefused(f"the room's bookings not yet over would be about {size:,} bytes, over the "
                                 f"{MAX_BOOKINGS_BYTES:,} a set may hold ({err}); shorten the parties or matters, "
                                 "or cancel some bookings") from err
        detail = audit_detail(kept, serial)
        size = len(canonical(detail))
        if size > MAX_RECORD_BYTES - AUDIT_ROOM:
            raise BookingRefused(f"the booking's text takes {size:,} bytes, more than the access audit's record holds "
                                 f"({MAX_RECORD_BYTES - AUDIT_ROOM:,}); shorten the parties, matter or case")
        audited = self.audit.append(actor.name, actor.role, "booking", room.device, detail, actor.address)
        record = RoomBookings(room.device, serial, signed.raw, bookings)
        try:
            self.store.write_bookings(room.device, json.dumps(record.as_json(), ensure_ascii=False, indent=1).encode()
                                      + b"\n")
        except StorageFault as err:
            raise CentralError(f"booking {kept.booking.id}: the change could not be kept ({err}), so it did not happen "
                               f"and nothing reaches the room; the access audit's record {audited.seq} stands for it. "
                               "Free the store's disk and make the change again") from err
        return kept


def audit_detail(kept: Kept, serial: int) -> dict[str, Any]:
    """The access audit's `booking` record (FORMAT §12.1): the booking, its version, the change, who it is recorded
    as made by, the set's serial and every field as the change leaves it."""
    fields = {k: v for k, v in kept.booking.as_json().items() if k not in ("id", "version")}
    step = kept.history[-1]
    return {"booking": kept.booking.id, "version": kept.booking.version, "change": step.change, "by": step.by,
            "serial": serial, **fields}


def signed_set(room: RoomBookings) -> BookingSet | None:
    """The last set signed for the room, read back."""
    return None if room.signed is None else parse_booking_set(room.signed)


# The room's day ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Gap:
    kind: str
    """"unrecorded": booked, with nothing recorded; "unbooked": recorded without a booking."""
    start: dt.datetime
    end: dt.datetime
    booking: str = ""
    """The booking (unrecorded) or "" ."""
    session: str = ""
    """The session (unbooked) or ""."""


@dataclass(frozen=True)
class RoomDay:
    room: Room
    bookings: tuple[Kept, ...]
    """The room's bookings that touch the day, cancelled ones too."""
    sessions: tuple[SessionRow, ...]
    gaps: tuple[Gap, ...]
    matched: Mapping[str, tuple[str, ...]]
    """Booking id -> the sessions recorded under it (by the `open` entry's booking id)."""


def _span(row: SessionRow, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.fromtimestamp(row.opened_ts, dt.UTC)
    if row.closed_ts is not None:
        return start, dt.datetime.fromtimestamp(row.closed_ts, dt.UTC)
    # Still open (or its close not received yet): recorded up to now, as far as anyone can tell.
    return start, max(start, now)


def _minus(spans: Iterable[tuple[dt.datetime, dt.datetime]], cut: Sequence[tuple[dt.datetime, dt.datetime]],
           ) -> list[tuple[dt.datetime, dt.datetime]]:
    """The parts of `spans` outside every span of `cut`."""
    left = list(spans)
    for c0, c1 in cut:
        pieces = []
        for s0, s1 in left:
            if c1 <= s0 or s1 <= c0:
                pieces.append((s0, s1))
                continue
            if s0 < c0:
                pieces.append((s0, c0))
            if c1 < s1:
                pieces.append((c1, s1))
        left = pieces
    return left


def room_day(room: Room, kept: Sequence[Kept], sessions: Sequence[SessionRow], day_start: dt.datetime,
             day_end: dt.datetime, now: dt.datetime) -> RoomDay:
    """One room's day: its bookings and sessions in [day_start, day_end), and the gaps between them: booked
    time gone by with nothing recorded (GAP_MINUTES or more), and sessions recorded without a booking."""
    bookings = tuple(sorted((k for k in kept if k.booking.start < day_end and day_start < k.booking.end),
                            key=lambda k: (k.booking.start, k.booking.id)))
    matched: dict[str, list[str]] = {}
    for row in sessions:
        if row.booking is not None:
            matched.setdefault(row.booking.id, []).append(row.session)
    # A declined session (NO-RECORD) recorded nothing: its booking's time is a gap, and it is no recording.
    recording = [r for r in sessions if r.close_reason != DECLINED]
    recorded = [_span(r, now) for r in recording]
    gaps: list[Gap] = []
    for k in bookings:
        if not k.active():
            continue
        passed = (max(k.booking.start, day_start), min(k.booking.end, day_end, now))
        if passed[0] >= passed[1]:
            continue
        for g0, g1 in _minus([passed], recorded):
            if g1 - g0 >= dt.timedelta(minutes=GAP_MINUTES):
                gaps.append(Gap("unrecorded", g0, g1, booking=k.booking.id))
    # A session started under a booking cancelled since was booked when it was recorded.
    booked = {k.booking.id for k in kept}
    for row in recording:
        if row.booking is None or row.booking.id not in booked:
            s0, s1 = _span(row, now)
            gaps.append(Gap("unbooked", max(s0, day_start), min(s1, day_end), session=row.session))
    tz = day_start.tzinfo
    shown = (dataclasses.replace(g, start=g.start.astimezone(tz), end=g.end.astimezone(tz)) for g in gaps)
    return RoomDay(room, bookings, tuple(sessions), tuple(sorted(shown, key=lambda g: g.start)),
                   {k: tuple(v) for k, v in matched.items()})
