"""Central's session index: find stored sessions by device, unit, officer, case, party and time (CLASSIFY),
and see which are late or at risk of missing the 24-hour deadline (UPLOAD-24H).

The index is an SQLite file beside the store (`store.state_file("index.sqlite3")`), derived entirely from
what the store holds: a row for each session (the `open` entry's metadata, with the booking it names, if any;
totals of the entries stored so far, the media time recorded among them; the `close`, and the decline code of
a declined session), child tables for its officers and parties and for its breaks (the cause the device
detected, and the reason an officer stated), and one row per stored entry with the device's time and
central's storage time. It is never the only record of anything: `rebuild()` (`recorder central reindex`)
re-derives it from the stored sessions alone, and the receiver stores and receipts whether or not it works.
It reads the store only through `CentralStore`.

Central's storage time of an entry is what the store reports (a FileStore: the modification time of the
committed file, stamped just before the receipt goes out), so the index and a rebuild agree exactly; copy
a FileStore with its file times (`cp -a`, `rsync -a`) to keep them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from central.errors import CentralError
from central.store import CentralStore
from evidence.deadline import Level, UploadPolicy
from evidence.entry import EVENT, INTERRUPTION, SEGMENT, BookingRef, Entry, Officer, parse_entry, unsealed
from evidence.errors import MalformedEntry

log = logging.getLogger(__name__)

INDEX_FILE = "index.sqlite3"
SCHEMA_VERSION = 4

_SCHEMA = """
CREATE TABLE sessions (
    device TEXT NOT NULL,
    session TEXT NOT NULL,
    unit TEXT NOT NULL,
    room TEXT NOT NULL,
    location TEXT NOT NULL,
    case_ref TEXT NOT NULL,
    matter TEXT NOT NULL,
    opened_at TEXT NOT NULL,
    opened_ts REAL NOT NULL,
    closed_at TEXT,
    closed_ts REAL,
    close_reason TEXT,
    segments INTEGER NOT NULL DEFAULT 0,
    media_bytes INTEGER NOT NULL DEFAULT 0,
    last_seq INTEGER NOT NULL DEFAULT -1,
    last_at TEXT NOT NULL,
    last_ts REAL NOT NULL,
    last_stored_ts REAL NOT NULL,
    interrupted INTEGER NOT NULL DEFAULT 0,
    recorded_ns INTEGER NOT NULL DEFAULT 0,
    declined TEXT,
    booking_id TEXT,
    booking_version INTEGER,
    booking_act TEXT,
    booking_retention TEXT,
    booking_start TEXT,
    booking_end TEXT,
    PRIMARY KEY (device, session)
);
CREATE INDEX sessions_opened ON sessions (opened_ts);
CREATE INDEX sessions_unit ON sessions (unit, opened_ts);
CREATE INDEX sessions_booking ON sessions (booking_id);
CREATE TABLE officers (
    device TEXT NOT NULL,
    session TEXT NOT NULL,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    certificate TEXT NOT NULL,
    PRIMARY KEY (device, session, position),
    FOREIGN KEY (device, session) REFERENCES sessions ON DELETE CASCADE
);
CREATE INDEX officers_name ON officers (name);
CREATE INDEX officers_certificate ON officers (certificate);
CREATE TABLE parties (
    device TEXT NOT NULL,
    session TEXT NOT NULL,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (device, session, position),
    FOREIGN KEY (device, session) REFERENCES sessions ON DELETE CASCADE
);
CREATE INDEX parties_name ON parties (name);
CREATE TABLE interruptions (
    device TEXT NOT NULL,
    session TEXT NOT NULL,
    seq INTEGER NOT NULL,
    cause TEXT NOT NULL,
    reason TEXT,
    PRIMARY KEY (device, session, seq),
    FOREIGN KEY (device, session) REFERENCES sessions ON DELETE CASCADE
) WITHOUT ROWID;
CREATE TABLE entries (
    device TEXT NOT NULL,
    session TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    time TEXT NOT NULL,
    time_ts REAL NOT NULL,
    stored_ts REAL NOT NULL,
    PRIMARY KEY (device, session, seq),
    FOREIGN KEY (device, session) REFERENCES sessions ON DELETE CASCADE
) WITHOUT ROWID;
"""
_TABLES = ("entries", "interruptions", "parties", "officers", "sessions")


@dataclass(frozen=True)
class Query:
    """Every given field must match; text fields match when they contain the value (ignoring ASCII case)."""

    device: str | None = None
    officer: str | None = None
    """An officer's name or certificate number."""
    unit: str | None = None
    case: str | None = None
    """The case reference or the matter."""
    party: str | None = None
    start: dt.datetime | None = None
    """Sessions still in use at or after this moment..."""
    end: dt.datetime | None = None
    """...and opened before this one."""
    room: str | None = None
    session: str | None = None
    """The session id, exactly."""
    units: tuple[str, ...] | None = None
    """Only sessions of these units, exactly (a viewer's own unit); None: any unit."""
    status: str | None = None
    """One of STATUSES, judged against the upload deadline at `search`'s `now`."""
    booking: str | None = None
    """The booking id the session's `open` entry names, exactly."""


STATUSES = ("receiving", "complete", "late", "at risk", "interrupted")
_FEW = 500
"""`search` counts the matches of a filter apart only when more than this many sessions pass it."""


@dataclass(frozen=True)
class Standing:
    """Where a session stands against the deadline."""

    status: str
    """One of "on time", "late" (complete, its last entry arrived after the limit), "receiving" (incomplete and
    young), "warning" (incomplete, past a warning threshold) or "at risk" (incomplete, past the limit)."""
    hours: float
    """Complete: hours from the close to the receipt of the last entry. Incomplete: hours since the last
    entry received was written on the device."""
    threshold_hours: float | None = None
    """The warning threshold passed, for "warning"."""

    @property
    def alarming(self) -> bool:
        return self.status in ("warning", "at risk", "late")


@dataclass(frozen=True)
class SessionRow:
    device: str
    session: str
    unit: str
    room: str
    location: str
    case: str
    matter: str
    officers: tuple[Officer, ...]
    parties: tuple[str, ...]
    opened_at: str
    """The `open` entry's time, as the device wrote it (its local time with offset)."""
    closed_at: str | None
    """The `close` entry's time; None while the close has not been received."""
    close_reason: str | None
    segments: int
    media_bytes: int
    entries: int
    """Entries indexed: the session's entries from seq 0 without a gap (one stored ahead of a missing
    predecessor is counted once the predecessor is stored)."""
    last_at: str
    """The device time of the last entry received."""
    last_stored: dt.datetime
    """When central stored the last entry received (UTC)."""
    max_entry_delay: dt.timedelta
    """The longest any entry took from being written on the device to being stored here (REALTIME)."""
    interrupted: bool
    """Whether the session has an `interruption` entry (the device lost power or crashed mid-session)."""
    opened_ts: float
    closed_ts: float | None
    last_ts: float
    """The three device times above as POSIX seconds."""
    booking: BookingRef | None = None
    """The booking the session was recorded under, as its `open` entry names it; None without one."""

    @property
    def complete(self) -> bool:
        return self.closed_at is not None

    @property
    def upload_delay(self) -> dt.timedelta:
        """From the close (or, while incomplete, the last entry received) to central storing that entry."""
        since = self.closed_ts if self.closed_ts is not None else self.last_ts
        return dt.timedelta(seconds=self.last_stored.timestamp() - since)

    def standing(self, now: dt.datetime, policy: UploadPolicy) -> Standing:
        if self.closed_ts is not None:
            arrived = policy.judge(self.closed_ts, self.last_stored.timestamp())
            return Standing("late" if arrived.level is Level.LATE else "on time", arrived.hours)
        # Age by the device's time of the last entry, not by when central stored it: a device back after a
        # long outage delivers old entries now, and its recording finished no earlier than they were written.
        judged = policy.judge(self.last_ts, now.timestamp())
        if judged.level is Level.LATE:
            return Standing("at risk", judged.hours)
        if judged.level is Level.WARN:
            return Standing("warning", judged.hours, judged.threshold_hours)
        return Standing("receiving", judged.hours)

    def as_json(self, now: dt.datetime, policy: UploadPolicy) -> dict[str, Any]:
        standing = self.standing(now, policy)
        return {
            "device": self.device, "session": self.session, "unit": self.unit, "room": self.room,
            "location": self.location, "case": self.case, "matter": self.matter,
            "officers": [{"name": o.name, "certificate": o.certificate} for o in self.officers],
            "parties": list(self.parties), "opened_at": self.opened_at, "closed_at": self.closed_at,
            "close_reason": self.close_reason, "segments": self.segments, "media_bytes": self.media_bytes,
            "entries": self.entries, "last_entry_at": self.last_at,
            "last_stored_at": self.last_stored.isoformat(timespec="milliseconds"),
            "interrupted": self.interrupted, "upload_delay_s": round(self.upload_delay.total_seconds(), 3),
            "max_entry_delay_s": round(self.max_entry_delay.total_seconds(), 3),
            "deadline": {"status": standing.status, "hours": round(standing.hours, 3),
                         "threshold_hours": standing.threshold_hours},
            "booking": None if self.booking is None else self.booking.as_json(),
        }


def _timestamp(text: str, fallback: float) -> float:
    # Readers never check an entry's time (FORMAT §3.1); one that does not parse is taken as the moment
    # central stored it, so the session stays findable.
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return fallback
    return when.timestamp() if when.tzinfo is not None else fallback


_COLUMNS = ("device, session, unit, room, location, case_ref, matter, opened_at, closed_at, close_reason, segments, "
            "media_bytes, last_seq, last_at, last_stored_ts, interrupted, opened_ts, closed_ts, last_ts, booking_id, "
            "booking_version, booking_act, booking_retention, booking_start, booking_end")


class SessionIndex:
    """One connection, used from the receiver's network thread and from its owner's, so every use takes a
    lock; other processes (the `recorder central` commands) share the file through SQLite's locking."""

    def __init__(self, store: CentralStore, central_key: X25519PrivateKey | None = None,
                 timeout_s: float = 10.0) -> None:
        self.store = store
        self._central_key = central_key
        """Opens the sealed personal fields of `open` entries (FORMAT §4.2.1); without it they index empty."""
        self._unopened = 0
        self.path = store.state_file(INDEX_FILE)
        if not self.path.exists():
            # Owner-only: the index gathers officers' and parties' names into one searchable file.
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._lock = threading.Lock()
        self._timeout_s = timeout_s
        self._db = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None, check_same_thread=False)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # Cheap to rebuild, but a lost commit would leave a session looking incomplete (a false "at
            # risk"): one more fsync per entry is worth it next to the store's own.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            with self._transaction() as db:
                fresh = db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION
                if fresh:
                    self._create(db)
            if fresh:
                # New, or made by another version: derive it from the files.
                self._fill()
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def reader(self) -> sqlite3.Connection:
        """A read-only connection of the caller's own to the index, for aggregate queries (central/stats.py)
        that should neither wait for this one's lock nor hold it up; the caller closes it."""
        try:
            return sqlite3.connect(self.path.as_uri() + "?mode=ro", uri=True, timeout=self._timeout_s)
        except sqlite3.Error as err:
            raise CentralError(f"{self.path}: cannot read the session index: {err}") from err

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            # IMMEDIATE takes the write lock before we read what to write, so the receiver and a
            # `reindex` or `late` in another process never interleave their updates of a session.
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def record(self, device: str, session: str, known: dict[int, Entry] | None = None) -> int:
        """Index whatever of the session is stored but not yet indexed (the receiver calls this after each
        commit, with the entries it has just stored in `known`, so they are not parsed again; reading the
        store for the rest means one missed call is made up by the next). Returns the entries added."""
        with self._transaction() as db:
            return self._catch_up(db, device, session, known or {})

    def rebuild(self) -> int:
        """Forget everything and re-derive the index from the stored files; returns the sessions indexed.

        Session by session, so a receiver sharing the index waits for one session at a time, never for the
        whole store; what it records meanwhile is kept, since indexing a session twice changes nothing."""
        with self._transaction() as db:
            for table in _TABLES:
                db.execute(f"DELETE FROM {table}")
        return self._fill()

    def sessions(self, query: Query) -> list[SessionRow]:
        """The sessions matching every field given in `query`, oldest first."""
        where, params = self._where(query, None, None)
        return self._select(where, params)

    def search(self, query: Query, now: dt.datetime, policy: UploadPolicy, limit: int,
               offset: int = 0) -> tuple[list[SessionRow], int]:
        """A page of the sessions matching `query`, newest first, and how many match in all."""
        where, params = self._where(query, now, policy)
        order = "ORDER BY opened_ts DESC, device, session"
        with self._lock:
            self._db.execute("BEGIN")  # one snapshot for the count, the page and its officers and parties
            try:
                if where == "1":
                    # Everything: counted in a moment, the page read off the time index.
                    (total,) = self._db.execute("SELECT count(*) FROM sessions").fetchone()
                    keys = self._db.execute(f"SELECT device, session FROM sessions s {order} LIMIT ? OFFSET ?",
                                            [limit, offset]).fetchall()
                else:
                    # A filter is judged once per session: the count comes with the page (a window over the
                    # matches), and only the page's keys are sorted out and read in full below.
                    found = self._db.execute(f"SELECT device, session, count(*) OVER () FROM sessions s WHERE {where}"
                                             f" {order} LIMIT ? OFFSET ?", [*params, limit, offset]).fetchall()
                    if found:
                        total = found[0][2]
                    else:
                        (total,) = self._db.execute(f"SELECT count(*) FROM sessions s WHERE {where}",
                                                    params).fetchone()
                    keys = [(device, session) for device, session, _ in found]
                rows = [self._db.execute(f"SELECT {_COLUMNS} FROM sessions WHERE device = ? AND session = ?",
                                         key).fetchone() for key in keys]
                return [self._row(r) for r in rows], int(total)
            finally:
                self._db.execute("COMMIT")

    @staticmethod
    def _where(query: Query, now: dt.datetime | None, policy: UploadPolicy | None) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []

        def pattern(value: str) -> str:
            # LIKE ignores ASCII case, as the CLI always has; '%', '_' and '\\' in a name are meant literally.
            return "%" + value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"

        def contains(column: str, value: str) -> None:
            clauses.append(f"{column} LIKE ? ESCAPE '\\'")
            params.append(pattern(value))

        if query.device is not None:
            clauses.append("device = ?")
            params.append(query.device)
        if query.session is not None:
            clauses.append("session = ?")
            params.append(query.session)
        if query.booking is not None:
            clauses.append("booking_id = ?")
            params.append(query.booking)
        if query.unit is not None:
            contains("unit", query.unit)
        if query.room is not None:
            contains("room", query.room)
        if query.units is not None:
            clauses.append(f"unit IN ({', '.join('?' * len(query.units))})" if query.units else "0")
            params += list(query.units)
        if query.case is not None:
            clauses.append("(case_ref LIKE ? ESCAPE '\\' OR matter LIKE ? ESCAPE '\\')")
            params += [pattern(query.case)] * 2
        # One pass over the officers (parties) for the matching sessions, not one per session.
        if query.officer is not None:
            clauses.append("(device, session) IN (SELECT device, session FROM officers WHERE name LIKE ? ESCAPE '\\'"
                           " OR certificate LIKE ? ESCAPE '\\')")
            params += [pattern(query.officer)] * 2
        if query.party is not None:
            clauses.append("(device, session) IN (SELECT device, session FROM parties WHERE name LIKE ? ESCAPE '\\')")
            params.append(pattern(query.party))
        if query.start is not None:
            clauses.append("coalesce(closed_ts, last_ts) >= ?")
            params.append(query.start.timestamp())
        if query.end is not None:
            clauses.append("opened_ts < ?")
            params.append(query.end.timestamp())
        if query.status is not None:
            if query.status not in STATUSES or now is None or policy is None:
                raise ValueError(f"status {query.status!r}: one of {', '.join(STATUSES)}, judged at a given time")
            limit = policy.deadline_hours * 3600
            clauses.append({
                "complete": "closed_ts IS NOT NULL",
                "interrupted": "interrupted = 1",
                "late": "closed_ts IS NOT NULL AND last_stored_ts - closed_ts >= ?",
                "receiving": "closed_ts IS NULL AND ? - last_ts < ?",
                "at risk": "closed_ts IS NULL AND ? - last_ts >= ?",
            }[query.status])
            params += {"late": [limit], "receiving": [now.timestamp(), limit],
                       "at risk": [now.timestamp(), limit]}.get(query.status, [])
        return " AND ".join(clauses) or "1", params

    def latest_rooms(self) -> dict[str, tuple[str, str]]:
        """Each device's unit and room as its latest session (by opening time) names them."""
        with self._lock:
            rows = self._db.execute("SELECT device, unit, room FROM sessions s WHERE opened_ts = (SELECT max(opened_ts)"
                                    " FROM sessions WHERE device = s.device) ORDER BY device").fetchall()
        return {device: (unit, room) for device, unit, room in rows}

    def late(self, now: dt.datetime, policy: UploadPolicy) -> list[tuple[SessionRow, Standing]]:
        """The sessions late, at risk or past a warning threshold, by device, oldest first.

        Incomplete sessions are first brought up to date from the files, so an index update that went
        missing (the receiver logs it and carries on) never raises a false alarm."""
        with self._transaction() as db:
            incomplete = db.execute("SELECT device, session FROM sessions WHERE closed_ts IS NULL").fetchall()
            for device, session in incomplete:
                self._catch_up(db, device, session, {})
        limit = policy.deadline_hours * 3600
        first = min((policy.deadline_hours, *policy.warn_hours)) * 3600
        rows = self._select("(closed_ts IS NOT NULL AND last_stored_ts - closed_ts >= ?)"
                            " OR (closed_ts IS NULL AND ? - last_ts >= ?)",
                            [limit, now.timestamp(), first])
        found = [(row, row.standing(now, policy)) for row in rows]
        return sorted(((r, s) for r, s in found if s.alarming), key=lambda rs: (rs[0].device, rs[0].opened_ts))

    def _select(self, where: str, params: Sequence[Any], order: str = "opened_ts, device, session",
                limit: str = "") -> list[SessionRow]:
        with self._lock:
            self._db.execute("BEGIN")  # one snapshot for the sessions and their officers and parties
            try:
                rows = self._db.execute(f"SELECT {_COLUMNS} FROM sessions s WHERE {where} ORDER BY {order}{limit}",
                                        params).fetchall()
                return [self._row(r) for r in rows]
            finally:
                self._db.execute("COMMIT")

    def _row(self, r: tuple[Any, ...]) -> SessionRow:
        key = (r[0], r[1])
        officers = self._db.execute("SELECT name, certificate FROM officers WHERE device = ? AND session = ?"
                                    " ORDER BY position", key).fetchall()
        parties = self._db.execute("SELECT name FROM parties WHERE device = ? AND session = ? ORDER BY position",
                                   key).fetchall()
        (max_delay,) = self._db.execute("SELECT max(stored_ts - time_ts) FROM entries WHERE device = ? AND"
                                        " session = ?", key).fetchone()
        return SessionRow(
            device=r[0], session=r[1], unit=r[2], room=r[3], location=r[4], case=r[5], matter=r[6],
            officers=tuple(Officer(n, c) for n, c in officers), parties=tuple(p for (p,) in parties),
            opened_at=r[7], closed_at=r[8], close_reason=r[9], segments=r[10], media_bytes=r[11],
            entries=r[12] + 1, last_at=r[13], last_stored=dt.datetime.fromtimestamp(r[14], dt.UTC),
            max_entry_delay=dt.timedelta(seconds=max_delay),
            interrupted=bool(r[15]), opened_ts=r[16], closed_ts=r[17], last_ts=r[18],
            booking=None if r[19] is None else BookingRef(r[19], r[20], r[21], r[22], dt.datetime.fromisoformat(r[23]),
                                                          dt.datetime.fromisoformat(r[24])),
        )

    @staticmethod
    def _create(db: sqlite3.Connection) -> None:
        for table in _TABLES:
            db.execute(f"DROP TABLE IF EXISTS {table}")
        # Statement by statement: executescript() would commit the transaction we are in.
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _fill(self) -> int:
        for device, session in self.store.sessions():
            self.record(device, session)
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM sessions").fetchone()[0])

    def _catch_up(self, db: sqlite3.Connection, device: str, session: str, known: dict[int, Entry]) -> int:
        row = db.execute("SELECT last_seq FROM sessions WHERE device = ? AND session = ?", (device, session)).fetchone()
        seq = 0 if row is None else int(row[0]) + 1
        added = 0
        while True:
            where = f"{device}/{session} entry {seq}"
            try:
                entry = known.get(seq)
                if entry is not None:
                    # Just stored by the receiver from these very bytes: only its storage time is read.
                    stored_ts = self.store.stored_time(device, session, seq)
                    if stored_ts is None:
                        return added
                else:
                    stored = self.store.read_entry(device, session, seq)
                    if stored is None:
                        return added
                    entry, stored_ts = parse_entry(stored.data), stored.stored_ts
            except (OSError, MalformedEntry) as err:
                log.warning("index: %s: %s; the session is indexed up to the entry before", where, err)
                return added
            if (entry.device, entry.session, entry.seq) != (device, session, seq):
                # The receiver never stores such a file; someone put it there. Index nothing from it on.
                log.warning("index: %s is another entry (%s/%s %d); the session is indexed up to the entry before",
                            where, entry.device, entry.session, entry.seq)
                return added
            self._apply(db, self._opened(entry), stored_ts)
            seq += 1
            added += 1

    def _opened(self, entry: Entry) -> Entry:
        """The entry with its `open` fields unsealed, if sealed and central's key can open them."""
        opening = entry.opening
        if opening is None or opening.sealed is None:
            return entry
        if self._central_key is not None:
            try:
                return replace(entry, opening=unsealed(opening, self._central_key))
            except MalformedEntry as err:
                log.error("index: %s/%s: %s; indexed without its unit, room, officers, parties and case",
                          entry.device, entry.session, err)
                return entry
        self._unopened += 1
        if self._unopened == 1:
            log.warning("index: session %s/%s has its personal fields sealed to central's key, and the index has no "
                        "key (receiver.private_key_file): indexed without unit, room, officers, parties and case",
                        entry.device, entry.session)
        return entry

    @staticmethod
    def _event(db: sqlite3.Connection, key: tuple[str, str], body: Mapping[str, Any]) -> None:
        """What the statistics count of an event: the reason an officer stated for a break, and why a session
        was declined (FORMAT §4.3). The parser checks an event's `name` only, so the rest is read warily."""
        code = body.get("code")
        if not isinstance(code, str) or not code:
            return
        if body["name"] == "reason":
            seq = body.get("interruption")
            if isinstance(seq, int) and not isinstance(seq, bool):
                db.execute("UPDATE interruptions SET reason = ? WHERE device = ? AND session = ? AND seq = ?",
                           (code, *key, seq))
        elif body["name"] == "declined":
            db.execute("UPDATE sessions SET declined = ? WHERE device = ? AND session = ?", (code, *key))

    @staticmethod
    def _apply(db: sqlite3.Connection, entry: Entry, stored_ts: float) -> None:
        key = (entry.device, entry.session)
        time_ts = _timestamp(entry.time, stored_ts)
        if entry.opening is not None:
            o = entry.opening
            db.execute("INSERT INTO sessions (device, session, unit, room, location, case_ref, matter, opened_at,"
                       " opened_ts, last_at, last_ts, last_stored_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (*key, o.unit, o.room, o.location, o.case, o.matter, entry.time, time_ts, entry.time,
                        time_ts, stored_ts))
            if o.booking is not None:
                b = o.booking
                db.execute("UPDATE sessions SET booking_id = ?, booking_version = ?, booking_act = ?, booking_retention"
                           " = ?, booking_start = ?, booking_end = ? WHERE device = ? AND session = ?",
                           (b.id, b.version, b.act, b.retention, b.start.isoformat(), b.end.isoformat(), *key))
            for position, officer in enumerate(o.officers):
                db.execute("INSERT INTO officers VALUES (?, ?, ?, ?, ?)", (*key, position, officer.name,
                                                                           officer.certificate))
            for position, party in enumerate(o.parties):
                db.execute("INSERT INTO parties VALUES (?, ?, ?, ?)", (*key, position, party))
        db.execute("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (*key, entry.seq, entry.kind, entry.time, time_ts, stored_ts))
        segment = entry.segment
        db.execute("UPDATE sessions SET last_seq = ?, last_at = ?, last_ts = ?, last_stored_ts = ?,"
                   " segments = segments + ?, media_bytes = media_bytes + ?, interrupted = interrupted OR ?,"
                   " recorded_ns = recorded_ns + ? WHERE device = ? AND session = ?",
                   (entry.seq, entry.time, time_ts, stored_ts, entry.kind == SEGMENT,
                    segment.bytes if segment is not None else 0, entry.kind == INTERRUPTION,
                    segment.end - segment.start_ns if segment is not None else 0, *key))
        if entry.interruption is not None:
            db.execute("INSERT INTO interruptions VALUES (?, ?, ?, ?, NULL)",
                       (*key, entry.seq, entry.interruption.cause))
        elif entry.kind == EVENT:
            SessionIndex._event(db, key, entry.body)
        if entry.closing is not None:
            db.execute("UPDATE sessions SET closed_at = ?, closed_ts = ?, close_reason = ? WHERE device = ? AND"
                       " session = ?", (entry.time, time_ts, entry.closing.reason, *key))


def open_index(store: CentralStore, central_key: X25519PrivateKey | None = None) -> SessionIndex | None:
    """The receiver's index, or None (logged) if it cannot be opened: the receiver stores and receipts
    either way, and the index can be rebuilt from the store later."""
    try:
        return SessionIndex(store, central_key)
    except (sqlite3.Error, OSError) as err:
        log.error("session index %s cannot be opened (%s); receiving without it; `recorder central reindex`"
                  " rebuilds it", store.state_file(INDEX_FILE), err)
        return None
