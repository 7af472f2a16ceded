"""Retention (RETENTION): how long central keeps each session, the one rule book for raising, lowering, holding
and removing, read from the session's register (central/register.py, FORMAT §13).

    everyday    at least 6 months after the session (`retention.everyday_months`)
    evidence    as long as its case file: until the date the case file's retention ends, once it is given
    long_term   coercive measures, disputes or complaints, obstruction or assault of officers, mass or sudden
                incidents (`retention.long_term_years`)

A class is raised by the records keeper, a supervisor or the legal office with a reason, by the device (a
MARK whose label names a class, such as "长期 long-term"), or by linking the session to a case (evidence). It
is never lowered silently: one of those roles asks, with a reason, and a second person of another of those
roles confirms; both are on record. A legal hold stops any expiry. After expiry, and only then, the records
keeper may remove the segment files: the `removal` record (the tombstone) is written first, naming every
file with its hash and the session's closing entry, then the files go; the entries, and so the chain and
its signatures, stay.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from central.config import RetentionConfig
from central.errors import CentralError
from central.index import SessionRow
from central.register import Actor, Registers
from central.store import CentralStore
from evidence.audit import AuditRecord
from evidence.entry import EVENT, Entry, parse_entry
from evidence.errors import MalformedEntry
from evidence.reasons import RETENTION_CLASSES

CLASSES = RETENTION_CLASSES
"""From the shortest kept to the longest: raising moves right."""
EVERYDAY, EVIDENCE, LONG_TERM = CLASSES
LABELS = {EVERYDAY: "日常 everyday", EVIDENCE: "证据 evidence", LONG_TERM: "长期 long-term"}
GROUNDS = {"coercive_measure": "采取强制措施 coercive measure", "dispute": "发生纠纷或投诉 dispute or complaint",
           "obstruction": "阻碍执法或袭警 obstruction or assault of officers",
           "mass_incident": "群体性或突发事件 mass or sudden incident"}
"""Why a session is long-term (RETENTION); a raise to long-term names one."""
_MARK_WORDS = {LONG_TERM: ("长期", "long-term", "long term", "long_term"), EVIDENCE: ("证据", "evidence")}

DECIDERS = frozenset({"records", "supervisor", "legal"})
"""Who raises a class, links a case, asks for and confirms a lowering (two of them, of different roles)."""
HOLDERS = frozenset({"records", "legal"})
REMOVERS = frozenset({"records"})


class RetentionRefused(CentralError):
    """A retention decision the rules do not allow; the message says which rule and what to do."""


@dataclass(frozen=True)
class LowerRequest:
    cls: str
    by: str
    role: str
    reason: str
    seq: int
    at: str


@dataclass(frozen=True)
class Disposition:
    """What the register says of a session's retention now."""

    cls: str = EVERYDAY
    reason: str = ""
    decided_by: str = ""
    """Who set the class now in force: an account, `device` (a MARK), or "" (the default)."""
    case: str = ""
    case_file_until: dt.date | None = None
    hold: bool = False
    hold_reason: str = ""
    pending: LowerRequest | None = None
    removal: AuditRecord | None = None
    history: tuple[AuditRecord, ...] = ()

    @property
    def label(self) -> str:
        return LABELS[self.cls]


def mark_class(label: str) -> str | None:
    """The class a device's MARK label names, if any (the longest kept wins)."""
    text = label.casefold()
    for cls in (LONG_TERM, EVIDENCE):
        if any(word in text for word in _MARK_WORDS[cls]):
            return cls
    return None


def _rank(cls: str) -> int:
    return CLASSES.index(cls)


def disposition(records: Sequence[AuditRecord]) -> Disposition:
    """Fold the register's records, oldest first, into the session's retention now."""
    d: dict[str, Any] = {"cls": EVERYDAY, "reason": "", "decided_by": "", "case": "", "case_file_until": None,
                         "hold": False, "hold_reason": "", "pending": None, "removal": None}
    for r in records:
        detail = r.detail
        if r.action == "retention":
            if detail.get("lowered") or _rank(detail["class"]) > _rank(d["cls"]):
                d.update(cls=detail["class"], reason=detail.get("reason", ""), decided_by=r.actor)
            d["pending"] = None if detail.get("lowered") else d["pending"]
        elif r.action == "lower_request":
            d["pending"] = LowerRequest(detail["class"], r.actor, r.role, detail.get("reason", ""), r.seq, r.time)
        elif r.action == "hold":
            d.update(hold=bool(detail.get("on")), hold_reason=detail.get("reason", ""))
        elif r.action == "case":
            until = detail.get("case_file_until")
            d.update(case=detail.get("case", ""), case_file_until=dt.date.fromisoformat(until) if until else None)
        elif r.action == "removal":
            d["removal"] = r
    return Disposition(**d, history=tuple(records))


def _add_months(when: dt.datetime, months: int) -> dt.datetime:
    month = when.month - 1 + months
    year, month = when.year + month // 12, month % 12 + 1
    for day in (when.day, 30, 29, 28):  # 31 August + 6 months is the last day of February
        try:
            return when.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    raise AssertionError("every month has a 28th")


def expires(d: Disposition, kept_since: dt.datetime, cfg: RetentionConfig) -> dt.datetime | None:
    """When the session's retention ends, counted from when central stored its last entry; None while it has
    no end (an evidence session whose case file's end is not given). A hold does not change this date."""
    if d.cls == EVERYDAY:
        return _add_months(kept_since, cfg.everyday_months)
    if d.cls == LONG_TERM:
        return _add_months(kept_since, 12 * cfg.long_term_years)
    if d.case_file_until is None:
        return None
    end = dt.datetime.combine(d.case_file_until, dt.time(), kept_since.tzinfo) + dt.timedelta(days=1)
    return max(end, _add_months(kept_since, cfg.everyday_months))


def expired(d: Disposition, kept_since: dt.datetime, now: dt.datetime, cfg: RetentionConfig) -> bool:
    end = expires(d, kept_since, cfg)
    return not d.hold and end is not None and now >= end


def state_text(d: Disposition, kept_since: dt.datetime, now: dt.datetime, cfg: RetentionConfig) -> str:
    if d.removal is not None:
        return "已删除 removed after expiry"
    if d.hold:
        return "法律保全 on legal hold"
    end = expires(d, kept_since, cfg)
    if end is None:
        return "随案卷保存 kept with its case file (no end date given)"
    return "已到期 expired" if now >= end else "保存中 kept"


class Retention:
    """The decisions, each checked here and written to the session's register (and the audit) under its lock."""

    def __init__(self, store: CentralStore, registers: Registers, cfg: RetentionConfig) -> None:
        self.store = store
        self.registers = registers
        self.cfg = cfg

    def of(self, device: str, session: str) -> Disposition:
        return disposition(self.registers.records(device, session))

    def raise_class(self, device: str, session: str, actor: Actor, cls: str, reason: str,
                    grounds: str = "") -> AuditRecord:
        _check_class(cls)
        _need(actor, DECIDERS, "raise a retention class")
        if not reason.strip():
            raise RetentionRefused("give the reason for raising the retention class")
        if cls == LONG_TERM and grounds not in GROUNDS:
            raise RetentionRefused(f"name why the session is long-term: one of {', '.join(GROUNDS)}")

        def check(records: list[AuditRecord]) -> None:
            now = disposition(records)
            _not_removed(now)
            if _rank(cls) <= _rank(now.cls):
                raise RetentionRefused(f"the session is already {LABELS[now.cls]}: raising means a longer class; "
                                       "a lower one needs a request and a second person's confirmation")

        return self.registers.append(device, session, actor, "retention",
                                     {"class": cls, "reason": reason, "grounds": grounds, "source": "central",
                                      "lowered": False}, check)

    def request_lower(self, device: str, session: str, actor: Actor, cls: str, reason: str) -> AuditRecord:
        _check_class(cls)
        _need(actor, DECIDERS, "ask to lower a retention class")
        if not reason.strip():
            raise RetentionRefused("give the reason for lowering the retention class")

        def check(records: list[AuditRecord]) -> None:
            now = disposition(records)
            _not_removed(now)
            if now.hold:
                raise RetentionRefused("the session is on legal hold: its class cannot be lowered until the hold is "
                                       "lifted")
            if _rank(cls) >= _rank(now.cls):
                raise RetentionRefused(f"{LABELS[cls]} is not lower than the session's class, {LABELS[now.cls]}")

        return self.registers.append(device, session, actor, "lower_request", {"class": cls, "reason": reason}, check)

    def confirm_lower(self, device: str, session: str, actor: Actor, request_seq: int) -> AuditRecord:
        _need(actor, DECIDERS, "confirm lowering a retention class")

        def check(records: list[AuditRecord]) -> None:
            now = disposition(records)
            _not_removed(now)
            pending = now.pending
            if pending is None or pending.seq != request_seq:
                raise RetentionRefused("there is no such request to lower this session's class waiting (it was "
                                       "confirmed, or overtaken by another decision)")
            if pending.by == actor.name or pending.role == actor.role:
                raise RetentionRefused("lowering a retention class needs two people of different roles: the request "
                                       f"was made by {pending.by} ({pending.role}); another role confirms it")
            if now.hold:
                raise RetentionRefused("the session is on legal hold: its class cannot be lowered")

        records = self.registers.records(device, session)
        check(records)  # refuse at once, with the rule; the same check runs again under the register's lock
        pending = disposition(records).pending
        assert pending is not None  # check() refused otherwise
        return self.registers.append(
            device, session, actor, "retention",
            {"class": pending.cls, "reason": pending.reason, "grounds": "", "source": "central", "lowered": True,
             "requested_by": pending.by, "request_seq": pending.seq}, check)

    def set_hold(self, device: str, session: str, actor: Actor, on: bool, reason: str) -> AuditRecord:
        _need(actor, HOLDERS, "place or lift a legal hold")
        if not reason.strip():
            raise RetentionRefused("give the reason for the legal hold (or for lifting it)")

        def check(records: list[AuditRecord]) -> None:
            now = disposition(records)
            _not_removed(now)
            if now.hold == on:
                raise RetentionRefused("the session is already on legal hold" if on else "the session is not on hold")

        return self.registers.append(device, session, actor, "hold", {"on": on, "reason": reason}, check)

    def link_case(self, device: str, session: str, actor: Actor, case: str, case_file_until: dt.date | None,
                  reason: str) -> list[AuditRecord]:
        """Link the session to a case (its class becomes at least evidence) and say until when the case file is
        kept; a later link changes the date, and so the evidence class's end."""
        _need(actor, DECIDERS, "link a session to a case")
        if not case.strip():
            raise RetentionRefused("name the case (its number or name)")

        def check(records: list[AuditRecord]) -> None:
            _not_removed(disposition(records))

        written = [self.registers.append(
            device, session, actor, "case",
            {"case": case, "case_file_until": case_file_until.isoformat() if case_file_until else None,
             "reason": reason}, check)]
        if _rank(self.of(device, session).cls) < _rank(EVIDENCE):
            written.append(self.registers.append(
                device, session, actor, "retention",
                {"class": EVIDENCE, "reason": f"linked to case {case}", "grounds": "", "source": "case",
                 "lowered": False}, check))
        return written

    def record_marks(self, device: str, session: str, entries: Sequence[Entry]) -> list[AuditRecord]:
        """Raise the class for each of the device's MARKs that names a longer one, once per mark (by its
        entry's seq), so the register carries what the room asked for."""
        written = []
        for entry in entries:
            if entry.kind != EVENT or entry.body.get("name") != "mark":
                continue
            cls = mark_class(str(entry.body.get("label", "")))
            if cls is None:
                continue
            seq = entry.seq

            def check(records: list[AuditRecord], cls: str = cls, seq: int = seq) -> None:
                now = disposition(records)
                if any(r.detail.get("mark_seq") == seq for r in records) or _rank(cls) <= _rank(now.cls):
                    raise _AlreadyRecorded
                _not_removed(now)

            try:
                written.append(self.registers.append(
                    device, session, Actor("device", "device"), "retention",
                    {"class": cls, "reason": f"MARK: {entry.body.get('label')}", "grounds": "", "source": "device",
                     "lowered": False, "mark_seq": seq}, check))
            except _AlreadyRecorded:
                continue
        return written

    def sync_marks(self, device: str, session: str) -> None:
        """Read the session's events and record the class its MARKs ask for (the sweep calls this)."""
        files = self.store.session_files(device, session)
        entries = []
        for seq in files.entry_seqs():
            try:
                entries.append(parse_entry(files.read_entry(seq)))
            except (OSError, MalformedEntry):
                continue  # the sweep reports it; retention reads what can be read
        self.record_marks(device, session, entries)

    def remove(self, device: str, session: str, actor: Actor, kept_since: dt.datetime,
               now: dt.datetime) -> AuditRecord:
        """After expiry, the records keeper's removal: the tombstone first, then the segment files."""
        _need(actor, REMOVERS, "remove an expired session's recordings")
        done = self.of(device, session).removal
        if done is not None:
            # Decided before, and stopped part way (a crash, a full disk): finish removing what it names.
            self.store.remove_originals(device, session, [str(f["file"]) for f in done.detail["files"]])
            return done
        self.sync_marks(device, session)
        files = self.store.session_files(device, session)
        ledger = []
        for seq in files.entry_seqs():
            try:
                ledger.append(parse_entry(files.read_entry(seq)))
            except (OSError, MalformedEntry) as err:
                raise RetentionRefused(f"entry {seq} of the session cannot be read ({err}): a session whose "
                                       "ledger is not whole is not removed; have it looked at") from err
        closing = next((e for e in ledger if e.closing is not None), None)
        if closing is None or closing.closing is None:
            raise RetentionRefused("the session has no closing entry: a session not closed is never removed")
        segments: list[dict[str, Any]] = [
            {"file": e.segment.file, "sha256": e.segment.sha256, "bytes": e.segment.bytes}
            for e in ledger if e.segment is not None]

        def check(records: list[AuditRecord]) -> None:
            d = disposition(records)
            _not_removed(d)
            if d.hold:
                raise RetentionRefused("the session is on legal hold: nothing of it is removed until the hold is "
                                       "lifted")
            end = expires(d, kept_since, self.cfg)
            if end is None:
                raise RetentionRefused(f"the session is {d.label} with no end date for its case file: it is kept")
            if now < end:
                raise RetentionRefused(f"the session is kept until {end.isoformat(timespec='minutes')} "
                                       f"({d.label}); nothing is removed before its retention expires")

        record = self.registers.append(
            device, session, actor, "removal",
            {"files": segments, "entries": len(ledger), "close_seq": closing.seq, "close_hash": closing.hash,
             "merkle_root": closing.closing.merkle_root, "kept_since": kept_since.isoformat(timespec="seconds"),
             "class": self.of(device, session).cls}, check)
        self.store.remove_originals(device, session, [str(s["file"]) for s in segments])
        return record


class _AlreadyRecorded(Exception):
    """A device MARK whose class the register already holds (or exceeds): nothing to write."""


def _check_class(cls: str) -> None:
    if cls not in CLASSES:
        raise RetentionRefused(f"{cls!r} is not a retention class ({', '.join(CLASSES)})")


def _need(actor: Actor, roles: frozenset[str], what: str) -> None:
    if actor.role not in roles:
        raise RetentionRefused(f"only {', '.join(sorted(roles))} may {what}")


def _not_removed(d: Disposition) -> None:
    if d.removal is not None:
        raise RetentionRefused("the session's recordings were removed after their retention expired; its register "
                               "is closed")


@dataclass(frozen=True)
class ReportRow:
    device: str
    session: str
    unit: str
    room: str
    opened_at: str
    cls: str
    case: str
    hold: bool
    kept_since: dt.datetime
    expires: dt.datetime | None
    state: str
    removed: bool
    complete: bool

    def as_json(self) -> dict[str, Any]:
        return {"device": self.device, "session": self.session, "unit": self.unit, "room": self.room,
                "opened_at": self.opened_at, "class": self.cls, "case": self.case, "hold": self.hold,
                "kept_since": self.kept_since.isoformat(timespec="seconds"),
                "expires": self.expires.isoformat(timespec="seconds") if self.expires else None,
                "state": self.state, "removed": self.removed}


def report(retention: Retention, rows: Sequence[SessionRow], now: dt.datetime) -> list[ReportRow]:
    """What expires when (RETENTION): every session given, soonest expiry first, then those with no end."""
    out = []
    for row in rows:
        d = retention.of(row.device, row.session)
        since = row.last_stored.astimezone(now.tzinfo)
        end = expires(d, since, retention.cfg)
        out.append(ReportRow(row.device, row.session, row.unit, row.room, row.opened_at, d.cls, d.case, d.hold,
                             since, end, state_text(d, since, now, retention.cfg), d.removal is not None,
                             row.complete))
    far = dt.datetime.max.replace(tzinfo=dt.UTC)
    return sorted(out, key=lambda r: (r.removed, r.expires or far, r.device, r.session))
