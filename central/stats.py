"""Statistics of the recorded sessions, for case review, supervision and evaluation (STATS).

Per group (unit; room, within its unit; officer, by name and certificate number; or device) and per period
(day, week from Monday, month, in the agency's zone) over a time range: the sessions, the hours recorded,
the breaks by reason, the declined sessions by reason, how long the sessions took to reach central, the
sessions of each retention class, and the share of the time the devices were online.

Everything is read from the session index (central/index.py) in one snapshot, counted and summed by SQL,
with each session placed in its period by a function the query calls (time zones with summer time are not
SQLite's); medians and 95th percentiles are taken here. What the index does not hold comes in as functions:
a session's retention class, and a device's presence history (central/store.py).

What is counted, exactly:
* a session belongs to the period in which it was opened, and is in the range when it was opened in it;
  each of its officers counts it once (so the officers' rows add up to more than the sessions);
* hours recorded: the media time of its segments, breaks left out (each segment from its `start_ns` to its
  `end_ns`; a sealed segment that crash recovery could not read counts nothing);
* a break counts under the reason the officer stated for it (the `reason` event), else the cause the
  device detected (the `interruption` entry);
* a declined session is a session too (nothing recorded), counted under its decline reason as well;
* upload delay: of each complete session, from its `close` (device time) to central storing its last
  entry; "late" is the upload deadline's rule (evidence/deadline.py), as `recorder central late` judges;
  the 95th percentile is the nearest-rank one (the smallest delay at least 95 % of them do not exceed);
* device availability: of the part of each period that is in the range, has passed, and for which the
  device's presence is known (from its first recorded change on), the share it was online. A device counts
  for the unit and room of its latest session opened before the range ends; officers have none.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from central.errors import CentralError
from central.fleet import Presence
from central.index import SessionIndex
from evidence.deadline import Level, UploadPolicy
from evidence.reasons import DECLINE_REASONS, INTERRUPTION_REASONS

GROUPS: dict[str, tuple[str, ...]] = {"unit": ("unit",), "room": ("unit", "room"),
                                      "officer": ("officer", "certificate"), "device": ("device",)}
"""Each grouping, and the columns that name one of its groups."""
_GROUP_SQL = {"unit": "s.unit", "room": "s.unit, s.room", "officer": "o.name, o.certificate", "device": "s.device"}
PERIODS = ("day", "week", "month")
RETENTION_CLASSES = ("everyday", "evidence", "long_term")
MAX_PERIODS = 1000
"""A range longer than this many periods is refused (a decade of weeks; about three years of days)."""


@dataclass(frozen=True)
class StatsQuery:
    start: dt.datetime
    """Sessions opened at or after this moment (with a time zone)..."""
    end: dt.datetime
    """...and before this one."""
    group: str = "unit"
    period: str = "week"
    units: tuple[str, ...] | None = None
    """Only these units' sessions and devices (a supervisor's own unit); None: every unit."""


@dataclass(frozen=True)
class Period:
    label: str
    """2026-03-02 (a day), 2026-W10 (an ISO week), 2026-03 (a month)."""
    start: dt.datetime
    end: dt.datetime


@dataclass(frozen=True)
class StatsRow:
    group: tuple[str, ...]
    """The group's names, one for each of GROUPS[query.group]."""
    period: str
    sessions: int = 0
    recorded_s: float = 0.0
    interruptions: Mapping[str, int] = field(default_factory=dict)
    """Breaks by reason code (evidence/reasons.py INTERRUPTION_REASONS)."""
    declined: Mapping[str, int] = field(default_factory=dict)
    """Declined sessions by decline code (DECLINE_REASONS)."""
    uploaded: int = 0
    """Complete sessions: those the upload delay is taken of."""
    delay_median_s: float | None = None
    delay_p95_s: float | None = None
    late: int = 0
    retention: Mapping[str, int] = field(default_factory=dict)
    online_s: float = 0.0
    known_s: float = 0.0
    """Seconds of the period for which the group's devices' presence is known; 0: not known, or officers."""

    @property
    def hours(self) -> float:
        return self.recorded_s / 3600

    @property
    def online_share(self) -> float | None:
        return self.online_s / self.known_s if self.known_s > 0 else None


@dataclass(frozen=True)
class Stats:
    query: StatsQuery
    periods: tuple[Period, ...]
    rows: tuple[StatsRow, ...]
    """One per group and period with a session or a known presence, by group, then period."""
    interruption_codes: tuple[str, ...]
    """The break reasons counted, in the order of the reason table (then any other code)."""
    decline_codes: tuple[str, ...]
    retention_codes: tuple[str, ...]
    """RETENTION_CLASSES, then any other class the retention function gave."""

    def table(self) -> tuple[list[str], list[list[Any]]]:
        """The rows as the CSV export has them: a header, then plain values (None for nothing known)."""
        period_start = {p.label: p.start for p in self.periods}
        header = [*GROUPS[self.query.group], "period", "period_start", "sessions", "hours_recorded",
                  *(f"interruptions_{c}" for c in self.interruption_codes), "interruptions",
                  *(f"declined_{c}" for c in self.decline_codes), "declined", "complete",
                  "upload_delay_median_s", "upload_delay_p95_s", "late",
                  *(f"retention_{c}" for c in self.retention_codes), "online_share", "online_hours", "known_hours"]
        body = []
        for r in self.rows:
            body.append([*r.group, r.period, period_start[r.period].isoformat(), r.sessions, round(r.hours, 4),
                         *(r.interruptions.get(c, 0) for c in self.interruption_codes), sum(r.interruptions.values()),
                         *(r.declined.get(c, 0) for c in self.decline_codes), sum(r.declined.values()), r.uploaded,
                         _rounded(r.delay_median_s), _rounded(r.delay_p95_s), r.late,
                         *(r.retention.get(c, 0) for c in self.retention_codes),
                         None if r.online_share is None else round(r.online_share, 4),
                         round(r.online_s / 3600, 4), round(r.known_s / 3600, 4)])
        return header, body


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def periods(start: dt.datetime, end: dt.datetime, period: str, zone: dt.tzinfo) -> list[Period]:
    """The periods, in `zone`, that the range [start, end) touches, whole."""
    if period not in PERIODS:
        raise CentralError(f"period {period!r}: one of {', '.join(PERIODS)}")
    day = start.astimezone(zone).date()
    if period == "week":
        day -= dt.timedelta(days=day.weekday())
    elif period == "month":
        day = day.replace(day=1)
    found: list[Period] = []
    begins = dt.datetime.combine(day, dt.time(), zone)
    while begins < end:
        if len(found) == MAX_PERIODS:
            raise CentralError(f"the range holds more than {MAX_PERIODS} {period}s: choose a shorter range or a "
                               "longer period")
        if period == "day":
            after, label = day + dt.timedelta(days=1), day.isoformat()
        elif period == "week":
            year, week, _ = day.isocalendar()
            after, label = day + dt.timedelta(days=7), f"{year}-W{week:02d}"
        else:
            after = (day + dt.timedelta(days=31)).replace(day=1)
            label = f"{day.year}-{day.month:02d}"
        ends = dt.datetime.combine(after, dt.time(), zone)
        found.append(Period(label, begins, ends))
        day, begins = after, ends
    return found


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile: the smallest value at least `share` of `values` do not exceed."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def online_time(history: Sequence[Presence], start: float, end: float) -> tuple[float, float]:
    """Seconds online and seconds known in [start, end) (POSIX seconds), from a presence history."""
    changes = sorted(history, key=lambda p: p.since)
    online = known = 0.0
    for i, change in enumerate(changes):
        until = changes[i + 1].since.timestamp() if i + 1 < len(changes) else end
        span = min(end, until) - max(start, change.since.timestamp())
        if span > 0:
            known += span
            if change.online:
                online += span
    return online, known


def _ordered(seen: Iterable[str], known: Iterable[str]) -> tuple[str, ...]:
    table = list(known)
    return tuple(sorted(set(seen), key=lambda c: (table.index(c), c) if c in table else (len(table), c)))


@dataclass
class _Tally:
    sessions: int = 0
    recorded_ns: int = 0
    interruptions: dict[str, int] = field(default_factory=dict)
    declined: dict[str, int] = field(default_factory=dict)
    delays: list[float] = field(default_factory=list)
    late: int = 0
    retention: dict[str, int] = field(default_factory=dict)
    online_s: float = 0.0
    known_s: float = 0.0


def compute(index: SessionIndex, query: StatsQuery, zone: dt.tzinfo, policy: UploadPolicy,
            retention: Callable[[str, str], str], presence: Callable[[str], Sequence[Presence]],
            devices: Iterable[str] = (), now: dt.datetime | None = None) -> Stats:
    """The statistics asked for. `retention(device, session)` gives a session's retention class,
    `presence(device)` a device's presence history; `devices` are devices to count the availability of besides
    those with sessions (the enrolled ones), for a query of every unit. CentralError names a bad query."""
    if query.group not in GROUPS:
        raise CentralError(f"group {query.group!r}: one of {', '.join(GROUPS)}")
    if query.start.tzinfo is None or query.end.tzinfo is None:
        raise CentralError("the range's start and end need a time zone")
    if query.end <= query.start:
        raise CentralError(f"the range ends ({query.end.isoformat()}) before it starts ({query.start.isoformat()})")
    spans = periods(query.start, query.end, query.period, zone)
    starts = [p.start.timestamp() for p in spans]
    labels = [p.label for p in spans]
    order = {label: i for i, label in enumerate(labels)}

    def period_of(ts: float) -> str:
        return labels[bisect.bisect_right(starts, ts) - 1]

    tallies: dict[tuple[tuple[str, ...], str], _Tally] = {}

    def tally(row: Sequence[Any], width: int) -> _Tally:
        key = (tuple(str(v) for v in row[:width]), str(row[width]))
        found = tallies.get(key)
        if found is None:
            found = tallies[key] = _Tally()
        return found

    width = len(GROUPS[query.group])
    group = _GROUP_SQL[query.group]
    officers = (" JOIN (SELECT DISTINCT device, session, name, certificate FROM officers) o"
                " ON o.device = s.device AND o.session = s.session") if query.group == "officer" else ""
    where = "s.opened_ts >= ? AND s.opened_ts < ?"
    params: list[Any] = [query.start.timestamp(), query.end.timestamp()]
    if query.units is not None:
        where += f" AND s.unit IN ({', '.join('?' * len(query.units))})" if query.units else " AND 0"
        params += query.units
    sessions = f"FROM sessions s{officers}"
    classes: dict[tuple[str, str], str] = {}
    with contextlib.closing(index.reader()) as db:
        db.create_function("period_of", 1, period_of, deterministic=True)
        db.execute("BEGIN")  # one snapshot for every query below
        for row in db.execute(f"SELECT {group}, period_of(s.opened_ts) AS p, count(*), sum(s.recorded_ns) {sessions}"
                              f" WHERE {where} GROUP BY {group}, p", params):
            t = tally(row, width)
            t.sessions, t.recorded_ns = row[width + 1], row[width + 2]
        for row in db.execute(f"SELECT {group}, period_of(s.opened_ts) AS p, s.declined, count(*) {sessions}"
                              f" WHERE {where} AND s.declined IS NOT NULL GROUP BY {group}, p, s.declined", params):
            tally(row, width).declined[row[width + 1]] = row[width + 2]
        for row in db.execute(f"SELECT {group}, period_of(s.opened_ts) AS p, coalesce(i.reason, i.cause) AS r, count(*)"
                              f" {sessions} JOIN interruptions i ON i.device = s.device AND i.session = s.session"
                              f" WHERE {where} GROUP BY {group}, p, r", params):
            tally(row, width).interruptions[row[width + 1]] = row[width + 2]
        for row in db.execute(f"SELECT {group}, period_of(s.opened_ts), s.device, s.session, s.closed_ts,"
                              f" s.last_stored_ts {sessions} WHERE {where}", params):
            t = tally(row, width)
            device, session, closed_ts, stored_ts = row[width + 1:]
            if (device, session) not in classes:  # an officer's row repeats the session: asked once
                classes[(device, session)] = retention(device, session)
            code = classes[(device, session)]
            t.retention[code] = t.retention.get(code, 0) + 1
            if closed_ts is not None:
                t.delays.append(stored_ts - closed_ts)
                t.late += policy.judge(closed_ts, stored_ts).level is Level.LATE
        # Bare columns beside max() come from the row holding the maximum (SQLite's rule): the latest session.
        places = {device: (unit, room) for device, unit, room, _ in db.execute(
            "SELECT device, unit, room, max(opened_ts) FROM sessions WHERE opened_ts < ? GROUP BY device",
            [query.end.timestamp()])}
    if query.group != "officer":
        _availability(query, spans, places, devices, presence, now or dt.datetime.now(dt.UTC), tally)
    rows = tuple(_row(key, t) for key, t in sorted(tallies.items(), key=lambda kt: (kt[0][0], order[kt[0][1]])))
    return Stats(query, tuple(spans), rows,
                 _ordered((c for r in rows for c in r.interruptions), INTERRUPTION_REASONS),
                 _ordered((c for r in rows for c in r.declined), DECLINE_REASONS),
                 _ordered([*RETENTION_CLASSES, *(c for r in rows for c in r.retention)], RETENTION_CLASSES))


def _availability(query: StatsQuery, spans: Sequence[Period], places: Mapping[str, tuple[str, str]],
                  devices: Iterable[str], presence: Callable[[str], Sequence[Presence]], now: dt.datetime,
                  tally: Callable[[Sequence[Any], int], _Tally]) -> None:
    if query.units is not None:
        places = {d: place for d, place in places.items() if place[0] in query.units}
        devices = ()
    for device in sorted(set(places) | set(devices)):
        unit, room = places.get(device, ("", ""))
        if query.group != "device" and device not in places:
            continue  # a device that has never recorded belongs to no unit or room yet
        names = {"unit": (unit,), "room": (unit, room), "device": (device,)}[query.group]
        history = presence(device)
        if not history:
            continue
        for span in spans:
            start = max(span.start, query.start).timestamp()
            end = min(span.end, query.end, now).timestamp()
            online, known = online_time(history, start, end)
            if known > 0:
                t = tally([*names, span.label], len(names))
                t.online_s += online
                t.known_s += known


def _row(key: tuple[tuple[str, ...], str], t: _Tally) -> StatsRow:
    return StatsRow(key[0], key[1], t.sessions, t.recorded_ns / 1e9, dict(t.interruptions), dict(t.declined),
                    len(t.delays), statistics.median(t.delays) if t.delays else None,
                    percentile(t.delays, 0.95) if t.delays else None, t.late, dict(t.retention), t.online_s,
                    t.known_s)
