"""The statistics (STATS) over a known set of sessions: really signed ledgers written into a store (with their
durations, breaks with detected causes and stated reasons, declined sessions, upload delays, late and
incomplete ones), indexed as the receiver indexes them, and the devices' presence history written by the
store as the receiver writes statuses; every figure checked exactly."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from capture.recording import close_session
from central.errors import CentralError
from central.fleet import DeviceStatus, Presence
from central.index import SessionIndex
from central.stats import Stats, StatsQuery, StatsRow, compute, online_time, percentile, periods
from central.store import FileStore
from evidence import layout
from evidence.deadline import UploadPolicy
from evidence.entry import Segment
from evidence.reasons import DECLINE_REASONS
from provisioning.identity import DeviceIdentity
from tests import forge as forged

ZONE = ZoneInfo("Asia/Shanghai")
A, B = "城关派出所", "东城交警大队"
ROOM1, ROOM2 = "询问室一", "询问室二"
WANG, LIU, ALICE = ("王警官", "44010000123"), ("刘警官", "44010000456"), ("Alice Smith", "X-100")
S = 1_000_000_000


def local(day: int, hour: int, minute: int = 0, month: int = 3) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, minute, tzinfo=ZONE)


@dataclass
class Spec:
    device: str
    unit: str
    room: str
    officers: list[tuple[str, str]]
    opened: dt.datetime
    steps: list[tuple[Any, ...]]
    """("segment", start s, end s), ("recovered", start s), ("break", cause, began s, resumed s or None,
    stated reason or None), ("declined", code)."""
    close: str | None
    """The close's reason code; None: not closed yet."""
    delay_s: int = 0
    """From the close (or the last entry) to central storing the session's entries."""
    session: str = field(default="")


def write(store_root: Path, spec: Spec, n: int) -> str:
    """The session as a device's ledger writes it, one entry a minute, stored at its close plus the delay."""
    session = spec.opened.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + f"-{n:06x}"
    session_dir = store_root / "sessions" / spec.device / session
    ledger = forged.open_session(session_dir, spec.device, DeviceIdentity(Ed25519PrivateKey.generate()),
                                 forged.StepClock(spec.opened, dt.timedelta(minutes=1)),
                                 {"unit": spec.unit, "room": spec.room,
                                  "officers": [{"name": n, "certificate": c} for n, c in spec.officers]})
    segments: list[Segment] = []
    recovered: list[str] = []
    last = None
    for step in spec.steps:
        if step[0] == "segment":
            index = len(segments) + 1
            last = ledger.append("segment", forged.segment_body(index, b"x" * 100, step[1] * S, step[2] * S))
        elif step[0] == "recovered":
            index = len(segments) + 1
            last = ledger.append("segment", {
                "index": index, "file": layout.media_name(index), "sha256": "0" * 64, "bytes": 100,
                "start_ns": step[1] * S, "end_ns": None, "video_frames": None, "audio_samples": None,
                "keyframe_start": None, "plain_sha256": None, "plain_bytes": None, "recovered": True})
            recovered.append(layout.media_name(index))
        elif step[0] == "break":
            _, cause, began, resumed, stated = step
            body = {"cause": cause, "began_ns": began * S, "began_wall": "2026-03-01T00:00:00.000+08:00",
                    "resumed_ns": None if resumed is None else resumed * S, "recovered_segments": recovered}
            if resumed is not None:
                body["resumed_wall"] = "2026-03-01T00:00:01.000+08:00"
            last = ledger.append("interruption", body)
            recovered = []
            if stated is not None:
                last = ledger.append("event", {"name": "reason", "interruption": last.seq, "code": stated,
                                               "chosen": "confirmed" if stated == cause else "changed",
                                               "detected": cause})
        else:
            last = ledger.append("event", {"name": "declined", "code": step[1],
                                           "label": DECLINE_REASONS[step[1]].zh})
        if last.segment is not None:
            segments.append(last.segment)
    if spec.close is not None:
        last = close_session(ledger, spec.close, spec.close, segments)
    assert last is not None
    stored = dt.datetime.fromisoformat(last.time).timestamp() + spec.delay_s
    for seq in layout.entry_seqs(session_dir):
        os.utime(layout.entry_path(session_dir, seq), (stored, stored))
    return session


SPECS = {
    # Week 10 (2 to 8 March). A break the camera caused, which the officer said was obstruction; 29 min recorded.
    "s1": Spec("ROOM-A1", A, ROOM1, [WANG, LIU], local(2, 9), [
        ("segment", 0, 600), ("segment", 600, 1200), ("break", "camera", 1200, 1260, "obstruction"),
        ("segment", 1260, 1800)], "stop_button", 1800),
    # A microphone break, confirmed; then the storage filled and recording could not go on (no reason asked).
    "s2": Spec("ROOM-A2", A, ROOM2, [WANG], local(4, 14), [
        ("segment", 0, 3600), ("break", "microphone", 3600, 3700, "microphone"), ("segment", 3700, 5500),
        ("break", "storage_full", 5500, None, None)], "fault_not_cleared", 7200),
    # 07:00 in the agency's zone is still 1 March in UTC: it belongs to 2 March. The camera stopped; the officer
    # said the party asked for a break.
    "s7": Spec("ROOM-B1", B, ROOM1, [ALICE, WANG], local(2, 7), [
        ("segment", 0, 150), ("break", "camera", 150, 160, "party_break"), ("segment", 160, 310)],
        "stop_button", 600),
    # Week 11. Its second segment was sealed by crash recovery unread (no end: nothing counted); 25 h late.
    "s3": Spec("ROOM-B1", B, ROOM1, [ALICE], local(10, 10), [
        ("segment", 0, 1000), ("recovered", 1000), ("break", "abrupt_stop", 1000, None, None)],
        "not_resumed", 25 * 3600),
    "s4": Spec("ROOM-A1", A, ROOM1, [LIU], local(12, 8), [("declined", "privacy")], "declined", 60),
    # Still arriving: no upload delay yet.
    "s5": Spec("ROOM-A1", A, ROOM1, [WANG], local(13, 16), [("segment", 0, 1200)], None, 10),
    # Outside the range, just before and just after it in the agency's zone.
    "s0": Spec("ROOM-A2", A, ROOM2, [WANG], local(1, 23, 30), [("segment", 0, 100)], "stop_button", 5),
    "s6": Spec("ROOM-B1", B, ROOM1, [ALICE], local(16, 0, 30), [("segment", 0, 100)], "stop_button", 5),
}
START, END = local(2, 0), local(16, 0)
NOW = local(20, 0)
RETENTION = {"s1": "long_term", "s3": "evidence"}


def everyday(device: str, session: str) -> str:
    return "everyday"


@dataclass
class Known:
    store: FileStore
    index: SessionIndex
    ids: dict[str, str]

    def classes(self) -> dict[tuple[str, str], str]:
        return {(SPECS[k].device, self.ids[k]): cls for k, cls in RETENTION.items()}

    def stats(self, query: StatsQuery, retention: Any = everyday, devices: tuple[str, ...] = (),
              now: dt.datetime = NOW) -> Stats:
        return compute(self.index, query, ZONE, UploadPolicy(), retention, self.store.presence, devices, now)


def status(device: str, online: bool, since: dt.datetime, received: dt.datetime) -> DeviceStatus:
    return DeviceStatus(device, online, {"state": "idle"}, received.astimezone(dt.UTC).isoformat(timespec="seconds"),
                        since.astimezone(dt.UTC).isoformat(timespec="seconds"))


@pytest.fixture
def known(tmp_path: Path) -> Any:
    store = FileStore(tmp_path)
    ids = {key: write(tmp_path, spec, n) for n, (key, spec) in enumerate(SPECS.items())}
    # As the receiver keeps statuses: when a device goes online or offline, and every half minute meanwhile.
    for device, online, since, received in (
            ("ROOM-A1", True, local(2, 0), local(2, 0)), ("ROOM-A1", True, local(2, 0), local(3, 9)),
            ("ROOM-A1", False, local(4, 12), local(4, 12)), ("ROOM-A1", False, local(4, 12), local(4, 13)),
            ("ROOM-A1", True, local(5, 0), local(5, 0)),
            ("ROOM-B1", True, local(10, 12), local(10, 12)),
            ("ROOM-C9", True, local(1, 0), local(1, 0))):  # enrolled, never recorded
        store.record_status(status(device, online, since, received))
    index = SessionIndex(store)
    yield Known(store, index, ids)
    index.close()


W10, W11 = 7 * 86400.0, 7 * 86400.0


def test_statistics_per_unit_and_week__STATS(known: Known) -> None:
    stats = known.stats(StatsQuery(START, END, "unit", "week"), lambda d, s: known.classes().get((d, s), "everyday"))
    assert [p.label for p in stats.periods] == ["2026-W10", "2026-W11"]
    # Groups in the order of their names: 东 (U+4E1C) before 城 (U+57CE).
    assert stats.rows == (
        StatsRow((B,), "2026-W10", sessions=1, recorded_s=300, interruptions={"party_break": 1}, declined={},
                 uploaded=1, delay_median_s=600.0, delay_p95_s=600.0, late=0, retention={"everyday": 1}),
        StatsRow((B,), "2026-W11", sessions=1, recorded_s=1000, interruptions={"abrupt_stop": 1}, declined={},
                 uploaded=1, delay_median_s=90000.0, delay_p95_s=90000.0, late=1, retention={"evidence": 1},
                 # ROOM-B1 first seen at noon on 10 March.
                 online_s=5.5 * 86400, known_s=5.5 * 86400),
        StatsRow((A,), "2026-W10", sessions=2, recorded_s=1740 + 5400,
                 interruptions={"obstruction": 1, "microphone": 1, "storage_full": 1}, declined={}, uploaded=2,
                 delay_median_s=4500.0, delay_p95_s=7200.0, late=0, retention={"long_term": 1, "everyday": 1},
                 # ROOM-A1 offline from 4 March noon to midnight; ROOM-A2 has no presence history.
                 online_s=W10 - 12 * 3600, known_s=W10),
        StatsRow((A,), "2026-W11", sessions=2, recorded_s=1200, interruptions={}, declined={"privacy": 1},
                 uploaded=1, delay_median_s=60.0, delay_p95_s=60.0, late=0, retention={"everyday": 2},
                 online_s=W11, known_s=W11),
    )
    assert stats.interruption_codes == ("microphone", "abrupt_stop", "storage_full", "obstruction", "party_break")
    assert stats.decline_codes == ("privacy",)
    assert stats.retention_codes == ("everyday", "evidence", "long_term")
    assert stats.rows[2].hours == pytest.approx(7140 / 3600) and stats.rows[2].online_share == pytest.approx(13 / 14)
    assert stats.rows[0].online_share is None


def test_statistics_per_officer_count_a_session_for_each_officer__STATS(known: Known) -> None:
    rows = {(r.group, r.period): r for r in known.stats(StatsQuery(START, END, "officer", "week")).rows}
    assert sorted(rows) == [(ALICE, "2026-W10"), (ALICE, "2026-W11"), (LIU, "2026-W10"), (LIU, "2026-W11"),
                            (WANG, "2026-W10"), (WANG, "2026-W11")]
    wang = rows[(WANG, "2026-W10")]  # s1, s2 and s7
    assert (wang.sessions, wang.recorded_s, wang.uploaded, wang.delay_median_s, wang.delay_p95_s) == (
        3, 1740 + 5400 + 300, 3, 1800.0, 7200.0)
    assert wang.interruptions == {"obstruction": 1, "microphone": 1, "storage_full": 1, "party_break": 1}
    assert rows[(WANG, "2026-W11")] == StatsRow(WANG, "2026-W11", sessions=1, recorded_s=1200, uploaded=0,
                                                retention={"everyday": 1})
    assert (rows[(LIU, "2026-W10")].sessions, rows[(LIU, "2026-W11")].declined) == (1, {"privacy": 1})
    assert (rows[(ALICE, "2026-W10")].recorded_s, rows[(ALICE, "2026-W11")].late) == (300, 1)
    assert all(r.known_s == 0 for r in rows.values())  # availability is a device's, not an officer's


def test_statistics_per_room_keep_rooms_of_the_same_name_in_each_unit_apart__STATS(known: Known) -> None:
    stats = known.stats(StatsQuery(START, END, "room", "month"))
    assert [(r.group, r.period, r.sessions, r.recorded_s) for r in stats.rows] == [
        ((B, ROOM1), "2026-03", 2, 1300), ((A, ROOM1), "2026-03", 3, 1740 + 1200), ((A, ROOM2), "2026-03", 1, 5400)]
    # The month's part in the range holds both weeks of ROOM-A1: 14 days known, 12 hours of them offline.
    assert (stats.rows[1].online_s, stats.rows[1].known_s) == (14 * 86400 - 12 * 3600, 14 * 86400)
    header, body = stats.table()
    assert header[:6] == ["unit", "room", "period", "period_start", "sessions", "hours_recorded"]
    assert body[1][:6] == [A, ROOM1, "2026-03", "2026-03-01T00:00:00+08:00", 3, round(2940 / 3600, 4)]
    assert header[-3:] == ["online_share", "online_hours", "known_hours"] and body[2][-3:] == [None, 0.0, 0.0]
    assert body[1][-3:] == [round(27 / 28, 4), 13 * 24 + 12, 14 * 24]


def test_a_supervisor_counts_only_their_unit_and_its_devices__STATS(known: Known) -> None:
    stats = known.stats(StatsQuery(START, END, "device", "day", units=(A,)), devices=("ROOM-C9",))
    assert {r.group for r in stats.rows} == {("ROOM-A1",), ("ROOM-A2",)}
    assert sum(r.sessions for r in stats.rows) == 4  # s1, s2, s4, s5
    a1 = {r.period: r for r in stats.rows if r.group == ("ROOM-A1",)}
    assert len(a1) == 14  # every day of the range: its presence is known throughout
    assert (a1["2026-03-04"].online_s, a1["2026-03-04"].known_s) == (12 * 3600, 86400)
    assert (a1["2026-03-02"].sessions, a1["2026-03-12"].declined, a1["2026-03-05"].sessions) == (1, {"privacy": 1}, 0)
    assert [(r.period, r.sessions) for r in stats.rows if r.group == ("ROOM-A2",)] == [("2026-03-04", 1)]
    nobody = known.stats(StatsQuery(START, END, "unit", "week", units=("其他单位",)), devices=("ROOM-C9",))
    assert nobody.rows == ()


def test_every_unit_also_counts_enrolled_devices_that_never_recorded__STATS(known: Known) -> None:
    by_device = known.stats(StatsQuery(START, END, "device", "week"), devices=("ROOM-C9",))
    c9 = [(r.period, r.sessions, r.online_s) for r in by_device.rows if r.group == ("ROOM-C9",)]
    assert c9 == [("2026-W10", 0, W10), ("2026-W11", 0, W11)]
    by_unit = known.stats(StatsQuery(START, END, "unit", "week"), devices=("ROOM-C9",))
    assert {r.group for r in by_unit.rows} == {(A,), (B,)}  # it belongs to no unit yet


def test_availability_stops_at_now__STATS(known: Known) -> None:
    stats = known.stats(StatsQuery(START, END, "device", "week"), now=local(12, 12))
    b1 = {r.period: r for r in stats.rows if r.group == ("ROOM-B1",)}
    assert (b1["2026-W11"].online_s, b1["2026-W11"].known_s) == (2 * 86400, 2 * 86400)


def test_the_index_rebuilt_from_the_files_gives_the_same_statistics__STATS(known: Known) -> None:
    query = StatsQuery(START, END, "officer", "day")
    before = known.stats(query)
    assert known.index.rebuild() == len(SPECS)
    assert known.stats(query) == before


def test_an_older_index_is_rebuilt_with_the_breaks__STATS(known: Known) -> None:
    db = sqlite3.connect(known.index.path)
    with db:
        db.execute("DROP TABLE interruptions")
        db.execute("ALTER TABLE sessions DROP COLUMN declined")
        db.execute("PRAGMA user_version = 2")
    db.close()
    known.index.close()
    known.index = SessionIndex(known.store)
    assert sum(sum(r.interruptions.values()) for r in known.stats(StatsQuery(START, END)).rows) == 5


def test_presence_history_is_kept_only_when_a_device_goes_online_or_offline__STATS(known: Known,
                                                                                 tmp_path: Path) -> None:
    assert known.store.presence("ROOM-A1") == [Presence(local(2, 0), True), Presence(local(4, 12), False),
                                               Presence(local(5, 0), True)]
    assert known.store.presence("ROOM-A2") == []
    # A crash tore the last line: it is passed over, and the next change starts a line of its own.
    path = tmp_path / "devices" / "ROOM-B1.presence.jsonl"
    with path.open("ab") as f:
        f.write(b'{"since": "2026-03-11T0')
    assert known.store.presence("ROOM-B1") == [Presence(local(10, 12), True)]
    known.store.record_status(status("ROOM-B1", False, local(11, 6), local(11, 6)))
    assert known.store.presence("ROOM-B1") == [Presence(local(10, 12), True), Presence(local(11, 6), False)]
    assert path.read_bytes().count(b"\n") == 3


def test_periods_follow_the_agency_zone_and_iso_weeks__STATS() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    days = periods(dt.datetime(2026, 3, 28, 12, tzinfo=berlin), dt.datetime(2026, 3, 30, 1, tzinfo=berlin), "day",
                   berlin)
    assert [(p.label, (p.end.timestamp() - p.start.timestamp()) / 3600) for p in days] == [
        ("2026-03-28", 24), ("2026-03-29", 23), ("2026-03-30", 24)]  # summer time begins on the 29th
    weeks = periods(local(30, 0, month=12), dt.datetime(2027, 1, 5, tzinfo=ZONE), "week", ZONE)
    assert [(p.label, p.start.date().isoformat()) for p in weeks] == [("2026-W53", "2026-12-28"),
                                                                       ("2027-W01", "2027-01-04")]
    months = periods(local(31, 23, month=1), local(1, 0, month=3), "month", ZONE)
    assert [p.label for p in months] == ["2026-01", "2026-02"]


def test_percentiles_and_online_time__STATS() -> None:
    assert percentile([float(v) for v in range(20, 0, -1)], 0.95) == 19.0
    assert percentile([5.0], 0.95) == 5.0
    history = [Presence(local(1, 0), True), Presence(local(1, 6), False), Presence(local(1, 18), True)]
    start, end = local(1, 3).timestamp(), local(2, 0).timestamp()
    assert online_time(history, start, end) == (9 * 3600, 21 * 3600)
    assert online_time(history, local(1, 0).timestamp() - 3600, local(1, 1).timestamp()) == (3600, 3600)


@pytest.mark.parametrize(("query", "message"), [
    (StatsQuery(START, END, "party"), "group 'party'"),
    (StatsQuery(START, END, "unit", "year"), "period 'year'"),
    (StatsQuery(END, START), "before it starts"),
    (StatsQuery(START.replace(tzinfo=None), END), "time zone"),
    (StatsQuery(local(1, 0, month=1) - dt.timedelta(days=3000), END, "unit", "day"), "more than 1000 days"),
])
def test_a_bad_query_is_named__STATS(known: Known, query: StatsQuery, message: str) -> None:
    with pytest.raises(CentralError, match=message):
        known.stats(query)
