"""The access audit (FORMAT §12): who at central logged in, searched, viewed, played, downloaded, approved or
changed what, as an append-only file of signed, hash-chained records, one canonical JSON object per line.

A record is chained and signed the way ledger entries are (evidence/entry.py): its hash is
SHA-256(0x00 || canonical bytes without "sig"), each names the hash of the one before in "prev" (the first
names GENESIS), and "sig" is central's Ed25519 signature over AUDIT_CONTEXT || those bytes. So no record
can be edited, removed or put in between without the check failing, and nobody without central's signing
key can add one. `check_audit` is the whole check; a third party needs only this file, canonical.py and
the signing key's public half.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from evidence.canonical import NotCanonical, canonical, parse_canonical
from evidence.entry import GENESIS, HEX64, LEAF_PREFIX
from evidence.errors import EvidenceError
from evidence.keys import VerifyKey, verify_signature

AUDIT_VERSION = 1
AUDIT_CONTEXT = b"room-recorder/audit/v1\x00"
REGISTER_CONTEXT = b"room-recorder/register/v1\x00"
MAX_RECORD_BYTES = 16 * 1024
REGISTER_ACTIONS = ("retention", "lower_request", "hold", "case", "explanation", "export", "removal")
"""What central decided about one session, in its register (FORMAT §13): each is also an audit action."""
ACTIONS = ("login", "login_failed", "logout", "search", "view", "playback", "download", "request", "approve",
           "refuse", "account", "settings", "alert_ack", "stats", "retention_report", "booking", *REGISTER_ACTIONS)
"""What a record may say was done (FORMAT §12.2)."""


@dataclass(frozen=True)
class LogKind:
    """One of central's signed, chained logs: they share the record form and differ in signing context (so a
    record of one never passes for the other) and in the actions they hold."""

    name: str
    context: bytes
    actions: tuple[str, ...]


AUDIT = LogKind("access audit", AUDIT_CONTEXT, ACTIONS)
REGISTER = LogKind("session register", REGISTER_CONTEXT, REGISTER_ACTIONS)
_FIELDS: dict[str, type] = {"v": int, "seq": int, "prev": str, "time": str, "actor": str, "role": str,
                            "action": str, "target": str, "detail": dict, "address": str, "sig": str}
_SIG = re.compile(r"[A-Za-z0-9+/]{86}==\Z")


class MalformedAudit(EvidenceError):
    """An audit record that is not what FORMAT §12 says."""


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    prev: str
    time: str
    actor: str
    role: str
    action: str
    target: str
    detail: Mapping[str, Any]
    address: str
    sig: str
    hash: str
    signed_message: bytes
    raw: bytes

    @property
    def when(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.time)


def _unsigned(fields: Mapping[str, Any]) -> bytes:
    return canonical({k: v for k, v in fields.items() if k != "sig"})


def parse_record(line: bytes, kind: LogKind = AUDIT) -> AuditRecord:
    """One line of the log (without its newline), checked against FORMAT §12.1; MalformedAudit if not."""
    if len(line) > MAX_RECORD_BYTES:
        raise MalformedAudit(f"longer than {MAX_RECORD_BYTES} bytes")
    try:
        value = parse_canonical(line)
    except (NotCanonical, ValueError) as err:
        raise MalformedAudit(f"not canonical JSON: {err}") from err
    if not isinstance(value, dict) or set(value) != set(_FIELDS):
        raise MalformedAudit(f"must be an object of exactly the fields {', '.join(sorted(_FIELDS))}")
    for key, type_ in _FIELDS.items():
        if not isinstance(value[key], type_) or isinstance(value[key], bool):
            raise MalformedAudit(f"{key!r} must be {type_.__name__}")
    if value["v"] != AUDIT_VERSION:
        raise MalformedAudit(f"version {value['v']} is not {AUDIT_VERSION}")
    if value["seq"] < 0 or not HEX64.match(value["prev"]) or not _SIG.match(value["sig"]):
        raise MalformedAudit("'seq' must be at least 0, 'prev' 64 lowercase hex digits, 'sig' base64 of 64 bytes")
    if value["action"] not in kind.actions:
        raise MalformedAudit(f"action {value['action']!r} is not one of {', '.join(kind.actions)}")
    try:
        when = dt.datetime.fromisoformat(value["time"])
    except ValueError as err:
        raise MalformedAudit(f"time {value['time']!r} is not ISO 8601") from err
    if when.tzinfo is None:
        raise MalformedAudit(f"time {value['time']!r} has no offset")
    unsigned = _unsigned(value)
    return AuditRecord(value["seq"], value["prev"], value["time"], value["actor"], value["role"], value["action"],
                       value["target"], value["detail"], value["address"], value["sig"],
                       hashlib.sha256(LEAF_PREFIX + unsigned).hexdigest(), kind.context + unsigned, line)


def make_record(seq: int, prev: str, time: str, actor: str, role: str, action: str, target: str,
                detail: Mapping[str, Any], address: str, sign: Callable[[bytes], str],
                kind: LogKind = AUDIT) -> AuditRecord:
    """A signed record following the one whose hash is `prev`; parsed back, so it is one `check_audit` takes."""
    fields: dict[str, Any] = {"v": AUDIT_VERSION, "seq": seq, "prev": prev, "time": time, "actor": actor,
                              "role": role, "action": action, "target": target, "detail": dict(detail),
                              "address": address}
    fields["sig"] = sign(kind.context + canonical(fields))
    return parse_record(canonical(fields), kind)


@dataclass(frozen=True)
class AuditCheck:
    records: int
    head: str
    """The hash of the last good record (GENESIS for an empty audit): write it down to detect a cut tail."""
    problems: tuple[str, ...]
    """Each way the file breaks the rules, with its line number; empty when it holds."""
    torn_tail: bool
    """The last line is incomplete (central stopped while writing it): not a break, the chain ends before."""

    @property
    def ok(self) -> bool:
        return not self.problems


def check_audit(lines: Iterable[bytes], key: VerifyKey, kind: LogKind = AUDIT) -> AuditCheck:
    """Check every record (FORMAT §12.3): form, sequence, chain and signature. `lines` are the file's lines
    with their newlines (a last one without is torn)."""
    problems: list[str] = []
    prev, count, torn = GENESIS, 0, False
    for number, line in enumerate(lines, 1):
        if not line.endswith(b"\n"):
            torn = True
            break
        try:
            record = parse_record(line[:-1], kind)
        except MalformedAudit as err:
            problems.append(f"line {number}: {err}")
            continue
        if record.seq != count:
            problems.append(f"line {number}: seq {record.seq} where {count} comes next (a record removed or added)")
        if record.prev != prev:
            problems.append(f"line {number}: prev does not name the hash of the record before (a record changed, "
                            "removed or put in between)")
        if not verify_signature(key, record.sig, record.signed_message):
            problems.append(f"line {number}: the signature is not central's (the record was changed or forged)")
        prev, count = record.hash, record.seq + 1
    return AuditCheck(count, prev, tuple(problems), torn)
