"""A room's bookings as central sends them to the room's device (ROOM, RECORD-FIELDS; PROTOCOL §14).

Central keeps each room's bookings and publishes, on the device's own topic, the whole set of the bookings
not yet over, signed by central's key under its own context, with a serial that grows with every change: a
change or a cancellation is a new set. The device takes a set only if it names the device, is signed by
central and has a serial above the one it holds, so a set for another device, a forged one and an old one
replayed are all refused (and logged). `parse_booking_set` is the only way bytes become a `BookingSet`:
central reads back what it signs, the device what it receives.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evidence.canonical import NotCanonical, canonical, read_object
from evidence.entry import Officer
from evidence.errors import EvidenceError
from evidence.keys import VerifyKey, verify_signature
from evidence.layout import DEVICE_ID
from evidence.reasons import RETENTION_CLASSES

BOOKINGS_VERSION = 1
SIGN_CONTEXT = b"room-recorder/bookings/v1\x00"
MAX_BOOKINGS_BYTES = 256 * 1024
MAX_BOOKINGS = 200
"""A room's bookings not yet over; a set holding more is refused (central sends the soonest)."""
BOOKING_ID = re.compile(r"[0-9a-f]{16}\Z")
MAX_TEXT = 2000
_TEXT = ("id", "room", "start", "end", "case", "matter", "act", "retention")
_FIELDS = {*_TEXT, "parties", "officers", "auto_start", "version"}
_SET_FIELDS = {"v", "device", "serial", "issued", "bookings", "sig"}


class MalformedBookings(EvidenceError):
    """Bytes that are not a well-formed, canonical booking set; the message names what is wrong."""


@dataclass(frozen=True)
class Booking:
    id: str
    """16 lowercase hex digits, chosen by central; the same through every change of the booking."""
    version: int
    """1 when made, one more at each change."""
    room: str
    start: dt.datetime
    end: dt.datetime
    """The expected end."""
    case: str
    matter: str
    act: str
    """The enforcement act (执法行为), e.g. 询问, 听证."""
    parties: tuple[str, ...]
    officers: tuple[Officer, ...]
    retention: str
    """The retention class the session is to have at least (RETENTION_CLASSES)."""
    auto_start: bool
    """Start the session at `start` without a button (pre-flight, then the notice, as after START)."""

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "room": self.room,
                "start": self.start.isoformat(timespec="seconds"), "end": self.end.isoformat(timespec="seconds"),
                "case": self.case, "matter": self.matter, "act": self.act, "parties": list(self.parties),
                "officers": [{"name": o.name, "certificate": o.certificate} for o in self.officers],
                "retention": self.retention, "auto_start": self.auto_start}


@dataclass(frozen=True)
class BookingSet:
    device: str
    serial: int
    """Grows with every set central signs for this device: a set with a serial not above the one held is old."""
    issued: dt.datetime
    bookings: tuple[Booking, ...]
    """Sorted by start."""
    sig: str
    raw: bytes
    signed_message: bytes

    def signed_by(self, key: VerifyKey) -> bool:
        return verify_signature(key, self.sig, self.signed_message)

    def current(self, now: dt.datetime, lead: dt.timedelta) -> Booking | None:
        """The booking a session started now belongs to: the one under way (the one that started last, if
        several are), else the next starting within `lead` (officers come in a little early). A booking under
        way wins over the next one in its lead: at 10:50, a session belongs to the 10:00–11:00 booking, not to
        the one at 11:00."""
        under_way = [b for b in self.bookings if b.start <= now < b.end]
        if under_way:
            return max(under_way, key=lambda b: b.start)
        soon = [b for b in self.bookings if now < b.start <= now + lead]
        return min(soon, key=lambda b: b.start) if soon else None

    def upcoming(self, now: dt.datetime) -> Booking | None:
        """The next booking that has not ended."""
        return next((b for b in self.bookings if b.end > now), None)


def _time(value: str, where: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError as err:
        raise MalformedBookings(f"{where} {value!r} is not an ISO 8601 time") from err
    if when.tzinfo is None:
        raise MalformedBookings(f"{where} {value!r} has no offset")
    return when


def _booking(value: Any, n: int) -> Booking:
    where = f"bookings[{n}]"
    if not isinstance(value, dict) or set(value) != _FIELDS:
        raise MalformedBookings(f"{where} must be an object of exactly {', '.join(sorted(_FIELDS))}")
    for key in _TEXT:
        if not isinstance(value[key], str) or len(value[key]) > MAX_TEXT:
            raise MalformedBookings(f"{where}.{key} must be a string of at most {MAX_TEXT} characters")
    if not BOOKING_ID.match(value["id"]):
        raise MalformedBookings(f"{where}.id must be 16 lowercase hex digits")
    version = value["version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise MalformedBookings(f"{where}.version must be an integer of at least 1")
    if value["retention"] not in RETENTION_CLASSES:
        raise MalformedBookings(f"{where}.retention must be one of {', '.join(RETENTION_CLASSES)}")
    if not isinstance(value["auto_start"], bool):
        raise MalformedBookings(f"{where}.auto_start must be true or false")
    parties = value["parties"]
    if not isinstance(parties, list) or not all(isinstance(p, str) and len(p) <= MAX_TEXT for p in parties):
        raise MalformedBookings(f"{where}.parties must be a list of strings")
    officers = value["officers"]
    if not isinstance(officers, list) or not all(
            isinstance(o, dict) and set(o) == {"name", "certificate"} and all(isinstance(v, str) for v in o.values())
            for o in officers):
        raise MalformedBookings(f"{where}.officers must be a list of {{name, certificate}} strings")
    start, end = _time(value["start"], f"{where}.start"), _time(value["end"], f"{where}.end")
    if end <= start:
        raise MalformedBookings(f"{where}: its end {value['end']} is not after its start {value['start']}")
    return Booking(value["id"], version, value["room"], start, end, value["case"], value["matter"], value["act"],
                   tuple(parties), tuple(Officer(o["name"], o["certificate"]) for o in officers),
                   value["retention"], value["auto_start"])


def parse_booking_set(data: bytes) -> BookingSet:
    """A booking set as PROTOCOL §14.2 gives it; MalformedBookings naming the first fault (the signature is
    checked by the caller, who holds central's key: `accept`)."""
    value = read_object(data, MAX_BOOKINGS_BYTES, "booking set", MalformedBookings)
    if set(value) != _SET_FIELDS:
        missing, extra = sorted(_SET_FIELDS - set(value)), sorted(set(value) - _SET_FIELDS)
        raise MalformedBookings(f"booking set fields differ: missing {missing}, unknown {extra}")
    if value["v"] != BOOKINGS_VERSION or isinstance(value["v"], bool):
        raise MalformedBookings(f"booking set version must be {BOOKINGS_VERSION}")
    if not isinstance(value["device"], str) or not DEVICE_ID.match(value["device"]):
        raise MalformedBookings("booking set 'device' is not a device id")
    serial = value["serial"]
    if not isinstance(serial, int) or isinstance(serial, bool) or serial < 1:
        raise MalformedBookings("booking set 'serial' must be an integer of at least 1")
    if not isinstance(value["sig"], str) or not isinstance(value["issued"], str):
        raise MalformedBookings("booking set 'sig' and 'issued' must be strings")
    listed = value["bookings"]
    if not isinstance(listed, list) or len(listed) > MAX_BOOKINGS:
        raise MalformedBookings(f"booking set 'bookings' must be a list of at most {MAX_BOOKINGS}")
    bookings = tuple(sorted((_booking(b, n) for n, b in enumerate(listed)), key=lambda b: (b.start, b.id)))
    if len({b.id for b in bookings}) != len(bookings):
        raise MalformedBookings("booking set names one booking twice")
    unsigned = {k: v for k, v in value.items() if k != "sig"}
    return BookingSet(value["device"], serial, _time(value["issued"], "booking set 'issued'"), bookings,
                      value["sig"], data, SIGN_CONTEXT + canonical(unsigned))


def make_booking_set(device: str, serial: int, issued: dt.datetime, bookings: Sequence[Booking],
                     sign: Callable[[bytes], str]) -> BookingSet:
    """The signed set of `bookings` for `device` (central's), read back so it is one a device takes."""
    unsigned = {"v": BOOKINGS_VERSION, "device": device, "serial": serial,
                "issued": issued.isoformat(timespec="milliseconds"), "bookings": [b.as_json() for b in bookings]}
    try:
        data = canonical({**unsigned, "sig": sign(SIGN_CONTEXT + canonical(unsigned))})
    except NotCanonical as err:
        raise MalformedBookings(f"booking set cannot be made: {err}") from err
    return parse_booking_set(data)


def booking_from_fields(fields: Mapping[str, Any]) -> Booking:
    """A booking from its fields as `Booking.as_json` writes them (central's store, its forms and commands),
    checked as a device checks it."""
    return _booking(dict(fields), 0)


def accept(data: bytes, device: str, central_key: VerifyKey | None, held_serial: int) -> BookingSet | None:
    """The device's one check of a set it received: the set, if it is newer than the one held; None if it is
    the one held again (a retained message delivered anew); MalformedBookings naming why it is refused."""
    found = parse_booking_set(data)
    if found.device != device:
        raise MalformedBookings(f"booking set is for device {found.device}, not this one ({device})")
    if central_key is None:
        raise MalformedBookings("booking set refused: device.central_signing_key is not set, so nothing can show "
                                "the set comes from central")
    if not found.signed_by(central_key):
        raise MalformedBookings("booking set is not signed by central's key (device.central_signing_key)")
    if found.serial == held_serial:
        return None
    if found.serial < held_serial:
        raise MalformedBookings(f"booking set serial {found.serial} is older than the one held ({held_serial}): "
                                "an old set sent again")
    return found
