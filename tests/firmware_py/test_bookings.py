"""The device's booking cache (ROOM; PROTOCOL §14.3): it takes only what `accept` takes, keeps it across
restarts in a file replaced atomically, and never drops a damaged file silently."""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import evidence.durable
from evidence.booking import Booking, BookingSet, make_booking_set
from evidence.keys import load_public_key_b64
from firmware_py.bookings import AUTO_STARTED, BookingCache, read_held
from firmware_py.rig import booking
from provisioning.identity import DeviceIdentity

DEVICE = "SIM-0001"
CENTRAL = DeviceIdentity(Ed25519PrivateKey.generate())
NOW = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))


def signed(serial: int, bookings: list[Booking], device: str = DEVICE,
           sign: Callable[[bytes], str] = CENTRAL.sign) -> BookingSet:
    return make_booking_set(device, serial, NOW, bookings, sign)


def cache_at(path: Path) -> BookingCache:
    return BookingCache(path, DEVICE, load_public_key_b64(CENTRAL.public_key_b64))


def taken(cache: BookingCache, found: BookingSet) -> BookingSet | None:
    cache.receive(found.raw)
    return cache.commit()


def test_the_set_and_its_marks_survive_a_restart__ROOM(tmp_path: Path) -> None:
    path = tmp_path / "bookings.json"
    first = booking(NOW + dt.timedelta(minutes=30), 60, auto_start=True)
    cache = cache_at(path)
    assert taken(cache, signed(3, [first, booking(NOW + dt.timedelta(hours=3), 30)])) is not None
    cache.mark(first, AUTO_STARTED)
    cache.close()

    again = cache_at(path)
    assert again.held is not None and again.held.serial == 3 and len(again.held.bookings) == 2
    assert again.find(first.id) == first
    assert again.used(first.id) == AUTO_STARTED
    assert again.due(first.start) == []  # never started automatically twice, across a restart too
    assert again.problem is None
    assert read_held(path) == again.held  # what `recorder status` reads, without changing anything


class Crash(BaseException):
    """The power goes out: nothing after this point runs."""


def test_a_crash_between_the_temporary_file_and_the_rename_leaves_the_old_set__ROOM(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bookings.json"
    cache = cache_at(path)
    taken(cache, signed(1, [booking(NOW, 60, matter="旧事项")]))

    def power_cut(src: object, dst: object) -> None:
        raise Crash

    monkeypatch.setattr(os, "replace", power_cut)  # evidence.durable.atomic_write's rename
    with pytest.raises(Crash):
        taken(cache, signed(2, [booking(NOW, 60, matter="新事项")]))
    monkeypatch.undo()
    assert (tmp_path / ".bookings.json.tmp").exists(), "the new file was written in full beside the old one"

    after = cache_at(path)
    assert after.held is not None and after.held.serial == 1
    assert after.held.bookings[0].matter == "旧事项"
    assert after.problem is None
    assert taken(after, signed(2, [booking(NOW, 60, matter="新事项")])) is not None  # and it goes on
    assert cache_at(path).held.serial == 2  # type: ignore[union-attr]


@pytest.mark.parametrize("garbage", [
    b'{"held": {"1": {"raw": "{\\"v\\":1', b"\x00" * 64, b"",
    b'{"held": {"1": {"raw": "{\\"v\\": 1}", "serial": 4}}}',  # JSON, but the set held does not parse
])
def test_a_damaged_file_is_moved_aside_and_reported__ROOM(tmp_path: Path, garbage: bytes,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "bookings.json"
    path.write_bytes(garbage)
    with caplog.at_level(logging.ERROR):
        cache = cache_at(path)
    assert cache.held is None and cache.serial == 0
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("bookings.json.bad-")]
    assert len(aside) == 1 and aside[0].read_bytes() == garbage, "kept for whoever looks into it"
    assert cache.problem is not None and aside[0].name in cache.problem
    assert "could not be read back" in caplog.text
    assert taken(cache, signed(1, [booking(NOW, 60)])) is not None  # central's retained set comes again
    assert cache_at(path).held is not None


def test_refused_sets_are_logged_and_the_held_set_stays__ROOM(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    cache = cache_at(tmp_path / "bookings.json")
    held = signed(5, [booking(NOW, 60)])
    taken(cache, held)
    forger = DeviceIdentity(Ed25519PrivateKey.generate())
    unsigned = signed(6, [booking(NOW, 60)]).raw.replace(b'"sig":"', b'"sog":"')
    cases = {
        "not signed by central's key": signed(6, [booking(NOW, 60)], sign=forger.sign).raw,
        "fields differ: missing ['sig']": unsigned,
        "is for device OTHER-9, not this one": signed(6, [booking(NOW, 60)], device="OTHER-9").raw,
        "serial 4 is older than the one held (5)": signed(4, [booking(NOW, 60)]).raw,
        "not canonical JSON": b"\xff\xfe not a set",
    }
    for why, payload in cases.items():
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            cache.receive(payload)
        assert cache.commit() is None
        assert "refused a booking set" in caplog.text and why in caplog.text, (why, caplog.text)
        assert cache.held == held
    assert cache.refused == len(cases)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        cache.receive(held.raw)  # the retained set delivered anew on a reconnection: nothing to say
    assert cache.commit() is None and caplog.text == "" and cache.refused == len(cases)
    assert cache_at(tmp_path / "bookings.json").held == held


def test_without_centrals_key_no_set_is_taken__ROOM(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = BookingCache(tmp_path / "bookings.json", DEVICE, None)
    with caplog.at_level(logging.WARNING):
        cache.receive(signed(1, [booking(NOW, 60)]).raw)
    assert cache.commit() is None and cache.held is None
    assert "central_signing_key is not set" in caplog.text


def test_due_bookings_and_marks_follow_the_set__ROOM(tmp_path: Path) -> None:
    cache = cache_at(tmp_path / "bookings.json")
    auto = booking(NOW, 60, auto_start=True)
    by_hand = booking(NOW, 60)
    later = booking(NOW + dt.timedelta(hours=2), 60, auto_start=True)
    taken(cache, signed(1, [auto, by_hand, later]))
    assert cache.due(NOW - dt.timedelta(seconds=1)) == []
    assert cache.next_start(NOW - dt.timedelta(seconds=1)) == NOW
    assert cache.due(NOW) == [auto]
    assert cache.current(NOW - dt.timedelta(minutes=10), dt.timedelta(minutes=15)) in (auto, by_hand)
    cache.mark(auto, AUTO_STARTED)
    assert cache.due(NOW) == []
    assert cache.next_start(NOW) == later.start
    # A set without the booking (cancelled) drops its mark; the others keep theirs.
    cache.mark(later, AUTO_STARTED)
    taken(cache, signed(2, [later]))
    assert cache.used(auto.id) is None and cache.used(later.id) == AUTO_STARTED
    assert not os.path.exists(tmp_path / ".bookings.json.tmp")


def test_each_change_is_one_write_of_the_file__ROOM(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two writes for one change (tinydb's truncate, then insert) would leave, after a crash between them, a
    # cache without its set or without its marks: a booking started twice.
    cache = cache_at(tmp_path / "bookings.json")
    first = booking(NOW, 60, auto_start=True)
    taken(cache, signed(1, [first]))
    writes: list[bytes] = []
    real = evidence.durable.atomic_write

    def counted(path: Path, data: bytes, mode: int = 0o644) -> None:
        writes.append(data)
        real(path, data, mode)

    monkeypatch.setattr("firmware_py.bookings.atomic_write", counted)
    cache.mark(first, AUTO_STARTED)
    assert len(writes) == 1 and first.id.encode() in writes[0]
    taken(cache, signed(2, [first]))
    assert len(writes) == 3  # the set, then the marks kept for it: each whole
    assert cache_at(tmp_path / "bookings.json").used(first.id) == AUTO_STARTED
