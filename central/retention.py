"""Retention (RETENTION): how long central keeps each session, the one rule book for raising, lowering, holding
and removing, read from the session's register (central/register.py, FORMAT §13).

    everyday    at least 6 months after the session (`retention.everyday_months`)
    evidence    as long as its case file: until the date the case file's retention ends, once it is given
    long_term   coercive measures, disputes or complaints, obstruction or assault of officers, mass or sudden
                incidents (`retention.long_term_years`)

A class is raised by the records keeper, a supervisor or the legal office with a reason, by the device (a
MARK whose label names a class, such as "长期 long-term", or the booking the session was started under), or
by linking the session to a case (evidence). It is never lowered silently: one of those roles asks, with a
reason, and a second person of another of those roles confirms; both are on record, and any decision in
between voids the request. Moving a case file's date earlier shortens retention too, so it takes the same two
people. A legal hold stops any expiry; it is lifted by the role that placed it, or by the legal office. After
expiry, and only then, the records keeper may remove the segment files (and the export packages kept of
them): the `removal` record (the tombstone) is written first, naming every file with its hash and the
session's closing entry, then the files go; the entries, and so the chain and its signatures, stay.

Every decision reads the register only after checking its chain and central's signatures, under its lock.
"""

from __future__ import annotations

import contextlib
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
from evidence.entry import EVENT, Entry
from evidence.reasons import RETENTION_CLASSES

CLASSES = RETENTION_CLASSES
"""From the shortest kept to the longest: raising moves right."""
EVERYDAY, EVIDENCE, LONG_TERM = CLASSES
LABELS = {EVERYDAY: "日常 everyday", EVIDENCE: "证据 evidence", LONG_TERM: "长期 long-term"}
GROUNDS = {"coercive_measure": "采取强制措施 coercive measure", "dispute": "发生纠纷或投诉 dispute or complaint",
           "obstruction": "阻碍执法或袭警 obstruction or assault of officers",
           "mass_incident": "群体性或突发事件 mass or sudden incident"}
"""Why a session is long-term (RETENTION); a raise to long-term at central names one."""
MARK_WORDS = {LONG_TERM: ("长期", "long-term", "long_term"), EVIDENCE: ("证据", "evidence")}
"""A MARK label names a class when one of its words (split at spaces) is one of these, letter case aside:
"长期 long-term" does, "无证据" (no evidence) does not."""
LAST_CASE_FILE_DATE = dt.date(2200, 12, 31)

DECIDERS = frozenset({"records", "supervisor", "legal"})
"""Who raises a class, links a case, asks for and confirms a lowering (two of them, of different roles)."""
HOLDERS = frozenset({"records", "legal"})
HOLD_LIFTERS_ALWAYS = frozenset({"legal"})
"""Lifts any hold; a hold placed by another role is otherwise lifted only by that role."""
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
    case_file_until: dt.date | None


@dataclass(frozen=True)
class Disposition:
    """What the register says of a session's retention now."""

    cls: str = EVERYDAY
    reason: str = ""
    decided_by: str = ""
    """Who set the class now in force: an account, `device` (a MARK or the booking), or "" (the default)."""
    case: str = ""
    case_file_until: dt.date | None = None
    hold: bool = False
    hold_reason: str = ""
    hold_role: str = ""
    pending: LowerRequest | None = None
    removal: AuditRecord | None = None
    history: tuple[AuditRecord, ...] = ()

    @property
    def label(self) -> str:
        return LABELS[self.cls]


def mark_class(label: str) -> str | None:
    """The class a device's MARK label names, if any (the longest kept wins)."""
    words = set(label.casefold().split())
    for cls in (LONG_TERM, EVIDENCE):
        if words & set(MARK_WORDS[cls]):
            return cls
    return None


def _rank(cls: str) -> int:
    return CLASSES.index(cls)


def _date(text: Any) -> dt.date | None:
    return dt.date.fromisoformat(text) if isinstance(text, str) and text else None


def disposition(records: Sequence[AuditRecord]) -> Disposition:
    """Fold the register's records (checked, oldest first) into the session's retention now (FORMAT §13.3)."""
    d: dict[str, Any] = {"cls": EVERYDAY, "reason": "", "decided_by": "", "case": "", "case_file_until": None,
                         "hold": False, "hold_reason": "", "hold_role": "", "pending": None, "removal": None}
    for r in records:
        detail = r.detail
        if r.action in ("retention", "case", "hold"):
            d["pending"] = None  # a request is for the state it was made in: any decision since voids it
        if r.action == "retention":
            if detail.get("lowered") or _rank(detail["class"]) > _rank(d["cls"]):
                d.update(cls=detail["class"], reason=detail.get("reason", ""), decided_by=r.actor)
            if detail.get("lowered") and detail.get("case_file_until"):
                d["case_file_until"] = _date(detail["case_file_until"])
        elif r.action == "lower_request":
            d["pending"] = LowerRequest(detail["class"], r.actor, r.role, detail.get("reason", ""), r.seq, r.time,
                                        _date(detail.get("case_file_until")))
        elif r.action == "hold":
            d.update(hold=bool(detail.get("on")), hold_reason=detail.get("reason", ""),
                     hold_role=r.role if detail.get("on") else "")
        elif r.action == "case":
            d.update(case=detail.get("case", ""), case_file_until=_date(detail.get("case_file_until")))
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


def kept_since(row: SessionRow) -> dt.datetime:
    """When retention is counted from: central's storage of the session's last entry, or the time the closing
    entry was signed on the device if that is later, so neither a file time set back in the store nor a
    device clock running behind can start the count early."""
    stored = row.last_stored
    signed = row.closed_ts if row.closed_ts is not None else row.last_ts
    return max(stored, dt.datetime.fromtimestamp(signed, dt.UTC))


def expires(d: Disposition, since: dt.datetime, cfg: RetentionConfig) -> dt.datetime | None:
    """When the session's retention ends, counted from `since` (`kept_since`); None while it has no end (an
    evidence session whose case file's end is not given). A hold does not change this date."""
    if d.cls == EVERYDAY:
        return _add_months(since, cfg.everyday_months)
    if d.cls == LONG_TERM:
        return _add_months(since, 12 * cfg.long_term_years)
    if d.case_file_until is None:
        return None
    end = dt.datetime.combine(min(d.case_file_until, LAST_CASE_FILE_DATE), dt.time(), since.tzinfo)
    return max(end + dt.timedelta(days=1), _add_months(since, cfg.everyday_months))


def state_text(d: Disposition, since: dt.datetime, now: dt.datetime, cfg: RetentionConfig) -> str:
    if d.removal is not None:
        return "已删除 removed after expiry"
    if d.hold:
        return "法律保全 on legal hold"
    end = expires(d, since, cfg)
    if end is None:
        return "随案卷保存 kept with its case file (no end date given)"
    return "已到期 expired" if now >= end else "保存中 kept"


def _check_date(until: dt.date | None, today: dt.date) -> None:
    if until is not None and not today <= until <= LAST_CASE_FILE_DATE:
        raise RetentionRefused(f"the case file's date {until.isoformat()} must lie between today and "
                               f"{LAST_CASE_FILE_DATE.isoformat()}")


class Retention:
    """The decisions, each checked here and written to the session's register (and the audit) under its lock."""

    def __init__(self, store: CentralStore, registers: Registers, cfg: RetentionConfig) -> None:
        self.store = store
        self.registers = registers
        self.cfg = cfg

    def of(self, device: str, session: str) -> Disposition:
        """The session's retention now; CentralError if its register does not hold (it needs a look)."""
        return disposition(self.registers.records(device, session, checked=True))

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

    def request_lower(self, device: str, session: str, actor: Actor, cls: str, reason: str,
                      case_file_until: dt.date | None = None) -> AuditRecord:
        """Ask to lower the class to `cls`, or (an evidence session staying evidence) to move its case file's
        date earlier to `case_file_until`; a second person of another role confirms."""
        _check_class(cls)
        _need(actor, DECIDERS, "ask to lower a retention class")
        if not reason.strip():
            raise RetentionRefused("give the reason for lowering the retention class")
        _check_date(case_file_until, dt.date.today())

        def check(records: list[AuditRecord]) -> None:
            now = disposition(records)
            _not_removed(now)
            if now.hold:
                raise RetentionRefused("the session is on legal hold: its class cannot be lowered until the hold is "
                                       "lifted")
            earlier_date = (cls == now.cls == EVIDENCE and case_file_until is not None
                            and (now.case_file_until is None or case_file_until < now.case_file_until))
            if _rank(cls) >= _rank(now.cls) and not earlier_date:
                raise RetentionRefused(f"{LABELS[cls]} is not lower than the session's class, {LABELS[now.cls]} "
                                       "(or, for an evidence session, give an earlier case file date)")

        return self.registers.append(
            device, session, actor, "lower_request",
            {"class": cls, "reason": reason,
             "case_file_until": case_file_until.isoformat() if case_file_until else None}, check)

    def confirm_lower(self, device: str, session: str, actor: Actor, request_seq: int) -> AuditRecord:
        _need(actor, DECIDERS, "confirm lowering a retention class")

        def check(records: list[AuditRecord]) -> None:
            now = disposition(records)
            _not_removed(now)
            pending = now.pending
            if pending is None or pending.seq != request_seq:
                raise RetentionRefused("there is no such request to lower this session's class waiting (it was "
                                       "confirmed, or a decision since voided it: ask again)")
            if pending.by == actor.name or pending.role == actor.role:
                raise RetentionRefused("lowering a retention class needs two people of different roles: the request "
                                       f"was made by {pending.by} ({pending.role}); another role confirms it")
            if now.hold:
                raise RetentionRefused("the session is on legal hold: its class cannot be lowered")

        records = self.registers.records(device, session, checked=True)
        check(records)  # refuse at once, with the rule; the same check runs again under the register's lock
        pending = disposition(records).pending
        assert pending is not None  # check() refused otherwise
        return self.registers.append(
            device, session, actor, "retention",
            {"class": pending.cls, "reason": pending.reason, "grounds": "", "source": "central", "lowered": True,
             "requested_by": pending.by, "request_seq": pending.seq,
             "case_file_until": pending.case_file_until.isoformat() if pending.case_file_until else None}, check)

    def set_hold(self, device: str, session: str, actor: Actor, on: bool, reason: str) -> AuditRecord:
        _need(actor, HOLDERS, "place or lift a legal hold")
        if not reason.strip():
            raise RetentionRefused("give the reason for the legal hold (or for lifting it)")

        def check(records: list[AuditRecord]) -> None:
            now = disposition(records)
            _not_removed(now)
            if now.hold == on:
                raise RetentionRefused("the session is already on legal hold" if on else "the session is not on hold")
            if not on and actor.role != now.hold_role and actor.role not in HOLD_LIFTERS_ALWAYS:
                raise RetentionRefused(f"the hold was placed by the {now.hold_role} role: it is lifted by that role "
                                       "or by the legal office")

        return self.registers.append(device, session, actor, "hold", {"on": on, "reason": reason}, check)

    def link_case(self, device: str, session: str, actor: Actor, case: str, case_file_until: dt.date | None,
                  reason: str) -> list[AuditRecord]:
        """Link the session to a case (its class becomes at least evidence) and say until when the case file is
        kept. A later date may be given again; an earlier one shortens retention and goes through
        `request_lower`."""
        _need(actor, DECIDERS, "link a session to a case")
        if not case.strip():
            raise RetentionRefused("name the case (its number or name)")
        _check_date(case_file_until, dt.date.today())

        def check(records: list[AuditRecord]) -> None:
            now = disposition(records)
            _not_removed(now)
            if now.case_file_until is not None and (case_file_until is None
                                                    or case_file_until < now.case_file_until):
                raise RetentionRefused(f"the case file is kept until {now.case_file_until.isoformat()}: an earlier "
                                       "or no date shortens retention, so ask to lower it (a second person "
                                       "confirms)")

        def raise_check(records: list[AuditRecord]) -> None:
            now = disposition(records)
            _not_removed(now)
            if _rank(now.cls) >= _rank(EVIDENCE):
                raise _AlreadyRecorded

        written = [self.registers.append(
            device, session, actor, "case",
            {"case": case, "case_file_until": case_file_until.isoformat() if case_file_until else None,
             "reason": reason}, check)]
        with contextlib.suppress(_AlreadyRecorded):
            written.append(self.registers.append(
                device, session, actor, "retention",
                {"class": EVIDENCE, "reason": f"linked to case {case}", "grounds": "", "source": "case",
                 "lowered": False}, raise_check))
        return written

    def record_device_classes(self, device: str, session: str, entries: Sequence[Entry]) -> list[AuditRecord]:
        """Record, once each, the class the room asked for: each MARK whose label names a class (by its entry's
        seq), and the booking the session was started under (FORMAT §13.2 `source` `device`, `booking`). Each is
        recorded even when the class in force is already as long, so a later two-person lowering is never
        undone by reading the same MARK again; it raises the class only when it is longer (§13.3)."""
        wanted: list[tuple[str, dict[str, Any]]] = []
        for entry in entries:
            opening = entry.opening
            if opening is not None and opening.booking is not None:
                wanted.append((opening.booking.retention, {
                    "reason": f"booking {opening.booking.id} ({opening.booking.act})", "source": "booking",
                    "booking": opening.booking.id}))
            if entry.kind == EVENT and entry.body.get("name") == "mark":
                cls = mark_class(str(entry.body.get("label", "")))
                if cls is not None:
                    wanted.append((cls, {"reason": f"MARK: {entry.body.get('label')}", "source": "device",
                                         "mark_seq": entry.seq}))
        written = []
        for cls, detail in wanted:
            key = "mark_seq" if "mark_seq" in detail else "booking"

            def check(records: list[AuditRecord], key: str = key, value: Any = detail[key]) -> None:
                if any(r.action == "retention" and r.detail.get(key) == value for r in records):
                    raise _AlreadyRecorded
                _not_removed(disposition(records))

            try:
                written.append(self.registers.append(
                    device, session, Actor("device", "device"), "retention",
                    {"class": cls, "grounds": "", "lowered": False, **detail}, check))
            except (_AlreadyRecorded, RetentionRefused):
                continue
        return written

    def sync_marks(self, device: str, session: str) -> None:
        """Read the session's entries and record the classes its MARKs and booking ask for (the sweep calls
        this; an entry that cannot be read is the sweep's to report)."""
        self.record_device_classes(device, session, self.store.entries(device, session, whole=False))

    def remove(self, device: str, session: str, actor: Actor, since: dt.datetime, now: dt.datetime) -> AuditRecord:
        """After expiry (counted from `since`, `kept_since`), the records keeper's removal: the tombstone first,
        then the segment files, their working copies and the export packages kept of the session."""
        _need(actor, REMOVERS, "remove an expired session's recordings")
        try:
            ledger = self.store.entries(device, session)
        except CentralError as err:
            raise RetentionRefused(f"{err}: a session whose ledger is not whole is not removed; have it looked "
                                   "at") from err
        closing = next((e for e in ledger if e.closing is not None), None)
        if closing is None or closing.closing is None:
            raise RetentionRefused("the session has no closing entry: a session not closed is never removed")
        segments: list[dict[str, Any]] = [
            {"file": e.segment.file, "sha256": e.segment.sha256, "bytes": e.segment.bytes}
            for e in ledger if e.segment is not None]
        done = self.of(device, session).removal
        if done is not None:
            # Decided before, and stopped part way (a crash, a full disk): finish removing what it names, if it
            # names exactly this session's segments.
            if done.detail.get("files") != segments or done.detail.get("close_hash") != closing.hash:
                raise RetentionRefused("the register's removal record does not name this session's segments: "
                                       "nothing is removed; have the register looked at")
            self._remove_files(device, session, segments)
            return done
        self.record_device_classes(device, session, ledger)
        exports = self.store.kept_exports(device, session)

        def check(records: list[AuditRecord]) -> None:
            d = disposition(records)
            _not_removed(d)
            if d.hold:
                raise RetentionRefused("the session is on legal hold: nothing of it is removed until the hold is "
                                       "lifted")
            end = expires(d, since, self.cfg)
            if end is None:
                raise RetentionRefused(f"the session is {d.label} with no end date for its case file: it is kept")
            if now < end:
                raise RetentionRefused(f"the session is kept until {end.isoformat(timespec='minutes')} "
                                       f"({d.label}); nothing is removed before its retention expires")

        record = self.registers.append(
            device, session, actor, "removal",
            {"files": segments, "entries": len(ledger), "close_seq": closing.seq, "close_hash": closing.hash,
             "merkle_root": closing.closing.merkle_root, "kept_since": since.isoformat(timespec="seconds"),
             "class": self.of(device, session).cls, "periods": {"everyday_months": self.cfg.everyday_months,
                                                                "long_term_years": self.cfg.long_term_years},
             "exports": exports}, check)
        self._remove_files(device, session, segments)
        return record

    def _remove_files(self, device: str, session: str, segments: list[dict[str, Any]]) -> None:
        self.store.remove_originals(device, session, [str(s["file"]) for s in segments])
        self.store.remove_exports(device, session)


class _AlreadyRecorded(Exception):
    """A decision the register already holds (a MARK or booking recorded, a class already as long)."""


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
    """What expires when (RETENTION): every session given, soonest expiry first, then those with no end. A
    session whose register does not hold is listed as such (the sweep raises it)."""
    registered = set(retention.store.registers())
    out = []
    for row in rows:
        since = kept_since(row).astimezone(now.tzinfo)
        try:
            d = retention.of(row.device, row.session) if (row.device, row.session) in registered else Disposition()
        except CentralError:
            out.append(ReportRow(row.device, row.session, row.unit, row.room, row.opened_at, EVERYDAY, "", False,
                                 since, None, "登记受损 register broken: kept", False, row.complete))
            continue
        end = expires(d, since, retention.cfg)
        out.append(ReportRow(row.device, row.session, row.unit, row.room, row.opened_at, d.cls, d.case, d.hold,
                             since, end, state_text(d, since, now, retention.cfg), d.removal is not None,
                             row.complete))
    far = dt.datetime.max.replace(tzinfo=dt.UTC)
    return sorted(out, key=lambda r: (r.removed, r.expires or far, r.device, r.session))
