"""The written explanation (情况说明) of a break in recording that could not be resolved (INTERRUPT: "if recording
cannot continue, report to the head of the unit at once and explain in writing afterwards, signed by two or
more officers").

Central fills the form in from what the device signed: the session's `open` entry, the break's `interruption`
entry (`resumed_ns` null: recording did not resume) with the `cannot_continue` event, and the alert the device
sent at once (FORMAT §4.3, §4.5, §11); an alert alone is enough when the ledger has not arrived. Those facts
are fixed: the officers add their account of what happened (情况经过) and sign.

Each step is a record of the session's register (central/register.py, action "explanation"), mirrored into the
access audit: the first officer signs the form with their account, a second officer of the unit signs the
same form (the same `form_sha256`), and with two different officers on one form the explanation is complete.
A scanned paper form signed by hand is the other way: it is kept with the session and its record names it.
Nothing is ever changed: a later explanation of the same break is a new record (a correction), and every
explanation stays on record.

Who may sign is the web application's rule book (central/web/roles.py); this module keeps the form's rules.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from central.errors import CentralError
from central.localtime import in_zone
from central.register import Actor, Registers
from central.store import CentralStore
from evidence.alert import CANNOT_CONTINUE, NOT_RESUMED, Alert
from evidence.audit import AuditRecord
from evidence.canonical import canonical
from evidence.entry import CLOSE, EVENT, INTERRUPTION, Entry, Officer, Opening, unsealed
from evidence.errors import MalformedEntry
from evidence.reasons import CLOSE_REASONS, INTERRUPTION_REASONS

ACTION = "explanation"
SIGNED, SCAN = "signed", "scan"
"""The record's `step`: one officer's signature on a form, or a scanned paper form signed by hand."""
SIGNATURES = 2
"""Officers who sign one form before the explanation is complete (the law: two or more)."""
MAX_ACCOUNT_CHARS = 2000
MAX_NAME_CHARS = 100
MAX_SCAN_BYTES = 10 * 1024 * 1024
_MAX_DETAIL_BYTES = 12 * 1024
"""A register record holds at most 16 KiB (FORMAT §12.1), and its copy in the audit adds a little."""
SCAN_TYPES: dict[str, tuple[bytes, str, str]] = {
    "pdf": (b"%PDF-", ".pdf", "application/pdf"),
    "png": (b"\x89PNG\r\n\x1a\n", ".png", "image/png"),
    "jpeg": (b"\xff\xd8\xff", ".jpg", "image/jpeg"),
}
"""What a scan may be, told by its first bytes (never by its name): type -> (magic, suffix, media type)."""
KEY = re.compile(r"(?:(\d{1,9})|alert-([0-9a-f]{16}))\Z")
"""How a form is named in a URL: the `interruption` entry's seq, or `alert-<id>` of an alert about it."""

KINDS = {
    CANNOT_CONTINUE: "无法继续录制 recording could not continue: the break did not clear",
    NOT_RESUMED: "重启后未能恢复 cut off by a restart and not resumed",
    "ended_interrupted": "中断后结束 ended while interrupted",
}
STATES = {"none": "未说明 not yet explained", "signed": f"已签 1/{SIGNATURES} signed by 1 of {SIGNATURES}",
          "complete": "已完成 complete", "scan": "已上传签字扫描件 complete: signed paper form kept"}


class ExplanationRefused(CentralError):
    """A signature or scan the rules do not take; the message says why and what to do."""


@dataclass(frozen=True)
class ExplanationForm:
    """The written explanation of one break that could not be resolved: the facts as the device signed them,
    and the officers' account (empty until an officer writes it)."""

    device: str
    session: str
    unit: str
    room: str
    location: str
    case: str
    matter: str
    officers: tuple[Officer, ...]
    interruption: int | None
    """The seq of the ledger's `interruption` entry; None while only the device's alert tells of the break."""
    alerts: tuple[str, ...]
    """The ids of the kept alerts about this break."""
    kind: str
    """A key of KINDS."""
    cause: str
    """A reason code (evidence/reasons.py) the device detected."""
    detail: str
    """What the device saw, in its words."""
    interrupted_at: str
    """When recording broke off, in the agency's zone."""
    opened_at: str
    attempts: int | None
    """How often the device tried to record again before giving up (None: it does not say)."""
    segments: int
    """Segments recorded before the break."""
    recorded_ns: int
    """Recording time in those segments."""
    closed: str
    """How the session ended ("" while it has not)."""
    account: str = ""
    """The officers' account of what happened (情况经过)."""

    @property
    def key(self) -> str:
        return str(self.interruption) if self.interruption is not None else f"alert-{self.alerts[0]}"

    @property
    def cause_label(self) -> str:
        reason = INTERRUPTION_REASONS.get(self.cause)
        return f"{reason.zh} {reason.en}" if reason is not None else self.cause

    @property
    def kind_label(self) -> str:
        return KINDS.get(self.kind, self.kind)

    def as_json(self) -> dict[str, Any]:
        """The form as its register records hold it (canonical JSON), the account included."""
        return {"device": self.device, "session": self.session, "unit": self.unit, "room": self.room,
                "location": self.location, "case": self.case, "matter": self.matter,
                "officers": [{"name": o.name, "certificate": o.certificate} for o in self.officers],
                "interruption": self.interruption, "alerts": list(self.alerts), "kind": self.kind,
                "cause": self.cause, "cause_label": self.cause_label, "detail": self.detail,
                "interrupted_at": self.interrupted_at, "opened_at": self.opened_at, "attempts": self.attempts,
                "segments": self.segments, "recorded_ns": self.recorded_ns, "closed": self.closed,
                "account": self.account}

    @property
    def sha256(self) -> str:
        return form_sha256(self.as_json())

    @property
    def facts_sha256(self) -> str:
        """The hash of the facts alone (the form with no account): what an officer saw before writing."""
        return replace(self, account="").sha256

    def with_account(self, account: str) -> ExplanationForm:
        return replace(self, account=account)

    def concerns(self, detail: Mapping[str, Any]) -> bool:
        """Whether a register record's detail is about this break: the same `interruption` entry, or an alert
        about it (a form signed from the alert before the ledger arrived)."""
        seq = detail.get("interruption")
        if self.interruption is not None and seq == self.interruption:
            return True
        alerts = detail.get("alerts")
        return isinstance(alerts, list) and bool(set(self.alerts) & {a for a in alerts if isinstance(a, str)})


def form_sha256(form: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(dict(form))).hexdigest()


@dataclass(frozen=True)
class Signature:
    signer: str
    role: str
    certificate: str
    time: str
    seq: int
    """The register record's seq."""


@dataclass(frozen=True)
class Scan:
    sha256: str
    bytes: int
    type: str
    signers: tuple[str, ...]
    uploader: str
    time: str
    seq: int


@dataclass(frozen=True)
class Explanation:
    """One form as it was signed (or one scanned paper form), with every signature on it."""

    form: Mapping[str, Any]
    form_sha256: str
    signatures: tuple[Signature, ...] = ()
    scan: Scan | None = None

    @property
    def complete(self) -> bool:
        return self.scan is not None or len(self.signatures) >= SIGNATURES

    @property
    def signers(self) -> tuple[str, ...]:
        return self.scan.signers if self.scan is not None else tuple(s.signer for s in self.signatures)

    @property
    def account(self) -> str:
        return str(self.form.get("account", ""))


@dataclass(frozen=True)
class ExplanationState:
    """A break, its form as it would be filled in now, and every explanation of it on record (oldest first)."""

    form: ExplanationForm
    explanations: tuple[Explanation, ...]

    @property
    def complete(self) -> tuple[Explanation, ...]:
        return tuple(e for e in self.explanations if e.complete)

    @property
    def pending(self) -> tuple[Explanation, ...]:
        """Forms one officer has signed and no second yet."""
        return tuple(e for e in self.explanations if not e.complete)

    @property
    def state(self) -> str:
        """A key of STATES: the latest complete explanation decides; else whether one officer has signed."""
        if self.complete:
            return "scan" if self.complete[-1].scan is not None else "complete"
        return "signed" if self.pending else "none"

    @property
    def state_label(self) -> str:
        return STATES[self.state]


def _instant(text: str) -> dt.datetime | None:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def _joined(*parts: str) -> str:
    seen: list[str] = []
    for part in parts:
        if part and part not in seen:
            seen.append(part)
    return "; ".join(seen)


def prefill(entries: Sequence[Entry], opening: Opening | None, alerts: Sequence[Alert],
            zone: dt.tzinfo) -> list[ExplanationForm]:
    """The form of every break in the session that could not be resolved, from its ledger as stored (`entries`
    from seq 0; `opening` with its personal fields opened, if they were sealed) and the kept `alerts` about the
    session: each `interruption` entry with `resumed_ns` null, and each alert that names none of them."""
    breaks = [e for e in entries if e.kind == INTERRUPTION and e.interruption is not None
              and e.interruption.resumed_ns is None]
    began = {e.seq: str(e.body.get("began_wall") or e.time) for e in breaks}
    closing = next((e for e in entries if e.kind == CLOSE and e.closing is not None), None)
    matched: dict[int, list[Alert]] = {e.seq: [] for e in breaks}
    loose: list[Alert] = []
    for alert in sorted(alerts, key=lambda a: (a.time, a.id)):
        at = _instant(alert.interrupted_at)
        seq = next((e.seq for e in breaks if at is not None and _instant(began[e.seq]) == at), None)
        if seq is None and closing is not None and breaks:
            # The alert is about how the session ended, and a closed session's last unresolved break is that end;
            # its time need not match (an interruption in the older form has no `began_wall`, only the time of
            # the restart that wrote it).
            seq = breaks[-1].seq
        if seq is None:
            loose.append(alert)
        else:
            matched[seq].append(alert)
    events = [e for e in entries if e.kind == EVENT]
    every_break = [e.seq for e in entries if e.kind == INTERRUPTION]
    forms = []
    for entry in breaks:
        assert entry.interruption is not None
        told = matched[entry.seq]
        since = max((seq for seq in every_break if seq < entry.seq), default=-1)
        stopped = next((e for e in reversed(events) if since < e.seq < entry.seq
                        and e.body.get("name") == "cannot_continue"), None)
        kind = told[0].kind if told else CANNOT_CONTINUE if stopped is not None else (
            NOT_RESUMED if closing is not None and closing.closing is not None
            and closing.closing.reason_code == NOT_RESUMED else "ended_interrupted")
        attempts = (stopped.body.get("attempts") if stopped is not None else None)
        if not isinstance(attempts, int) or isinstance(attempts, bool):
            attempts = max((a.attempts for a in told), default=None)
        detail = _joined(*(a.detail for a in told), str(stopped.body.get("reason", "")) if stopped else "",
                         str(entry.body.get("detail", "")))
        forms.append(_form(entries, opening, told, zone, entry.seq, kind, entry.interruption.cause, detail,
                           in_zone(began[entry.seq], zone), attempts, closing))
    for alert in loose:
        forms.append(_form(entries, opening, [alert], zone, None, alert.kind, alert.cause, alert.detail,
                           in_zone(alert.interrupted_at, zone), alert.attempts, closing))
    return forms


def _form(entries: Sequence[Entry], opening: Opening | None, alerts: Sequence[Alert], zone: dt.tzinfo,
          seq: int | None, kind: str, cause: str, detail: str, interrupted_at: str, attempts: int | None,
          closing: Entry | None) -> ExplanationForm:
    # The ledger's own fields when they can be read; a sealed `open` central cannot open, or a ledger not yet
    # arrived, leaves them to the alert, which names the same people and place as configured on the device.
    told = alerts[0] if alerts else None

    def text(field: str) -> str:
        value = str(getattr(opening, field)) if opening is not None else ""
        return value or (str(getattr(told, field)) if told is not None else "")

    officers = opening.officers if opening is not None and opening.officers else told.officers if told else ()
    before = [e.segment for e in entries if e.segment is not None and (seq is None or e.seq < seq)]
    close = ""
    if closing is not None and closing.closing is not None:
        code = closing.closing.reason_code or ""
        close = _joined(CLOSE_REASONS.get(code, ""), closing.closing.reason)
    return ExplanationForm(
        device=entries[0].device if entries else told.device if told else "",
        session=entries[0].session if entries else told.session if told else "",
        unit=text("unit"), room=text("room"), location=text("location"), case=text("case"), matter=text("matter"),
        officers=tuple(officers), interruption=seq, alerts=tuple(a.id for a in alerts), kind=kind, cause=cause,
        detail=detail, interrupted_at=interrupted_at,
        opened_at=in_zone(entries[0].time, zone) if entries else "", attempts=attempts, segments=len(before),
        recorded_ns=sum(s.end - s.start_ns for s in before), closed=close)


def explanations(form: ExplanationForm, records: Sequence[AuditRecord]) -> tuple[Explanation, ...]:
    """Every explanation of the form's break in the register, oldest first: signatures grouped by the form they
    signed, and each scan."""
    found: dict[str, Explanation] = {}
    order: list[str] = []
    for r in records:
        d = r.detail
        if r.action != ACTION or not form.concerns(d):
            continue
        digest = str(d.get("form_sha256", ""))
        if d.get("step") == SCAN:
            scan = Scan(str(d.get("scan_sha256", "")), int(d.get("scan_bytes", 0)), str(d.get("scan_type", "")),
                        tuple(str(s) for s in d.get("signers", [])), r.actor, r.time, r.seq)
            key = f"scan:{r.seq}"
            found[key] = Explanation(d.get("form", {}), digest, scan=scan)
            order.append(key)
        elif d.get("step") == SIGNED:
            signature = Signature(str(d.get("signer", r.actor)), r.role, str(d.get("certificate", "")), r.time, r.seq)
            kept = found.get(digest)
            if kept is None:
                found[digest] = Explanation(d.get("form", {}), digest, (signature,))
                order.append(digest)
            elif signature.signer not in kept.signers:
                found[digest] = replace(kept, signatures=(*kept.signatures, signature))
    return tuple(found[k] for k in order)


def scan_type(data: bytes) -> str:
    """The scan's type from its first bytes; ExplanationRefused for anything else or too big."""
    if not data:
        raise ExplanationRefused("the scan is empty: choose the scanned, signed form (PDF, PNG or JPEG)")
    if len(data) > MAX_SCAN_BYTES:
        raise ExplanationRefused(f"the scan is {len(data) / 1e6:.1f} MB; at most {MAX_SCAN_BYTES // (1024 * 1024)} "
                                 "MB is kept: scan it again at a lower resolution")
    for kind, (magic, _, _) in SCAN_TYPES.items():
        if data.startswith(magic):
            return kind
    raise ExplanationRefused("the scan is not a PDF, PNG or JPEG file (by its content, whatever its name)")


def read_entries(store: CentralStore, device: str, session: str,
                 central_key: X25519PrivateKey | None) -> tuple[list[Entry], Opening | None]:
    """The session's entries as stored, from seq 0 up to the first missing or unreadable one, and its `open`
    with sealed personal fields opened when central's key is given."""
    entries = store.entries(device, session, whole=False)
    opening = entries[0].opening if entries else None
    if opening is not None and central_key is not None:
        with contextlib.suppress(MalformedEntry):  # the alert then names the people, if one came
            opening = unsealed(opening, central_key)
    return entries, opening


class Explanations:
    """The forms of a session's unresolved breaks, and their signing, each step a register record."""

    def __init__(self, store: CentralStore, registers: Registers, zone: dt.tzinfo,
                 central_key: X25519PrivateKey | None = None) -> None:
        self.store = store
        self.registers = registers
        self.zone = zone
        self.central_key = central_key

    def forms(self, device: str, session: str, entries: Sequence[Entry] | None = None,
              opening: Opening | None = None) -> list[ExplanationForm]:
        """The pre-filled forms; `entries` and `opening` when the caller has read the ledger already."""
        if entries is None:
            entries, opening = read_entries(self.store, device, session, self.central_key)
        alerts = [a.alert for a in self.store.alerts() if a.alert.device == device and a.alert.session == session
                  and a.alert.kind in (CANNOT_CONTINUE, NOT_RESUMED)]
        return prefill(entries, opening, alerts, self.zone)

    def states(self, device: str, session: str, forms: Sequence[ExplanationForm] | None = None
               ) -> list[ExplanationState]:
        records = self.registers.records(device, session)
        return [ExplanationState(f, explanations(f, records))
                for f in (self.forms(device, session) if forms is None else forms)]

    def form(self, device: str, session: str, key: str, forms: Sequence[ExplanationForm] | None = None
             ) -> ExplanationForm:
        """The form named `key` (KEY): by its `interruption` entry's seq, or by an alert about the break."""
        found = KEY.match(key)
        for form in self.forms(device, session) if forms is None else forms:
            if found is not None and ((found[1] is not None and form.interruption == int(found[1]))
                                      or found[2] in form.alerts):
                return form
        raise ExplanationRefused(f"session {device}/{session} has no unresolved break {key!r}: a written explanation "
                                 "is for a break in recording that did not resume")

    def sign(self, device: str, session: str, actor: Actor, form: ExplanationForm, facts_sha256: str,
             certificate: str = "") -> AuditRecord:
        """The first officer's signature on `form` with their account; `facts_sha256` is the hash of the facts
        they read (ExplanationForm.facts_sha256), so facts that changed meanwhile are never signed unseen."""
        account = form.account.strip()
        if not account:
            raise ExplanationRefused("write the account of what happened (情况经过) before signing")
        if len(account) > MAX_ACCOUNT_CHARS:
            raise ExplanationRefused(f"the account is {len(account)} characters; at most {MAX_ACCOUNT_CHARS} fit "
                                     "on the form: shorten it, or upload a signed paper form")
        if facts_sha256 != form.facts_sha256:
            raise ExplanationRefused("the form's facts changed while it was open (more of the session arrived): "
                                     "read the form again and sign it as it is now")
        signed = form.with_account(account)
        return self._signature(device, session, actor, signed, certificate)

    def cosign(self, device: str, session: str, actor: Actor, form: ExplanationForm, form_sha256: str,
               certificate: str = "") -> AuditRecord:
        """A further officer's signature on the form another officer signed, named by its `form_sha256`: the
        form as pre-filled now, with that officer's account, must hash to it."""
        records = self.registers.records(device, session)
        first = next((e for e in explanations(form, records) if e.scan is None and e.form_sha256 == form_sha256),
                     None)
        if first is None:
            raise ExplanationRefused(f"no officer has signed a form {form_sha256[:12]}… for this break: sign the form "
                                     "as it is shown")
        signed = form.with_account(first.account)
        if signed.sha256 != form_sha256:
            raise ExplanationRefused(
                f"the form {', '.join(first.signers)} signed no longer matches the facts as they stand now (more of "
                "the session arrived since): the first signature stays on record; sign the form as it is now, "
                "with the account written again, and have a second officer sign it")
        return self._signature(device, session, actor, signed, certificate)

    def _signature(self, device: str, session: str, actor: Actor, signed: ExplanationForm,
                   certificate: str) -> AuditRecord:
        certificate = certificate.strip()
        if len(certificate) > MAX_NAME_CHARS:
            raise ExplanationRefused("the certificate number is too long")
        digest = signed.sha256

        def check(records: list[AuditRecord]) -> None:
            _open_register(records)
            same = next((e for e in explanations(signed, records) if e.scan is None and e.form_sha256 == digest),
                        None)
            if same is not None and actor.name in same.signers:
                raise ExplanationRefused(f"{actor.name} has already signed this form: a second officer, in their "
                                         "own account, signs it")

        return self._append(device, session, actor, signed, {
            "step": SIGNED, "signer": actor.name, "certificate": certificate}, check)

    def keep_scan(self, device: str, session: str, actor: Actor, form: ExplanationForm, data: bytes,
                  signers: Sequence[str]) -> AuditRecord:
        """Keep a scanned paper form signed by hand (PDF, PNG or JPEG) with the session, naming the officers who
        signed it (as the uploader reads them off the paper)."""
        names = [s.strip() for s in signers]
        if len(names) < SIGNATURES or any(not n for n in names):
            raise ExplanationRefused(f"name the {SIGNATURES} officers who signed the paper form")
        if len(set(names)) < len(names):
            raise ExplanationRefused("the officers named on the paper form must be different people")
        if any(len(n) > MAX_NAME_CHARS for n in names):
            raise ExplanationRefused("an officer's name is too long")
        kind = scan_type(data)
        digest = self.store.keep_attachment(device, session, data, SCAN_TYPES[kind][1])

        def check(records: list[AuditRecord]) -> None:
            _open_register(records)
            if any(e.scan is not None and e.scan.sha256 == digest for e in explanations(form, records)):
                raise ExplanationRefused("this scan is already kept for this break")

        return self._append(device, session, actor, form, {
            "step": SCAN, "scan_sha256": digest, "scan_bytes": len(data), "scan_type": kind, "signers": names},
            check)

    def read_scan(self, device: str, session: str, sha256: str) -> tuple[bytes, str]:
        """A scan a record of the session's register names: its bytes and its type (a key of SCAN_TYPES)."""
        if not any(r.action == ACTION and r.detail.get("step") == SCAN and r.detail.get("scan_sha256") == sha256
                   for r in self.registers.records(device, session)):
            raise ExplanationRefused(f"no scan {sha256[:12]}… is kept with this session")
        data = self.store.read_attachment(device, session, sha256)
        return data, scan_type(data)

    def _append(self, device: str, session: str, actor: Actor, form: ExplanationForm, step: Mapping[str, Any],
                check: Callable[[list[AuditRecord]], None]) -> AuditRecord:
        detail = {"interruption": form.interruption, "alerts": list(form.alerts), "form": form.as_json(),
                  "form_sha256": form.sha256, **step}
        if len(canonical(detail)) > _MAX_DETAIL_BYTES:
            raise ExplanationRefused("the form is too long to be kept as one record: shorten the account")
        return self.registers.append(device, session, actor, ACTION, detail, check)


def _open_register(records: Sequence[AuditRecord]) -> None:
    if any(r.action == "removal" for r in records):
        raise ExplanationRefused("the session's recordings were removed after their retention expired; its register "
                                 "is closed")
