"""Central's session index: sessions found by each CLASSIFY field, rebuilt from the files alone, and the
sessions late or at risk of missing the 24-hour deadline (UPLOAD-24H)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.index import INDEX_FILE, Query, SessionIndex, SessionRow
from central.receiver import Receiver
from central.store import FileStore
from evidence import layout
from evidence.deadline import UploadPolicy
from firmware_py.cli import main
from mqtt import protocol
from mqtt.broker import LocalBroker
from mqtt.client import make_client
from provisioning.central_key import load_central_key
from provisioning.identity import DeviceIdentity
from tests import forge as forged
from tests.central.test_receiver import send
from tests.conftest import RecordedSession, wait_until
from tests.media import personal

ROOM = "ROOM-07"
CST = dt.timezone(dt.timedelta(hours=8))
NOW = dt.datetime.now(CST).replace(microsecond=0)
HOUR = dt.timedelta(hours=1)


def forge(spool: Path, identity: DeviceIdentity, session: str, opened: dt.datetime, metadata: dict[str, Any],
          segments: int, interrupted: bool = False, closed: bool = True) -> Path:
    """A session as the device's ledger writes it (really signed), with made-up media and times."""
    session_dir = spool / session
    forged.forge(session_dir, ROOM, identity, forged.StepClock(opened), metadata, segments, interrupted, closed)
    return session_dir


def messages(session_dir: Path) -> list[tuple[str, bytes]]:
    """A session's messages as the uploader sends them: each segment's media, then its entry."""
    out = []
    for seq in layout.entry_seqs(session_dir):
        data = layout.entry_path(session_dir, seq).read_bytes()
        entry = json.loads(data)
        if entry["kind"] == "segment":
            media = layout.media_path(session_dir, entry["body"]["file"]).read_bytes()
            chunk = protocol.MediaChunk(entry["session"], entry["body"]["file"], 0, len(media),
                                        entry["body"]["sha256"], media)
            out.append((protocol.topic("recorders", entry["device"], "media"), protocol.encode_media(chunk)))
        out.append((protocol.topic("recorders", entry["device"], "entry"), data))
    return out


# The forged sessions of room 7, beside the simulator's real one (SIM-0001, 示例执法单位, 张三 and 李四).
THEFT = "20260101T020000Z-0000a1"
DISPUTE = "20260101T030000Z-0000b2"
OUTAGE = "20260101T040000Z-0000c3"
FORGED: dict[str, dict[str, Any]] = {
    # Closed a month ago, delivered only now: late.
    THEFT: dict(opened=NOW - 30 * 24 * HOUR, segments=3, metadata={
        "unit": "城关派出所", "case": "穗公刑立字〔2026〕88号", "matter": "盗窃", "parties": ["陈某某", "李某"],
        "officers": [{"name": "王警官", "certificate": "44010000123"}]}),
    # Interrupted by a power cut and recovered, closed 10 days ago: late too.
    DISPUTE: dict(opened=NOW - 10 * 24 * HOUR, segments=2, interrupted=True, metadata={
        "unit": "城关派出所", "case": "", "matter": "邻里纠纷调解", "parties": ["赵某"],
        "officers": [{"name": "王警官", "certificate": "44010000123"},
                     {"name": "刘警官", "certificate": "44010000456"}]}),
    # Never closed at central: the device's link went down 30 hours ago.
    OUTAGE: dict(opened=NOW - 30 * HOUR, segments=2, closed=False, metadata={
        "unit": "东城交警大队", "case": "", "matter": "", "parties": [],
        "officers": [{"name": "Alice Smith", "certificate": "X-100"}]}),
}


@dataclass
class Central:
    receiver: Receiver
    index: SessionIndex
    store: FileStore
    recorded: RecordedSession


def replay_into(receiver: Receiver, broker: LocalBroker, session_dirs: list[Path]) -> None:
    """Send every session through the broker to the receiver; returns once all of it is indexed."""
    send(broker, [m for d in session_dirs for m in messages(d)])
    total = sum(len(layout.entry_seqs(d)) for d in session_dirs)
    index = receiver.index
    assert index is not None
    assert wait_until(lambda: sum(r.entries for r in index.sessions(Query())) == total, 20), receiver.refused
    assert receiver.settle(30)  # and the working copies that follow the receipts are written


@pytest.fixture(scope="module")
def central(tmp_path_factory: pytest.TempPathFactory, recorded: RecordedSession) -> Iterator[Central]:
    """A receiver that has stored the simulator's real session and the forged ones, through a real broker."""
    workdir = tmp_path_factory.mktemp("index")
    room = DeviceIdentity(Ed25519PrivateKey.generate())
    forged = [forge(workdir / "spool", room, session, **spec) for session, spec in FORGED.items()]
    with LocalBroker(workdir / "broker") as broker:
        store = FileStore(workdir / "central")
        store.enroll(recorded.rig.config.device.id, recorded.rig.service.identity.public_key_b64)
        store.enroll(ROOM, room.public_key_b64)
        # With central's key: the simulator's session has its personal fields sealed to it (FORMAT §4.2.1).
        receiver = Receiver(store, "127.0.0.1", broker.port, "recorders", "index-receiver",
                            central_key=load_central_key(Path(recorded.rig.central.receiver.private_key_file)))
        receiver.start()
        try:
            assert receiver.connected.wait(10)
            replay_into(receiver, broker, [recorded.spool_dir, *forged])
            assert receiver.index is not None
            yield Central(receiver, receiver.index, store, recorded)
        finally:
            receiver.stop()


def display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def opened_column(line: str) -> int:
    """Where, in terminal cells, the line's first date and time begins."""
    match = re.search(r"\d{4}-\d\d-\d\d \d\d:", line)
    assert match is not None, line
    return display_width(line[: match.start()])


def found(index: SessionIndex, query: Query) -> set[str]:
    return {r.session for r in index.sessions(query)}


def row_of(index: SessionIndex, session: str) -> SessionRow:
    (row,) = [r for r in index.sessions(Query()) if r.session == session]
    return row


def test_live_upload_is_indexed_with_its_open_entry_metadata__CLASSIFY(recorded: RecordedSession) -> None:
    # The shared session went device → broker → receiver for real; the rig's receiver indexed it as it came.
    index = SessionIndex(recorded.rig.store, load_central_key(Path(recorded.rig.central.receiver.private_key_file)))
    try:
        (row,) = index.sessions(Query(device=recorded.rig.config.device.id))
    finally:
        index.close()
    entries = [json.loads(layout.entry_path(recorded.spool_dir, s).read_bytes())
               for s in layout.entry_seqs(recorded.spool_dir)]
    opening = personal(entries[0]["body"], recorded.rig.central.receiver.private_key_file)
    segments = [e["body"] for e in entries if e["kind"] == "segment"]
    assert (row.session, row.unit, row.room, row.location) == (
        recorded.session, opening["unit"], opening["room"], opening["location"])
    assert [(o.name, o.certificate) for o in row.officers] == [(o["name"], o["certificate"])
                                                               for o in opening["officers"]]
    assert (row.opened_at, row.closed_at) == (entries[0]["time"], entries[-1]["time"])
    assert (row.segments, row.media_bytes, row.entries) == (len(segments), sum(s["bytes"] for s in segments),
                                                           len(entries))
    assert row.complete and not row.interrupted
    # Streamed as it was made: every entry reached central within seconds, well inside the deadline.
    assert row.max_entry_delay < dt.timedelta(seconds=30)
    assert row.standing(dt.datetime.now(dt.UTC), UploadPolicy()).status == "on time"


@pytest.mark.parametrize(("query", "expected"), [
    pytest.param(Query(device=ROOM), {THEFT, DISPUTE, OUTAGE}, id="device"),
    pytest.param(Query(device="ROOM-0"), set(), id="device-is-exact"),
    pytest.param(Query(officer="王警官"), {THEFT, DISPUTE}, id="officer-name"),
    pytest.param(Query(officer="44010000456"), {DISPUTE}, id="officer-certificate"),
    pytest.param(Query(officer="alice"), {OUTAGE}, id="officer-name-any-ascii-case"),
    pytest.param(Query(unit="城关"), {THEFT, DISPUTE}, id="unit-part"),
    pytest.param(Query(case="〔2026〕88号"), {THEFT}, id="case-reference"),
    pytest.param(Query(case="纠纷"), {DISPUTE}, id="case-matter"),
    pytest.param(Query(party="陈某某"), {THEFT}, id="party"),
    pytest.param(Query(party="赵"), {DISPUTE}, id="party-part"),
    pytest.param(Query(unit="城关派出所", officer="44010000456", party="赵某"), {DISPUTE}, id="all-must-match"),
    pytest.param(Query(unit="城关派出所", party="陈某某", officer="刘警官"), set(), id="one-fails"),
    pytest.param(Query(party="%"), set(), id="wildcards-are-literal"),
])
def test_sessions_found_by_each_field__CLASSIFY(central: Central, query: Query, expected: set[str]) -> None:
    assert found(central.index, query) == expected


def test_sessions_found_by_officer_certificate_and_name_of_the_live_session__CLASSIFY(central: Central) -> None:
    live = central.recorded.session
    assert found(central.index, Query(officer="44000000001")) == {live}
    assert found(central.index, Query(officer="李四", unit="示例执法单位")) == {live}


def test_sessions_found_by_time_of_use__CLASSIFY(central: Central) -> None:
    theft_open: dt.datetime = FORGED[THEFT]["opened"]
    # A session counts if it was in use at any time in the range, including one that began before it.
    assert found(central.index, Query(start=theft_open - HOUR, end=theft_open + HOUR)) == {THEFT}
    assert found(central.index, Query(start=theft_open + dt.timedelta(seconds=3),
                                      end=theft_open + dt.timedelta(seconds=4))) == {THEFT}
    assert found(central.index, Query(start=theft_open + HOUR, end=NOW - 20 * 24 * HOUR)) == set()
    # Time zones are respected: the same instant written in UTC.
    utc = theft_open.astimezone(dt.UTC)
    assert found(central.index, Query(start=utc, end=utc + dt.timedelta(seconds=1))) == {THEFT}
    assert found(central.index, Query(start=NOW - 31 * HOUR)) == {OUTAGE, central.recorded.session}


def test_interruption_and_totals_come_from_the_ledger__CLASSIFY(central: Central) -> None:
    rows = {r.session: r for r in central.index.sessions(Query(device=ROOM))}
    assert rows[DISPUTE].interrupted and not rows[THEFT].interrupted
    assert rows[DISPUTE].close_reason == "stop button held"
    assert (rows[THEFT].segments, rows[THEFT].entries) == (3, 5)
    assert rows[THEFT].parties == ("陈某某", "李某")
    assert not rows[OUTAGE].complete and rows[OUTAGE].closed_at is None and rows[OUTAGE].entries == 3


def answers(index: SessionIndex, now: dt.datetime) -> list[Any]:
    queries = [Query(), Query(officer="王警官"), Query(party="赵某"), Query(case="88号"), Query(unit="东城"),
               Query(start=NOW - 31 * HOUR)]
    return [[r.as_json(now, UploadPolicy()) for r in index.sessions(q)] for q in queries] + [
        [(r.session, s) for r, s in index.late(now, UploadPolicy())]]


def test_index_rebuilt_from_the_files_alone_gives_the_same_answers__CLASSIFY(central: Central, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    before = answers(central.index, now)
    assert len(before[0]) == 4
    # A copy of the store without the index file (as if it were deleted): opened, it is rebuilt from the files.
    shutil.copytree(central.store.root / "sessions", tmp_path / "sessions")
    assert not (tmp_path / INDEX_FILE).exists()
    key = load_central_key(Path(central.recorded.rig.central.receiver.private_key_file))
    copy = SessionIndex(FileStore(tmp_path), key)
    try:
        assert answers(copy, now) == before
        assert copy.rebuild() == 4
        assert answers(copy, now) == before
    finally:
        copy.close()
    # Rebuilding the receiver's own index in place changes nothing either.
    assert central.index.rebuild() == 4
    assert answers(central.index, now) == before


def test_cli_sessions_lists_the_matching_sessions__CLASSIFY(central: Central,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    store = str(central.store.root)
    assert main(["central", "sessions", "--store", store, "--officer", "王警官"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["session", "device", "unit", "officers", "case", "opened", "closed", "segments",
                                "MB", "late?"]
    assert [line.split()[0] for line in lines[1:]] == [THEFT, DISPUTE]  # oldest first
    theft = lines[1]
    assert "城关派出所" in theft and "穗公刑立字〔2026〕88号" in theft and "late" in theft
    assert "(interrupted)" in lines[2] and "邻里纠纷调解" in lines[2]

    assert main(["central", "sessions", "--store", store, "--party", "赵某", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["session"], row["parties"], row["interrupted"]) == (DISPUTE, ["赵某"], True)
    assert [o["certificate"] for o in row["officers"]] == ["44010000123", "44010000456"]

    # Dates without an offset are the agency's days (Asia/Shanghai by default); --to takes in the whole day.
    day = FORGED[THEFT]["opened"].astimezone(ZoneInfo("Asia/Shanghai")).date().isoformat()
    assert main(["central", "sessions", "--store", store, "--from", day, "--to", day]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]] == [THEFT]

    assert main(["central", "sessions", "--store", store, "--device", ROOM]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert "东城交警大队" in lines[2]
    # Columns line up in a terminal, where each Chinese character takes two cells.
    assert len({opened_column(line) for line in lines}) == 1

    assert main(["central", "sessions", "--store", store, "--unit", "没有这个单位"]) == 0
    assert capsys.readouterr().out.strip() == "no matching sessions"


def test_cli_late_lists_late_and_at_risk_sessions_per_device__UPLOAD_24H(
        central: Central, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(central.store.root)
    # OUTAGE is still incomplete a day after its last entry: the exit status says something is missing.
    assert main(["central", "late", "--store", store]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0] == ROOM
    listed = [line.split()[0] for line in out.splitlines()[1:]]
    assert listed == [THEFT, DISPUTE, OUTAGE]  # the live session arrived in seconds: not listed
    outage = next(line for line in out.splitlines() if OUTAGE in line)
    assert "at risk" in outage and "not closed; 3 entries received" in outage

    assert main(["central", "late", "--store", store, "--limit-hours", "48", "--warn-hours", "6,29", "--json"]) == 1
    standing = {r["session"]: r["deadline"] for r in json.loads(capsys.readouterr().out)}
    assert standing[OUTAGE]["status"] == "warning" and standing[OUTAGE]["threshold_hours"] == 29
    assert standing[THEFT]["status"] == "late" and standing[THEFT]["hours"] > 24 * 29

    # Without flags, the thresholds are the configuration's, the same the devices warn by.
    config = tmp_path / "recorder.toml"
    config.write_text(f'[receiver]\nstore_dir = "{store}"\n[upload]\ndeadline_hours = 36\nwarn_hours = [29]\n')
    assert main(["central", "late", "--config", str(config), "--json"]) == 1
    standing = {r["session"]: r["deadline"] for r in json.loads(capsys.readouterr().out)}
    assert (standing[OUTAGE]["status"], standing[OUTAGE]["threshold_hours"]) == ("warning", 29)


def test_cli_central_actions_keep_their_own_options(central: Central, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # An option of another action is refused by that action's own parser, before anything runs.
    for argv in (["central", "serve", "--store", str(tmp_path), "--officer", "王警官"],
                 ["central", "late", "--store", str(central.store.root), "--from", "2026-01-01"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
        assert "unrecognized arguments" in capsys.readouterr().err
    assert main(["central", "sessions", "--store", str(tmp_path / "nowhere")]) == 2
    assert "not a central store" in capsys.readouterr().err
    key = DeviceIdentity(Ed25519PrivateKey.generate()).public_key_b64
    assert main(["central", "enroll", "--store", str(tmp_path / "c"), "GD-0009", key]) == 0
    assert FileStore(tmp_path / "c").device_key("GD-0009") == key
    assert main(["central", "enroll", "--store", str(tmp_path / "c"), "GD-0009", "not a key"]) == 2
    assert "not a base64 Ed25519 public key" in capsys.readouterr().err


def test_cli_late_says_when_nothing_is_late__UPLOAD_24H(recorded: RecordedSession,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["central", "late", "--store", str(recorded.rig.store.root)]) == 0
    assert capsys.readouterr().out.strip() == "nothing is late, at risk or past a warning"


def test_cli_reindex_rebuilds_a_deleted_index__CLASSIFY(central: Central, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(central.store.root, tmp_path / "c")
    for leftover in (tmp_path / "c").glob(INDEX_FILE + "*"):
        leftover.unlink()
    assert main(["central", "reindex", "--store", str(tmp_path / "c")]) == 0
    assert capsys.readouterr().out.startswith("indexed 4 sessions")
    assert main(["central", "sessions", "--store", str(tmp_path / "c"), "--officer", "44010000456"]) == 0
    assert DISPUTE in capsys.readouterr().out


def test_a_broken_index_costs_no_receipt__UPLOAD_24H(tmp_path: Path, broker: LocalBroker) -> None:
    room = DeviceIdentity(Ed25519PrivateKey.generate())
    session = forge(tmp_path / "spool", room, "20260101T050000Z-0000d4", NOW - HOUR, FORGED[THEFT]["metadata"], 2)
    store = FileStore(tmp_path / "central")
    store.enroll(ROOM, room.public_key_b64)
    receiver = Receiver(store, "127.0.0.1", broker.port, "recorders", "index-receiver")
    assert receiver.index is not None
    receiver.index.close()  # every index update now fails
    receipts: list[bytes] = []

    def on_receipt(client: Any, userdata: Any, message: Any) -> None:
        receipts.append(message.payload)

    listener = make_client("device-listener", 5)
    listener.on_message = on_receipt
    listener.connect("127.0.0.1", broker.port)
    listener.subscribe(protocol.topic("recorders", ROOM, protocol.RECEIPT), qos=1)
    listener.loop_start()
    receiver.start()
    try:
        assert receiver.connected.wait(10)
        send(broker, messages(session))
        total = len(layout.entry_seqs(session))
        assert wait_until(lambda: len(receipts) == total), receipts
    finally:
        listener.disconnect()
        listener.loop_stop()
        receiver.stop()
    # The index is a convenience: rebuilt from the files, it has the whole session.
    rebuilt = SessionIndex(store)
    try:
        rebuilt.rebuild()
        (row,) = rebuilt.sessions(Query(party="陈某某"))
        assert row.complete and row.entries == total
    finally:
        rebuilt.close()


def write_entries(store_root: Path, session: str, opened: dt.datetime, kinds: list[str],
                  stored: dt.datetime, device: str = ROOM) -> Path:
    """Entries written straight into a store (no receiver), 1 minute apart, all stored at `stored`:
    an `open`, a segment for each "segment", a `close` if the last kind is "close"."""
    session_dir = store_root / "sessions" / device / session
    identity = DeviceIdentity(Ed25519PrivateKey.generate())
    forged.forge(session_dir, device, identity, forged.StepClock(opened, dt.timedelta(minutes=1)),
                 {"unit": "城关派出所", "officers": [{"name": "王警官", "certificate": "44010000123"}]},
                 kinds.count("segment"), closed=kinds[-1] == "close", write_media=False)
    for seq in layout.entry_seqs(session_dir):
        # Central's storage time is the committed file's time: fabricate it.
        os.utime(layout.entry_path(session_dir, seq), (stored.timestamp(), stored.timestamp()))
    return session_dir


def test_late_and_at_risk_sessions_by_their_times__UPLOAD_24H(tmp_path: Path) -> None:
    FileStore(tmp_path)
    now = dt.datetime(2026, 11, 22, 12, 0, tzinfo=CST)
    closed = ["open", "segment", "close"]
    cases = {
        # session id: (opened, kinds, stored)          what central knows at `now`
        "20261101T000000Z-00000a": (now - 40 * HOUR, closed, now - 8 * HOUR),   # closed, stored 32 h later
        "20261101T000000Z-00000b": (now - 40 * HOUR, closed, now - 39 * HOUR),  # closed, stored 1 h later
        "20261101T000000Z-00000c": (now - 13 * HOUR, closed[:2], now - 12 * HOUR),  # open, last entry 13 h ago
        "20261101T000000Z-00000d": (now - 21 * HOUR, closed[:2], now - 21 * HOUR),  # 21 h
        "20261101T000000Z-00000e": (now - 25 * HOUR, closed[:2], now - HOUR),   # 25 h, the last part came late
        "20261101T000000Z-00000f": (now - HOUR, closed[:2], now - HOUR),        # recording, an hour old
    }
    for session, (opened, kinds, stored) in cases.items():
        write_entries(tmp_path, session, opened, kinds, stored)
    index = SessionIndex(FileStore(tmp_path))
    try:
        late = [(r.session[-1], s.status, s.threshold_hours) for r, s in index.late(now, UploadPolicy())]
        assert late == [("a", "late", None), ("e", "at risk", None), ("d", "warning", 20.0), ("c", "warning", 12.0)]
        lenient = UploadPolicy(48.0, (22.0,))
        assert [(r.session[-1], s.status) for r, s in index.late(now, lenient)] == [("e", "warning")]
        a = row_of(index, "20261101T000000Z-00000a")
        assert a.upload_delay == dt.timedelta(hours=32) - dt.timedelta(minutes=2)

        # The close of "d" is stored, but the index never heard of it (an update that failed): `late`
        # catches up from the files first, so it raises no false alarm.
        write_entries(tmp_path, "20261101T000000Z-00000d", now - 21 * HOUR, closed, now - 20 * HOUR)
        assert "d" not in [r.session[-1] for r, _ in index.late(now, UploadPolicy())]
    finally:
        index.close()


def test_index_skips_what_the_receiver_would_never_store(tmp_path: Path) -> None:
    session_dir = write_entries(tmp_path, "20261101T000000Z-00000a", NOW, ["open", "segment", "segment", "close"],
                                NOW)
    layout.entry_path(session_dir, 2).write_bytes(b"{not json")
    (tmp_path / "sessions" / "not a device" / "20261101T000000Z-00000b").mkdir(parents=True)
    (tmp_path / "sessions" / ROOM / "not-a-session").mkdir()
    index = SessionIndex(FileStore(tmp_path))
    try:
        (row,) = index.sessions(Query())
        assert (row.entries, row.segments, row.complete) == (2, 1, False)  # indexed up to the bad entry
    finally:
        index.close()


def test_search_pages_count_and_judge_status_as_the_rows_do__CLASSIFY(tmp_path: Path) -> None:
    from bench.bench_web import fill_index

    store = FileStore(tmp_path / "central")
    fill_index(store, 1500)
    index = SessionIndex(store)
    policy = UploadPolicy(deadline_hours=24.0, warn_hours=(12.0,))
    # Late in 2026: the synthetic sessions (from 1 January, five minutes apart) are all complete by then.
    now = dt.datetime(2026, 1, 6, tzinfo=dt.UTC)
    everything = index.sessions(Query())
    for query in (Query(), Query(unit="东城"), Query(officer="王"), Query(officer="44000000012"), Query(party="李"),
                  Query(case="a2026"), Query(room="询问室3"), Query(units=("东城市公安局城关分局",)),
                  Query(unit="示例", officer="张"), Query(device="ROOM-0042")):
        expected = list(reversed(index.sessions(query)))
        pages: list[SessionRow] = []
        for page in range(4):
            rows, total = index.search(query, now, policy, 7, page * 7)
            assert total == len(expected), query
            pages += rows
        assert [(r.device, r.session) for r in pages] == [(r.device, r.session) for r in expected[:28]], query
    def judged(row: SessionRow, status: str) -> bool:
        if status == "complete":
            return row.complete
        if status == "interrupted":
            return row.interrupted
        return row.standing(now, policy).status == status

    for status in ("complete", "interrupted", "late", "receiving", "at risk"):
        _, total = index.search(Query(status=status), now, policy, 10)
        assert total == sum(1 for r in everything if judged(r, status)), status
    assert index.search(Query(status="complete"), now, policy, 10)[1] == 1500
    assert index.search(Query(unit="100%"), now, policy, 10)[1] == 0  # '%' is meant literally
    with pytest.raises(ValueError, match="status"):
        index.search(Query(status="lost"), now, policy, 10)
