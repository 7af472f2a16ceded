"""Bookings at central (ROOM, RECORD-FIELDS; PROTOCOL §14): the rules a booking must keep, each change signed as
the room's next set (a device takes it with evidence/booking.py `accept`), audited, kept whole across writers
in several threads and processes; the receiver publishing each set retained on a real Mosquitto; the
`recorder central book`, `bookings` and `cancel-booking` commands."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

import central.bookings as bookings_mod
from capture.ledger import Ledger
from capture.recording import opening_body
from central import config as central_config
from central.audit import AUDIT_FILE, AuditLog
from central.bookings import (
    CANCELLED,
    BookingRefused,
    Bookings,
    Fields,
    Kept,
    Room,
    Step,
    latest_set,
    room_day,
)
from central.errors import CentralError
from central.fleet import parse_status, updated
from central.index import Query, SessionIndex, SessionRow
from central.receiver import Receiver
from central.register import Actor
from central.store import FileStore
from evidence import layout
from evidence.booking import Booking, BookingSet, MalformedBookings, accept
from evidence.entry import BookingRef, Officer
from evidence.keys import VerifyKey, load_public_key_b64
from firmware_py import rig as rig_mod
from firmware_py.cli import main
from mqtt.broker import LocalBroker
from provisioning.central_key import create_signing_key, load_signing_key
from provisioning.identity import DeviceIdentity
from tests import forge as forged
from tests.conftest import wait_until

ZONE = dt.timezone(dt.timedelta(hours=8))
ROOM, OTHER = "SIM-0001", "SIM-0002"
OFFICER = Officer("李警官", "44000000001")
CLERK = Actor("李警官", "viewer", "127.0.0.1")


@dataclasses.dataclass
class Central:
    root: Path
    store: FileStore
    bookings: Bookings
    audit: AuditLog
    key: VerifyKey
    config_file: Path

    def set(self, device: str = ROOM, held: int = 0) -> BookingSet:
        """The room's latest set, taken as the device takes it."""
        data = latest_set(self.store, device)
        assert data is not None
        found = accept(data, device, self.key, held)
        assert found is not None
        return found

    def records(self) -> list[dict[str, Any]]:
        return [dict(r.detail) for r in self.audit.records() if r.action == "booking"]


def later(hours: float) -> dt.datetime:
    return (dt.datetime.now(ZONE) + dt.timedelta(hours=hours)).replace(microsecond=0)


def fields(start_h: float, end_h: float, **kw: Any) -> Fields:
    return Fields(later(start_h), later(end_h), **kw)


@pytest.fixture
def central(tmp_path: Path) -> Central:
    root = tmp_path / "central"
    store = FileStore(root)
    signing = tmp_path / "central-signing.pem"
    public = create_signing_key(signing)
    for device in (ROOM, OTHER):
        store.enroll(device, create_signing_key(tmp_path / f"{device}.pem"))
    config_file = tmp_path / "central.toml"
    config_file.write_text(f'[central]\ntimezone = "Asia/Shanghai"\n[receiver]\nstore_dir = "{root}"\n'
                           f'signing_key_file = "{signing}"\n')
    identity = load_signing_key(signing)
    audit = AuditLog(store.state_file(AUDIT_FILE), identity.sign, identity.public_key_b64, ZONE)
    return Central(root, store, Bookings(store, identity.sign, audit, ZONE), audit, load_public_key_b64(public),
                   config_file)


def test_a_booking_is_signed_as_the_rooms_next_set_and_audited__ROOM_RECORD_FIELDS(central: Central) -> None:
    made = central.bookings.make(ROOM, fields(1, 2, case="（2026）001号", matter="询问张三", act="询问",
                                              parties=("张三", "王五"), officers=(OFFICER,), retention="evidence",
                                              auto_start=True), CLERK)
    b = made.booking
    assert len(b.id) == 16 and b.version == 1 and b.room == ROOM
    taken = central.set()
    assert taken.serial == 1 and taken.device == ROOM and taken.bookings == (b,)
    assert (b.case, b.matter, b.act, b.parties, b.officers, b.retention, b.auto_start) == (
        "（2026）001号", "询问张三", "询问", ("张三", "王五"), (OFFICER,), "evidence", True)
    [record] = central.records()
    assert record == {"booking": b.id, "version": 1, "change": "made", "by": CLERK.name, "serial": 1,
                      **{k: v for k, v in b.as_json().items() if k not in ("id", "version")}}
    assert central.audit.check().ok
    # Another device's set is refused by this one, and a forged one by every device.
    data = latest_set(central.store, ROOM)
    assert data is not None
    with pytest.raises(MalformedBookings, match="is for device SIM-0001"):
        accept(data, OTHER, central.key, 0)
    with pytest.raises(MalformedBookings, match="not signed by central"):
        accept(data.replace("询问张三".encode(), "询问李四".encode()), ROOM, central.key, 0)


def test_each_change_signs_the_next_serial_and_a_cancelled_booking_leaves_the_set__ROOM(central: Central) -> None:
    first = central.bookings.make(ROOM, fields(1, 2, matter="询问"), CLERK).booking
    second = central.bookings.make(ROOM, fields(3, 4, matter="听证"), CLERK).booking
    assert central.set().serial == 2
    changed = central.bookings.change(first.id, fields(1, 2.5, matter="询问（延长）"), Actor("王科长", "supervisor"))
    assert changed.booking.version == 2 and changed.booking.id == first.id
    taken = central.set(held=2)
    assert taken.serial == 3 and [b.matter for b in taken.bookings] == ["询问（延长）", "听证"]
    cancelled = central.bookings.cancel(second.id, Actor("王科长", "supervisor"))
    taken = central.set(held=3)
    assert taken.serial == 4 and [b.id for b in taken.bookings] == [first.id]
    # An older set sent again is refused by a device that holds this one; the same one again is ignored.
    old = central.set(held=0)
    with pytest.raises(MalformedBookings, match="older than the one held"):
        accept(old.raw, ROOM, central.key, 5)
    assert accept(taken.raw, ROOM, central.key, 4) is None
    # Kept for the record: the cancelled booking, who made, changed and cancelled.
    kept = central.bookings.of(ROOM)
    assert kept.serial == 4 and [k.booking.id for k in kept.bookings] == [first.id, second.id]
    assert cancelled.cancelled is not None and cancelled.cancelled.by == "王科长"
    assert [(s.change, s.version, s.by) for s in kept.find(first.id).history] == [  # type: ignore[union-attr]
        ("made", 1, CLERK.name), ("changed", 2, "王科长")]
    assert [r["change"] for r in central.records()] == ["made", "made", "changed", "cancelled"]
    assert [r["serial"] for r in central.records()] == [1, 2, 3, 4]
    with pytest.raises(BookingRefused, match=f"booking {second.id} was cancelled by 王科长"):
        central.bookings.change(second.id, fields(3, 4), CLERK)
    with pytest.raises(BookingRefused, match="nothing to change"):
        central.bookings.change(first.id, dataclasses.replace(bookings_mod.Fields.of(changed.booking)), CLERK)
    # The cancelled booking's time is free again.
    assert central.bookings.make(ROOM, fields(3, 4, matter="听证（改期）"), CLERK).booking.version == 1


@pytest.mark.parametrize(("device", "given", "refusal"), [
    ("SIM-0099", fields(1, 2), "device: SIM-0099 is not enrolled"),
    ("../etc", fields(1, 2), "device: '../etc' is not a device id"),
    (ROOM, fields(2, 1), "end: .* is not after start"),
    (ROOM, fields(-3, -2), "end: .* is already past"),
    (ROOM, Fields(dt.datetime(2030, 1, 1, 9), dt.datetime(2030, 1, 1, 10)), "start: .* has no offset"),
    (ROOM, fields(1, 2, retention="forever"), "retention: 'forever' is not a retention class"),
    (ROOM, fields(1, 2, officers=(Officer("李警官", " "),)), r"officers\[0\]: give the officer's name and certificate"),
    (ROOM, fields(1, 2, parties=("张三", "")), "parties: an empty name"),
    (ROOM, fields(1, 2, matter="x" * 2001), "matter: 2001 characters, at most 2000"),
    (ROOM, fields(1, 2, case="第一行\n第二行"), "case: holds a control character"),
    (ROOM, fields(1, 2, parties=tuple("甲" * 1900 for _ in range(3))), "more than the access audit's record holds"),
])
def test_a_booking_that_breaks_a_rule_is_refused_naming_the_field__ROOM(
        central: Central, device: str, given: Fields, refusal: str) -> None:
    with pytest.raises(BookingRefused, match=refusal):
        central.bookings.make(device, given, CLERK)
    assert latest_set(central.store, ROOM) is None and central.records() == []


def test_overlapping_bookings_of_one_room_are_refused_naming_the_other__ROOM(central: Central) -> None:
    held = central.bookings.make(ROOM, fields(1, 2, matter="询问张三"), CLERK).booking
    with pytest.raises(BookingRefused, match=f"overlaps booking {held.id} of the same room .*询问张三"):
        central.bookings.make(ROOM, fields(1.5, 3), CLERK)
    with pytest.raises(BookingRefused, match=f"overlaps booking {held.id}"):
        central.bookings.make(ROOM, fields(0.5, 2.5), CLERK)
    # Back to back is no overlap, and another room is another room.
    central.bookings.make(ROOM, Fields(held.end, held.end + dt.timedelta(hours=1)), CLERK)
    central.bookings.make(OTHER, fields(1, 2), CLERK)
    later_one = central.bookings.make(ROOM, fields(5, 6), CLERK).booking
    with pytest.raises(BookingRefused, match=f"overlaps booking {held.id}"):
        central.bookings.change(later_one.id, fields(1.5, 6), CLERK)
    assert central.set().serial == 3 and central.set(OTHER).serial == 1


def test_a_room_holds_at_most_the_bookings_a_set_may_hold__ROOM(central: Central,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bookings_mod, "MAX_BOOKINGS", 3)
    made = [central.bookings.make(ROOM, fields(h, h + 0.5), CLERK).booking for h in (1, 2, 3)]
    with pytest.raises(BookingRefused, match="already has 3 bookings not yet over, the most one set may hold"):
        central.bookings.make(ROOM, fields(4, 4.5), CLERK)
    central.bookings.change(made[0].id, fields(1, 1.25), CLERK)  # a change of one of them still fits
    central.bookings.cancel(made[1].id, CLERK)
    central.bookings.make(ROOM, fields(4, 4.5), CLERK)


def test_a_booking_over_cannot_be_changed_or_cancelled__ROOM(central: Central) -> None:
    made = central.bookings.make(ROOM, fields(1, 2), CLERK).booking
    afterwards = made.end + dt.timedelta(minutes=1)
    with pytest.raises(BookingRefused, match=f"booking {made.id} ended at .* cannot be cancelled"):
        central.bookings.cancel(made.id, CLERK, now=afterwards)
    with pytest.raises(BookingRefused, match="cannot be changed"):
        central.bookings.change(made.id, Fields(afterwards, afterwards + dt.timedelta(hours=1)), CLERK,
                                now=afterwards)
    with pytest.raises(BookingRefused, match="booking: no booking 0123456789abcdef"):
        central.bookings.cancel("0123456789abcdef", CLERK)
    # A set signed once a booking is over leaves it out: the device needs only what is still to come.
    central.bookings.make(ROOM, Fields(afterwards, afterwards + dt.timedelta(hours=1)), CLERK, now=afterwards)
    assert [b.start for b in central.set().bookings] == [afterwards]


WRITER = """
import datetime as dt, sys
from pathlib import Path
from central import config
from central.bookings import Fields
from central.build import build_bookings
from central.register import Actor
from central.store import FileStore

cfg = config.load(Path(sys.argv[1]))
bookings = build_bookings(cfg, FileStore(cfg.receiver.store_dir))
base = dt.datetime.fromisoformat(sys.argv[2])
print("ready", flush=True)
for n in range(int(sys.argv[3])):
    start = base + dt.timedelta(hours=n)
    bookings.make("SIM-0001", Fields(start, start + dt.timedelta(minutes=30)), Actor("cli:test", ""))
"""


def test_writers_in_threads_and_another_process_at_once_lose_nothing__ROOM(central: Central) -> None:
    """The web application's threads and a command at the same moment: every change kept, one serial each."""
    threads_n, each, process_n = 6, 4, 12
    base = later(1)
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(central.config_file),
                                (base + dt.timedelta(days=10)).isoformat(), str(process_n)], stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    errors: queue.Queue[BaseException] = queue.Queue()

    def writer(n: int) -> None:
        try:
            for i in range(each):
                start = base + dt.timedelta(hours=n * each + i)
                central.bookings.make(ROOM, Fields(start, start + dt.timedelta(minutes=30)), CLERK)
        except BaseException as err:
            errors.put(err)

    running = [threading.Thread(target=writer, args=(n,)) for n in range(threads_n)]
    for t in running:
        t.start()
    for t in running:
        t.join()
    assert process.wait(60) == 0
    assert errors.empty(), errors.get()
    total = threads_n * each + process_n
    kept = central.bookings.of(ROOM)
    assert kept.serial == total and len(kept.bookings) == total
    assert len(central.set().bookings) == total
    assert sorted(r["serial"] for r in central.records()) == list(range(1, total + 1))
    assert central.audit.check().ok


def test_a_failed_write_leaves_the_kept_record_whole__ROOM(central: Central,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    central.bookings.make(ROOM, fields(1, 2), CLERK)
    before = central.store.read_bookings(ROOM)

    def torn(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("evidence.durable.os.replace", torn)
    with pytest.raises(CentralError, match=r"could not be kept .*No space left on device.* so it did not happen"):
        central.bookings.make(ROOM, fields(3, 4), CLERK)
    monkeypatch.undo()
    assert central.store.read_bookings(ROOM) == before and central.set().serial == 1
    # The next change takes the next serial after the one kept: a device never sees a serial twice.
    central.bookings.make(ROOM, fields(3, 4), CLERK)
    assert central.set(held=1).serial == 2


def row(session: str, opened: dt.datetime, closed: dt.datetime | None, booking: str | None = None,
        close_reason: str | None = None) -> SessionRow:
    ref = None if booking is None else BookingRef(booking, 1, "询问", "everyday", opened, opened)
    return SessionRow(ROOM, session, "示例执法单位", "询问室", "", "", "", (), (), opened.isoformat(),
                      None if closed is None else closed.isoformat(), close_reason, 0, 0, 1, opened.isoformat(),
                      opened, dt.timedelta(0), False, opened.timestamp(),
                      None if closed is None else closed.timestamp(), opened.timestamp(), ref)


def test_a_rooms_day_shows_booked_time_with_nothing_recorded_and_sessions_without_a_booking__ROOM() -> None:
    day = dt.datetime(2026, 11, 30, tzinfo=ZONE)
    at = day.replace(hour=18)

    def kept(booking_id: str, h0: float, h1: float, cancelled: bool = False) -> Kept:
        b = Booking(booking_id, 1, "询问室", day + dt.timedelta(hours=h0), day + dt.timedelta(hours=h1),
                                 "", "", "", (), (), "everyday", False)
        history = (Step("made", 1, "x", "viewer", ""),) + ((Step(CANCELLED, 1, "x", "viewer", ""),) if cancelled
                                                          else ())
        return Kept(b, history)

    h = dt.timedelta(hours=1)
    plan = [kept("a" * 16, 9, 10), kept("b" * 16, 11, 12), kept("c" * 16, 13, 14, cancelled=True),
            kept("d" * 16, 20, 21), kept("e" * 16, 23, 25), kept("f" * 16, 16.5, 17)]
    sessions = [row("s1", day + 9 * h + dt.timedelta(minutes=2), day + 9.5 * h, "a" * 16),
                row("s2", day + 15 * h, day + 16 * h),
                row("s3", day + 16.5 * h, day + 16.5 * h + dt.timedelta(seconds=20), "f" * 16, "declined")]
    found = room_day(Room(ROOM, "示例执法单位", "询问室"), plan, sessions, day, day + 24 * h, at)
    assert [k.booking.id[0] for k in found.bookings] == ["a", "b", "c", "f", "d", "e"]
    assert found.matched == {"a" * 16: ("s1",), "f" * 16: ("s3",)}
    assert [(g.kind, g.start.strftime("%H:%M"), g.end.strftime("%H:%M"), g.booking or g.session)
            for g in found.gaps] == [
        ("unrecorded", "09:30", "10:00", "a" * 16),  # the session ended early (its 2 minutes late are no gap)
        ("unrecorded", "11:00", "12:00", "b" * 16),  # booked, nothing recorded
        ("unbooked", "15:00", "16:00", "s2"),  # recorded without a booking
        ("unrecorded", "16:30", "17:00", "f" * 16),  # declined (NO-RECORD): nothing was recorded
    ]  # the cancelled booking leaves no gap; the evening's are still to come


def test_the_index_knows_the_booking_a_session_was_recorded_under__RECORD_FIELDS(central: Central) -> None:
    made = central.bookings.make(ROOM, fields(1, 2, act="听证", retention="long_term"), CLERK).booking
    identity = DeviceIdentity(Ed25519PrivateKey.generate())
    session = "20261130T010000Z-0000d4"
    session_dir = central.store.session_dir(ROOM, session)
    (session_dir / layout.ENTRIES).mkdir(parents=True)
    (session_dir / layout.MEDIA).mkdir()
    ledger = Ledger(session_dir, ROOM, session, identity, forged.StepClock(made.start))
    body = opening_body(forged.meta(ROOM, {"unit": "示例执法单位", "room": "听证室"}), identity.public_key_b64, 2.0,
                        forged.FORMAT, 16000, None, 0, {"clock_synced": True})
    ref = BookingRef(made.id, made.version, made.act, made.retention, made.start, made.end)
    ledger.append("open", {**body, "booking": ref.as_json()})
    index = SessionIndex(central.store)
    try:
        [found] = index.sessions(Query(booking=made.id))
        assert found.session == session and found.booking == ref
        assert found.as_json(dt.datetime.now(ZONE), central_config.CentralConfig().upload)["booking"] == {
            "id": made.id, "version": 1, "act": "听证", "retention": "long_term",
            "start": made.start.isoformat(), "end": made.end.isoformat()}
        assert index.latest_rooms() == {ROOM: ("示例执法单位", "听证室")}
        assert index.sessions(Query(booking="0" * 16)) == []
        day = room_day(Room(ROOM, "示例执法单位", "听证室"), central.bookings.of(ROOM).bookings, [found],
                       made.start - dt.timedelta(hours=1), made.end + dt.timedelta(hours=1), made.end)
        assert day.matched == {made.id: (session,)} and [g.kind for g in day.gaps] == []
    finally:
        index.close()
    # Named by its booking's room at central from now on (the device was enrolled by hand).
    index = SessionIndex(central.store)
    try:
        named = Bookings(central.store, central.bookings.sign, central.audit, ZONE, index)
        assert named.room(ROOM) == Room(ROOM, "示例执法单位", "听证室")
        assert named.make(ROOM, fields(3, 4), CLERK).booking.room == "听证室"
    finally:
        index.close()


def test_a_room_enrolled_with_a_token_is_named_by_its_enrollment__ROOM(central: Central, tmp_path: Path) -> None:
    told = {"device": "GZ-TH-R01", "unit": "城关派出所", "room": "询问室三", "location": "城关路1号",
            "timezone": "Asia/Shanghai", "officers": []}
    central.store.enroll("GZ-TH-R01", create_signing_key(tmp_path / "r01.pem"), {"via": "token", "room": told})
    assert central.bookings.room("GZ-TH-R01") == Room("GZ-TH-R01", "城关派出所", "询问室三")
    assert central.bookings.make("GZ-TH-R01", fields(1, 2), CLERK).booking.room == "询问室三"
    assert [r.device for r in central.bookings.rooms()] == [ROOM, OTHER, "GZ-TH-R01"]  # unknown units first


# The receiver publishes the sets -------------------------------------------------------------------------------

class Device:
    """A device's subscription to its bookings, as paho gives them."""

    def __init__(self, port: int, topic: str) -> None:
        self.got: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{id(self)}", protocol=paho.MQTTv5)
        self.client.on_message = lambda c, u, m: self.got.put((m.topic, bytes(m.payload), bool(m.retain)))
        subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, codes, p: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10)

    def next(self, timeout: float = 5.0) -> tuple[str, bytes, bool]:
        return self.got.get(timeout=timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def receiver_config(central: Central, broker: LocalBroker) -> central_config.CentralConfig:
    cfg = central_config.load(central.config_file)
    return central_config.replace(cfg, mqtt=dataclasses.replace(cfg.mqtt, host="127.0.0.1", port=broker.port))


@pytest.fixture
def receiver(central: Central, broker: LocalBroker) -> Iterator[Receiver]:
    r = rig_mod.start_receiver(receiver_config(central, broker), central.store)
    yield r
    r.stop()


def test_the_receiver_publishes_each_rooms_set_retained_and_again_after_a_restart__ROOM(
        central: Central, broker: LocalBroker) -> None:
    made = central.bookings.make(ROOM, fields(1, 2, matter="询问"), CLERK).booking
    receiver = rig_mod.start_receiver(receiver_config(central, broker), central.store)
    try:
        assert receiver.wait_bookings(ROOM, 1, 5)
        # A device connecting later is handed the retained set by the broker, and takes it.
        device = Device(broker.port, f"recorders/{ROOM}/bookings")
        topic, payload, retained = device.next()
        assert (topic, retained) == (f"recorders/{ROOM}/bookings", True)
        assert accept(payload, ROOM, central.key, 0).bookings == (made,)  # type: ignore[union-attr]
        # A change reaches it within the receiver's look at the store (a quarter of a second).
        central.bookings.change(made.id, fields(1, 3, matter="询问（延长）"), CLERK)
        _, payload, _ = device.next(3)
        taken = accept(payload, ROOM, central.key, 1)
        assert taken is not None and taken.serial == 2 and taken.bookings[0].matter == "询问（延长）"
        central.bookings.make(OTHER, fields(1, 2), CLERK)
        assert receiver.wait_bookings(OTHER, 1, 5)
        device.close()
    finally:
        receiver.stop()
    # A broker that forgot its retained messages (restarted without persistence): the receiver's next start
    # publishes every room's set again.
    forget = paho.Client(CallbackAPIVersion.VERSION2, client_id="forget", protocol=paho.MQTTv5)
    forget.connect("127.0.0.1", broker.port)
    forget.loop_start()
    for room in (ROOM, OTHER):
        forget.publish(f"recorders/{room}/bookings", b"", qos=1, retain=True).wait_for_publish(5)
    forget.disconnect()
    forget.loop_stop()
    every = Device(broker.port, "recorders/+/bookings")
    try:
        with pytest.raises(queue.Empty):
            every.next(0.5)
        receiver = rig_mod.start_receiver(receiver_config(central, broker), central.store)
        try:
            got = {every.next()[0] for _ in range(2)}
            assert got == {f"recorders/{ROOM}/bookings", f"recorders/{OTHER}/bookings"}
            # A revoked room's bookings are taken off the broker.
            central.store.revoke(OTHER, "管理员", "stolen")
            topic, payload, _ = every.next(3)
            assert (topic, payload) == (f"recorders/{OTHER}/bookings", b"")
            assert wait_until(lambda: receiver.bookings_published.get(OTHER) == 0, 5)
        finally:
            receiver.stop()
    finally:
        every.close()
    late = Device(broker.port, "recorders/+/bookings")
    try:
        topic, payload, _ = late.next()
        assert topic == f"recorders/{ROOM}/bookings" and accept(payload, ROOM, central.key, 0) is not None
        with pytest.raises(queue.Empty):
            late.next(0.5)
    finally:
        late.close()


def test_a_booking_reaches_the_broker_within_a_second__ROOM(central: Central, receiver: Receiver) -> None:
    made = central.bookings.make(ROOM, fields(1, 2), CLERK)
    assert wait_until(lambda: receiver.bookings_published.get(ROOM) == 1, 1.5)
    assert made.booking.id in (latest_set(central.store, ROOM) or b"").decode()


# The commands ------------------------------------------------------------------------------------------------------

def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_book_change_list_and_cancel_from_the_command_line__ROOM(central: Central,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    cfg = ("--config", str(central.config_file))
    day = (dt.datetime.now(ZONE) + dt.timedelta(days=2)).date().isoformat()
    code, out, err = run(capsys, "central", "book", *cfg, "--device", ROOM, "--start", f"{day}T09:00",
                         "--end", f"{day}T10:30", "--case", "（2026）001号", "--matter", "询问张三", "--act", "询问",
                         "--party", "张三", "--officer", "李警官:44000000001", "--retention", "evidence",
                         "--auto-start", "--by", "李警官")
    assert code == 0, err
    booking_id = out.strip()
    assert len(booking_id) == 16 and "made booking" in err
    [b] = central.set().bookings
    # Times without an offset are the agency's zone (Asia/Shanghai).
    assert b.id == booking_id and b.start.isoformat() == f"{day}T09:00:00+08:00" and b.auto_start
    assert (b.parties, b.officers) == (("张三",), (OFFICER,))
    code, out, err = run(capsys, "central", "book", *cfg, "--change", booking_id, "--end", f"{day}T11:00",
                         "--no-auto-start", "--by", "王科长")
    assert code == 0, err
    [b] = central.set(held=1).bookings
    assert (b.version, b.end.isoformat(), b.auto_start, b.matter) == (2, f"{day}T11:00:00+08:00", False, "询问张三")
    code, out, err = run(capsys, "central", "book", *cfg, "--device", ROOM, "--start", f"{day}T10:00",
                         "--end", f"{day}T12:00", "--by", "李警官")
    assert code == 2 and f"overlaps booking {booking_id}" in err and out == ""
    code, out, err = run(capsys, "central", "bookings", *cfg)
    assert code == 0 and f"{ROOM} (SIM-0001): set serial 2 signed\n" in out and booking_id in out and "询问张三" in out
    # Once the device says in its status which set it holds, the list says so too (and central keeps no more of
    # what the status says of its bookings).
    status = json.dumps({"device": ROOM, "online": True, "state": "idle",
                         "bookings": {"serial": 2, "held": 1, "next": {"id": booking_id, "case": "（2026）001号"}}})
    online, said = parse_status(ROOM, status.encode())
    assert said["bookings"] == {"serial": 2, "held": 1}
    central.store.record_status(updated(None, ROOM, online, said, dt.datetime.now(dt.UTC)))
    code, out, err = run(capsys, "central", "bookings", *cfg)
    assert f"{ROOM} (SIM-0001): set serial 2 signed; the device holds serial 2" in out
    code, out, _ = run(capsys, "central", "bookings", *cfg, "--json")
    [listed] = json.loads(out)
    assert listed["serial"] == 2 and listed["bookings"][0]["state"] == "booked"
    assert [h["by"] for h in listed["bookings"][0]["history"]] == ["李警官", "王科长"]
    code, out, err = run(capsys, "central", "cancel-booking", *cfg, booking_id, "--by", "王科长")
    assert code == 0 and f"cancelled booking {booking_id}" in out
    assert central.set(held=2).bookings == ()
    code, out, _ = run(capsys, "central", "bookings", *cfg)
    assert "nothing booked that is not over" in out
    code, out, _ = run(capsys, "central", "bookings", *cfg, "--all")
    assert "cancelled by 王科长" in out
    actors = {r.actor for r in central.audit.records() if r.action == "booking"}
    assert len(actors) == 1 and actors.pop().startswith("cli:")
    code, _, err = run(capsys, "central", "book", *cfg, "--device", ROOM, "--start", "tomorrow", "--end", "x",
                       "--by", "李警官")
    assert code == 2 and "--start: 'tomorrow' is not an ISO 8601 date or time" in err
