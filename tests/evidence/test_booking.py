"""The booking set as PROTOCOL §14 gives it (ROOM, RECORD-FIELDS): made and read back, refused when it is not
central's, not this device's or older than the one held, and the booking a session started now belongs to."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from evidence.booking import MalformedBookings, accept, booking_from_fields, make_booking_set
from evidence.keys import VerifyKey
from provisioning.identity import DeviceIdentity

CENTRAL = DeviceIdentity(Ed25519PrivateKey.generate())
OTHER = DeviceIdentity(Ed25519PrivateKey.generate())
ZONE = dt.timezone(dt.timedelta(hours=8))
TEN = dt.datetime(2026, 12, 1, 10, tzinfo=ZONE)


def booking(hours: tuple[int, int], n: int) -> dict[str, object]:
    start, end = TEN.replace(hour=hours[0]), TEN.replace(hour=hours[1])
    return {"id": f"{n:016x}", "version": 1, "room": "询问室一", "start": start.isoformat(), "end": end.isoformat(),
            "case": "案一", "matter": f"询问{n}", "act": "询问", "parties": ["张三"],
            "officers": [{"name": "李警官", "certificate": "0001"}], "retention": "evidence", "auto_start": False}


def test_a_set_is_taken_only_if_central_signed_it_for_this_device_and_it_is_newer__ROOM() -> None:
    bookings = [booking_from_fields(booking((10, 11), 1))]
    made = make_booking_set("GD-1", 3, TEN, bookings, CENTRAL.sign)
    key = CENTRAL.public_key
    assert accept(made.raw, "GD-1", key, 2) == made
    assert accept(made.raw, "GD-1", key, 3) is None  # the held set again: a retained message delivered anew
    for data, device, central, held, why in (
            (made.raw, "GD-1", key, 4, "older than the one held"),
            (made.raw, "GD-2", key, 0, "for device GD-1"),
            (made.raw, "GD-1", None, 0, "central_signing_key is not set"),
            (make_booking_set("GD-1", 5, TEN, bookings, OTHER.sign).raw, "GD-1", key, 0, "not signed by central"),
            (made.raw.replace("询问1".encode(), "询问9".encode()), "GD-1", key, 0, "not signed by central")):
        with pytest.raises(MalformedBookings, match=why):
            accept(data, device, central if central is None else VerifyKey(central.raw), held)


def test_a_session_belongs_to_the_booking_under_way_before_the_next_ones_lead__RECORD_FIELDS() -> None:
    first, second = booking((10, 11), 1), booking((11, 12), 2)
    held = make_booking_set("GD-1", 1, TEN, [booking_from_fields(first), booking_from_fields(second)], CENTRAL.sign)
    lead = dt.timedelta(minutes=15)

    def matter(hour: int, minute: int) -> str | None:
        found = held.current(TEN.replace(hour=hour, minute=minute), lead)
        return found.matter if found is not None else None

    assert matter(10, 50) == "询问1"  # not the 11:00 one yet
    assert matter(9, 50) == "询问1"  # early, within the lead
    assert matter(9, 40) is None
    assert matter(11, 0) == "询问2"
    upcoming = held.upcoming(TEN.replace(hour=11, minute=30))
    assert upcoming is not None and upcoming.matter == "询问2"
