"""A session's register (FORMAT §13): what central decided about one session after it was recorded (its
retention class and the reasons, legal holds, the case it belongs to, written explanations, exports, and
the tombstone of a removal), as signed, chained records in the access audit's form, one file per session.

The session's own entries are never touched: a decision is a new record here, signed by central's key,
and every register record is also written to the access audit (FORMAT §12) by the same call, so the
audit shows who decided what and the register alone tells a session's story to whoever receives it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from central.audit import AuditLog
from central.errors import CentralError
from central.store import CentralStore
from evidence.audit import REGISTER, REGISTER_ACTIONS, AuditCheck, AuditRecord


class RegisterBroken(CentralError):
    """A session's register whose chain or signatures do not hold: nothing is decided by it."""


@dataclass(frozen=True)
class Actor:
    """Who does something at central: an account's name and role, or `cli:<user>` for a command."""

    name: str
    role: str
    address: str = ""


class Registers:
    """Opens each session's register with central's signing key, and mirrors every record into the audit."""

    def __init__(self, store: CentralStore, audit: AuditLog) -> None:
        self.store = store
        self.audit = audit

    def _log(self, device: str, session: str) -> AuditLog:
        return AuditLog(self.store.register_file(device, session), self.audit.sign, self.audit.public_key_b64,
                        self.audit.zone, REGISTER)

    def records(self, device: str, session: str, checked: bool = False) -> list[AuditRecord]:
        """The session's register, oldest first; empty when central has decided nothing about it. `checked`:
        RegisterBroken unless every record is in its place, signed by central and about this session, which
        anything deciding by the register asks for."""
        path = self.store.register_file(device, session, create=False)
        if not path.exists():
            return []
        log = self._log(device, session)
        return self._checked(log, f"{device}/{session}") if checked else list(log.records())

    @staticmethod
    def _checked(log: AuditLog, target: str) -> list[AuditRecord]:
        found = log.check()
        records = list(log.records())
        strays = [r.seq for r in records if r.target != target]
        if not found.ok or strays:
            why = "; ".join([*found.problems, *(f"record {s} is about another session" for s in strays)])
            raise RegisterBroken(f"{log.path}: the session's register does not hold ({why}); nothing is decided "
                                 "by it until it has been looked at (`recorder central sweep` lists it)")
        return records

    def counts_in_audit(self) -> dict[str, int]:
        """How many records each session's register had, as the audit's copies say (`register_seq` + 1 of the
        last), by "<device>/<session>": a register cut short, or gone, still has its records counted there."""
        counts: dict[str, int] = {}
        for r in self.audit.records():
            seq = r.detail.get("register_seq")
            if r.action in REGISTER_ACTIONS and isinstance(seq, int) and not isinstance(seq, bool):
                counts[r.target] = max(counts.get(r.target, 0), seq + 1)
        return counts

    def check(self, device: str, session: str) -> AuditCheck:
        return self._log(device, session).check()

    def append(self, device: str, session: str, actor: Actor, action: str, detail: Mapping[str, Any],
               check: Callable[[list[AuditRecord]], None] | None = None) -> AuditRecord:
        """Write the decision to the session's register, then to the audit; both fsynced before it returns.
        `check` is given the register's records, checked, under its lock, and raises to refuse the decision;
        a register that does not hold refuses every decision (RegisterBroken)."""
        target = f"{device}/{session}"
        log = self._log(device, session)

        def precondition() -> None:
            records = self._checked(log, target)
            if check is not None:
                check(records)

        record = log.append(actor.name, actor.role, action, target, detail, actor.address, precondition)
        self.audit.append(actor.name, actor.role, action, target, {**detail, "register_seq": record.seq},
                          actor.address)
        return record

    def now(self) -> dt.datetime:
        return dt.datetime.now(self.audit.zone or dt.UTC)
