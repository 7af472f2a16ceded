"""What bookings and the room sensor add to the shared format (RECORD-FIELDS, ROOM, NO-RECORD): the `open`
entry's optional `booking` (FORMAT §4.2), read strictly when present and absent in older sessions, and the
room sensor's alert kinds (FORMAT §11)."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from evidence.alert import OVERRUN, UNRECORDED_PRESENCE, MalformedAlert, make_alert, parse_alert
from evidence.entry import GENESIS, BookingRef, parse_entry, sign_entry
from evidence.errors import MalformedEntry
from provisioning.identity import DeviceIdentity
from tests.central.test_alerts import fields

KEY = DeviceIdentity(Ed25519PrivateKey.generate())
BOOKING = {"id": "0123456789abcdef", "version": 2, "act": "询问", "retention": "evidence",
           "start": "2026-11-30T09:00:00+08:00", "end": "2026-11-30T10:00:00+08:00"}


def opening(**body: Any) -> dict[str, Any]:
    return {"v": 1, "device": "SIM-0001", "session": "20261130T010000Z-abcdef", "seq": 0, "kind": "open",
            "prev": GENESIS, "time": "2026-11-30T09:00:01.000+08:00", "mono_ns": 1, "clock_synced": True,
            "body": {"unit": "u", "room": "r", "location": "l", "device_id": "SIM-0001", "case": "A-1",
                     "matter": "m", "officers": [{"name": "n", "certificate": "c"}], "parties": [],
                     "device_key": KEY.public_key_b64, "segment_seconds": 2.0, "media_t0_mono_ns": 0,
                     "video": {"width": 64, "height": 64, "fps": 10, "codec": "h264"},
                     "audio": {"sample_rate": 16000, "codec": "aac", "channels": 1}, "encryption": None, **body}}


def test_an_open_entry_names_its_booking_in_the_clear__RECORD_FIELDS() -> None:
    entry = parse_entry(sign_entry(opening(booking=BOOKING), KEY.sign).raw)
    assert entry.opening is not None and entry.opening.booking is not None
    ref = entry.opening.booking
    assert (ref.id, ref.version, ref.act, ref.retention) == ("0123456789abcdef", 2, "询问", "evidence")
    assert ref.as_json() == BOOKING
    assert isinstance(ref, BookingRef) and ref.end > ref.start


def test_a_session_without_a_booking_still_reads__RECORD_FIELDS() -> None:
    entry = parse_entry(sign_entry(opening(), KEY.sign).raw)
    assert entry.opening is not None and entry.opening.booking is None


@pytest.mark.parametrize(("booking", "message"), [
    ("0123456789abcdef", "body.booking is missing or not an object"),
    ({**BOOKING, "matter": "m"}, "body.booking is not an object of exactly"),
    ({k: v for k, v in BOOKING.items() if k != "end"}, "body.booking is not an object of exactly"),
    ({**BOOKING, "id": "ABC"}, "body.booking.id is not 16 lowercase hex digits"),
    ({**BOOKING, "version": 0}, "body.booking.version is missing or not an integer of at least 1"),
    ({**BOOKING, "version": True}, "body.booking.version is missing or not an integer of at least 1"),
    ({**BOOKING, "retention": "forever"}, "body.booking.retention 'forever' is not a retention class"),
    ({**BOOKING, "start": "at nine"}, "body.booking.start 'at nine' is not an ISO 8601 time"),
    ({**BOOKING, "end": "2026-11-30T10:00:00"}, "body.booking.end '2026-11-30T10:00:00' has no offset"),
    ({**BOOKING, "end": BOOKING["start"]}, "body.booking.end is not after start"),
    ({**BOOKING, "act": 3}, "body.booking.act is missing or not a string"),
])
def test_a_malformed_booking_is_a_malformed_entry__RECORD_FIELDS(booking: object, message: str) -> None:
    with pytest.raises(MalformedEntry, match=message):
        sign_entry(opening(booking=booking), KEY.sign)


def test_the_room_sensors_alerts_read_as_the_format_says__NO_RECORD() -> None:
    presence = make_alert(fields(kind=UNRECORDED_PRESENCE, session="", cause="door", attempts=0), KEY.sign)
    assert parse_alert(presence.raw) == presence and presence.signed_by(KEY.public_key_b64)
    assert not presence.about_a_break and presence.cause_label == "门磁 door contact"
    assert "session (none)" in presence.summary() and presence.headline.startswith("室内有人未录制")
    overrun = make_alert(fields(kind=OVERRUN, cause="presence"), KEY.sign)
    assert overrun.session == "20261129T150536Z-f59505" and "still recording" in overrun.headline
    assert make_alert(fields(), KEY.sign).about_a_break


@pytest.mark.parametrize(("changes", "field"), [
    ({"kind": UNRECORDED_PRESENCE, "cause": "door"}, "session"),        # no session is open: it names none
    ({"kind": OVERRUN, "session": "", "cause": "door"}, "session"),      # an overrun is a session's
    ({"kind": "cannot_continue", "session": ""}, "session"),
    ({"kind": OVERRUN, "cause": "storage_full"}, "cause"),              # a room alert's cause is its sensor
    ({"kind": "cannot_continue", "cause": "door"}, "cause"),
])
def test_room_alerts_and_break_alerts_keep_their_own_fields__NO_RECORD(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(MalformedAlert, match=f"alert '{field}' has a bad value"):
        make_alert(fields(**changes), KEY.sign)
