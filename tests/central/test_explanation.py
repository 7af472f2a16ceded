"""The written explanation (情况说明) of a break that could not be resolved (INTERRUPT): central fills the form in
from what the device signed (a real device's full disk that did not clear, and forged ledgers for the rules),
two different officers sign the same form, the same officer cannot sign twice, a form that no longer matches
is refused, a scanned paper form is kept byte for byte, and a later explanation stands beside the first."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import stat
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from capture.recording import close_session
from central.audit import AUDIT_FILE, AuditLog
from central.build import build_audit, central_key
from central.errors import CentralError
from central.explanation import (
    MAX_SCAN_BYTES,
    ExplanationRefused,
    Explanations,
)
from central.register import Actor, Registers
from central.store import FileStore
from evidence import layout
from evidence.alert import Alert, make_alert
from evidence.entry import Segment, parse_entry
from firmware_py.rig import Rig
from firmware_py.state_machine import State
from hal.buttons.base import ButtonName
from mqtt.broker import LocalBroker
from provisioning.identity import DeviceIdentity
from tests import forge as forged
from tests.conftest import make_rig, wait_until

ZONE = ZoneInfo("Asia/Shanghai")
DEVICE = "ROOM-9"
UNIT, ROOM = "城关派出所", "询问室二"
OFFICERS = [{"name": "李警官", "certificate": "44010000123"}, {"name": "王科长", "certificate": "44010000456"}]
OPENED = dt.datetime(2026, 3, 4, 14, 0, tzinfo=ZONE)
BEGAN_WALL = "2026-03-04T06:00:20.000+00:00"
"""When recording broke off, as the device wrote it (in UTC: the form shows it in the agency's zone)."""
S = 1_000_000_000
LI, WANG, ZHAO = Actor("李警官", "viewer"), Actor("王科长", "supervisor"), Actor("赵警官", "viewer")
PDF = b"%PDF-1.4\n% a signed explanation\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"
ACCOUNT = "14时00分20秒存储空间已满，设备提示无法继续录制。当事人在场，民警当即报告值班领导。"


@dataclasses.dataclass
class Forged:
    store: FileStore
    device: str
    session: str
    identity: DeviceIdentity
    alert: Alert | None
    explanations: Explanations
    audit: AuditLog

    @property
    def registers(self) -> Registers:
        return self.explanations.registers


def write_ledger(store: FileStore, device: str, session: str, identity: DeviceIdentity, resumed: bool = False) -> None:
    """The session as a device writes it when its disk fills for good: two segments, the `cannot_continue`
    event, the `interruption` that did not resume, and the close (`fault_not_cleared`). With `resumed`, the
    break clears instead and the session ends with STOP."""
    folder = store.session_dir(device, session)
    ledger = forged.open_session(folder, device, identity,
                                 forged.StepClock(OPENED, dt.timedelta(seconds=10)),
                                 {"unit": UNIT, "room": ROOM, "location": "城关路1号", "case": "A-2026-7",
                                  "matter": "询问", "officers": OFFICERS, "parties": ["张某"]})
    segments: list[Segment] = []
    for index in (1, 2):
        media = f"segment {index}".encode() * 100
        layout.media_path(folder, layout.media_name(index)).write_bytes(media)
        entry = ledger.append("segment", forged.segment_body(index, media, (index - 1) * 10 * S, index * 10 * S))
        assert entry.segment is not None
        segments.append(entry.segment)
    if resumed:
        ledger.append("interruption", {"cause": "camera", "began_ns": 20 * S, "began_wall": BEGAN_WALL,
                                       "resumed_ns": 25 * S, "resumed_wall": "2026-03-04T06:00:25.000+00:00",
                                       "recovered_segments": []})
        layout.media_path(folder, layout.media_name(3)).write_bytes(b"3" * 100)
        entry = ledger.append("segment", forged.segment_body(3, b"3" * 100, 25 * S, 30 * S))
        assert entry.segment is not None
        segments.append(entry.segment)
        close_session(ledger, "stop button held", "stop_button", segments)
        return
    ledger.append("event", {"name": "cannot_continue", "cause": "storage_full", "reason": "free space below a minute",
                            "attempts": 4})
    ledger.append("interruption", {"cause": "storage_full", "detail": "no space left on device", "began_ns": 20 * S,
                                   "began_wall": BEGAN_WALL, "resumed_ns": None, "recovered_segments": []})
    close_session(ledger, "fault: storage full", "fault_not_cleared", segments)


def store_alert(store: FileStore, device: str, session: str, identity: DeviceIdentity) -> Alert:
    alert = make_alert({
        "id": hashlib.sha256(session.encode()).hexdigest()[:16], "kind": "cannot_continue", "device": device,
        "session": session, "unit": UNIT, "room": ROOM, "location": "城关路1号", "officers": OFFICERS,
        "case": "A-2026-7", "matter": "询问", "cause": "storage_full", "detail": "free space below a minute",
        "interrupted_at": "2026-03-04T14:00:20.000+08:00", "time": "2026-03-04T14:00:50.000+08:00",
        "clock_synced": True, "attempts": 4}, identity.sign)
    assert store.store_alert(alert)
    return alert


def forge_cannot_continue(root: Path, ledger: bool = True, alert: bool = True, resumed: bool = False) -> Forged:
    """A store holding a session whose recording could not continue: its ledger and/or the device's alert."""
    store = FileStore(root)
    identity = DeviceIdentity(Ed25519PrivateKey.generate())
    store.enroll(DEVICE, identity.public_key_b64)
    session = OPENED.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-e11a01"
    if ledger:
        write_ledger(store, DEVICE, session, identity, resumed)
    told = store_alert(store, DEVICE, session, identity) if alert else None
    central = DeviceIdentity(Ed25519PrivateKey.generate())
    audit = AuditLog(store.state_file(AUDIT_FILE), central.sign, central.public_key_b64, ZONE)
    return Forged(store, DEVICE, session, identity, told, Explanations(store, Registers(store, audit), ZONE), audit)


@pytest.fixture
def kept(tmp_path: Path) -> Forged:
    return forge_cannot_continue(tmp_path / "central")


def explanation_records(f: Forged) -> list[dict[str, object]]:
    return [dict(r.detail) for r in f.registers.records(f.device, f.session) if r.action == "explanation"]


def test_the_form_is_filled_in_from_the_ledger_and_the_alert__INTERRUPT(kept: Forged) -> None:
    [form] = kept.explanations.forms(kept.device, kept.session)
    assert kept.alert is not None
    assert (form.unit, form.room, form.location, form.case, form.matter) == (
        UNIT, ROOM, "城关路1号", "A-2026-7", "询问")
    assert [(o.name, o.certificate) for o in form.officers] == [(o["name"], o["certificate"]) for o in OFFICERS]
    assert (form.interruption, form.alerts, form.kind, form.cause) == (4, (kept.alert.id,), "cannot_continue",
                                                                       "storage_full")
    assert form.cause_label == "存储空间已满 storage full"
    assert form.interrupted_at == "2026-03-04 14:00:20+08:00"  # the agency's zone, from the UTC the device wrote
    assert form.opened_at == "2026-03-04 14:00:00+08:00"
    assert (form.segments, form.recorded_ns, form.attempts) == (2, 20 * S, 4)
    assert "free space below a minute" in form.detail and "no space left on device" in form.detail
    assert "a fault did not clear" in form.closed
    assert form.account == "" and form.key == "4"
    # The alert names the same break, and so does its key.
    assert kept.explanations.form(kept.device, kept.session, f"alert-{kept.alert.id}") == form
    with pytest.raises(ExplanationRefused, match="no unresolved break '3'"):
        kept.explanations.form(kept.device, kept.session, "3")


def test_two_different_officers_sign_the_same_form_and_it_is_complete__INTERRUPT(kept: Forged) -> None:
    [form] = kept.explanations.forms(kept.device, kept.session)
    first = kept.explanations.sign(kept.device, kept.session, LI, form.with_account(ACCOUNT), form.facts_sha256,
                                   "44010000123")
    [state] = kept.explanations.states(kept.device, kept.session)
    assert state.state == "signed" and state.state_label == "已签 1/2 signed by 1 of 2"
    second = kept.explanations.cosign(kept.device, kept.session, WANG, form, str(first.detail["form_sha256"]))
    [state] = kept.explanations.states(kept.device, kept.session)
    assert state.state == "complete"
    [done] = state.complete
    assert done.signers == ("李警官", "王科长") and done.account == ACCOUNT
    signed = form.with_account(ACCOUNT)
    assert set(first.detail) == {"interruption", "alerts", "form", "form_sha256", "step", "signer", "certificate"}
    assert first.detail["form"] == signed.as_json() and first.detail["form_sha256"] == signed.sha256
    assert (first.detail["step"], first.detail["signer"], first.detail["certificate"]) == ("signed", "李警官",
                                                                                          "44010000123")
    assert second.detail["form_sha256"] == first.detail["form_sha256"] and second.detail["signer"] == "王科长"
    assert (first.actor, second.actor, second.role) == ("李警官", "王科长", "supervisor")
    # Both are in the register and, with their register seq, in the access audit; both files hold.
    assert kept.registers.check(kept.device, kept.session).ok
    in_audit = [r for r in kept.audit.records() if r.action == "explanation"]
    assert [(r.actor, r.target, r.detail["register_seq"]) for r in in_audit] == [
        ("李警官", f"{DEVICE}/{kept.session}", 0), ("王科长", f"{DEVICE}/{kept.session}", 1)]
    assert kept.audit.check().ok


def test_the_same_officer_cannot_sign_a_form_twice__INTERRUPT(kept: Forged) -> None:
    [form] = kept.explanations.forms(kept.device, kept.session)
    first = kept.explanations.sign(kept.device, kept.session, LI, form.with_account(ACCOUNT), form.facts_sha256)
    with pytest.raises(ExplanationRefused, match="李警官 has already signed this form"):
        kept.explanations.cosign(kept.device, kept.session, LI, form, str(first.detail["form_sha256"]))
    with pytest.raises(ExplanationRefused, match="already signed"):
        kept.explanations.sign(kept.device, kept.session, LI, form.with_account(ACCOUNT), form.facts_sha256)
    assert len(explanation_records(kept)) == 1
    [state] = kept.explanations.states(kept.device, kept.session)
    assert state.state == "signed"


def test_a_form_that_does_not_match_is_refused__INTERRUPT(kept: Forged) -> None:
    [form] = kept.explanations.forms(kept.device, kept.session)
    with pytest.raises(ExplanationRefused, match="facts changed while it was open"):
        kept.explanations.sign(kept.device, kept.session, LI, form.with_account(ACCOUNT), "0" * 64)
    with pytest.raises(ExplanationRefused, match="write the account"):
        kept.explanations.sign(kept.device, kept.session, LI, form.with_account("  "), form.facts_sha256)
    kept.explanations.sign(kept.device, kept.session, LI, form.with_account(ACCOUNT), form.facts_sha256)
    with pytest.raises(ExplanationRefused, match="no officer has signed a form"):
        kept.explanations.cosign(kept.device, kept.session, WANG, form, form.with_account(ACCOUNT + "。").sha256)
    assert len(explanation_records(kept)) == 1


def test_a_form_signed_from_the_alert_alone_is_not_cosigned_once_the_ledger_changed_it__INTERRUPT(
        tmp_path: Path) -> None:
    f = forge_cannot_continue(tmp_path / "central", ledger=False)
    assert f.alert is not None
    [early] = f.explanations.forms(f.device, f.session)
    assert (early.interruption, early.key, early.unit, early.segments) == (None, f"alert-{f.alert.id}", UNIT, 0)
    assert early.interrupted_at == "2026-03-04 14:00:20+08:00" and early.attempts == 4
    first = f.explanations.sign(f.device, f.session, LI, early.with_account(ACCOUNT), early.facts_sha256)
    write_ledger(f.store, f.device, f.session, f.identity)  # the ledger arrives: the facts grow
    [now] = f.explanations.forms(f.device, f.session)
    assert now.interruption == 4 and now.alerts == early.alerts and now.segments == 2
    [state] = f.explanations.states(f.device, f.session)
    assert state.state == "signed"  # the signature on the alert's form is this break's
    with pytest.raises(ExplanationRefused, match="no longer matches the facts"):
        f.explanations.cosign(f.device, f.session, WANG, now, str(first.detail["form_sha256"]))
    # Signed again as it is now, by two officers, it is complete; the first signature stays on record.
    again = f.explanations.sign(f.device, f.session, WANG, now.with_account(ACCOUNT), now.facts_sha256)
    f.explanations.cosign(f.device, f.session, LI, now, str(again.detail["form_sha256"]))
    [state] = f.explanations.states(f.device, f.session)
    assert state.state == "complete" and len(state.explanations) == 2 and len(state.pending) == 1


def test_a_scanned_paper_form_is_kept_and_read_byte_for_byte__INTERRUPT(kept: Forged) -> None:
    [form] = kept.explanations.forms(kept.device, kept.session)
    record = kept.explanations.keep_scan(kept.device, kept.session, ZHAO, form, PDF, ["李警官", "王科长"])
    digest = hashlib.sha256(PDF).hexdigest()
    assert {k: record.detail[k] for k in ("step", "scan_sha256", "scan_bytes", "scan_type", "signers")} == {
        "step": "scan", "scan_sha256": digest, "scan_bytes": len(PDF), "scan_type": "pdf",
        "signers": ["李警官", "王科长"]}
    assert record.detail["form"] == form.as_json() and record.detail["form_sha256"] == form.sha256
    assert kept.explanations.read_scan(kept.device, kept.session, digest) == (PDF, "pdf")
    path = kept.store.register_file(kept.device, kept.session).with_name(f"{kept.session}.files") / f"{digest}.pdf"
    assert path.read_bytes() == PDF and stat.S_IMODE(path.stat().st_mode) == 0o640
    [state] = kept.explanations.states(kept.device, kept.session)
    assert state.state == "scan" and state.complete[0].signers == ("李警官", "王科长")
    with pytest.raises(ExplanationRefused, match="already kept"):
        kept.explanations.keep_scan(kept.device, kept.session, ZHAO, form, PDF, ["李警官", "王科长"])
    # The same bytes kept again are the same file; no scan of another session's register is served.
    assert kept.store.keep_attachment(kept.device, kept.session, PDF, ".pdf") == digest
    with pytest.raises(ExplanationRefused, match="no scan"):
        kept.explanations.read_scan(kept.device, kept.session, "1" * 64)
    with pytest.raises(CentralError, match="no attachment"):
        kept.store.read_attachment(kept.device, kept.session, "1" * 64)


@pytest.mark.parametrize(("data", "signers", "message"), [
    (b"GIF89a" + b"x" * 100, ["李警官", "王科长"], "not a PDF, PNG or JPEG"),
    (b"", ["李警官", "王科长"], "the scan is empty"),
    (b"%PDF-" + b"x" * MAX_SCAN_BYTES, ["李警官", "王科长"], "at most 10 MB"),
    (PDF, ["李警官", "李警官"], "must be different people"),
    (PDF, ["李警官", " "], "name the 2 officers"),
])
def test_a_scan_that_is_not_a_signed_form_is_refused__INTERRUPT(kept: Forged, data: bytes, signers: list[str],
                                                                message: str) -> None:
    [form] = kept.explanations.forms(kept.device, kept.session)
    with pytest.raises(ExplanationRefused, match=message):
        kept.explanations.keep_scan(kept.device, kept.session, ZHAO, form, data, signers)
    assert explanation_records(kept) == []


def test_a_later_explanation_is_a_new_record_beside_the_first__INTERRUPT(kept: Forged) -> None:
    [form] = kept.explanations.forms(kept.device, kept.session)
    for account, (a, b) in ((ACCOUNT, (LI, WANG)), (ACCOUNT + "补充：设备已送修。", (WANG, LI))):
        first = kept.explanations.sign(kept.device, kept.session, a, form.with_account(account), form.facts_sha256)
        kept.explanations.cosign(kept.device, kept.session, b, form, str(first.detail["form_sha256"]))
    [state] = kept.explanations.states(kept.device, kept.session)
    assert [e.account for e in state.complete] == [ACCOUNT, ACCOUNT + "补充：设备已送修。"]
    assert [e.signers for e in state.complete] == [("李警官", "王科长"), ("王科长", "李警官")]
    assert len(explanation_records(kept)) == 4


def test_a_break_that_resumed_needs_no_written_explanation__INTERRUPT(tmp_path: Path) -> None:
    f = forge_cannot_continue(tmp_path / "central", alert=False, resumed=True)
    assert f.explanations.forms(f.device, f.session) == []


@pytest.fixture(scope="module")
def full_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """A real device whose disk fills while recording and does not clear: it gives up, alerts central and
    closes the session (as tests/firmware_py/test_interrupt.py drives it)."""
    workdir = tmp_path_factory.mktemp("full-disk")
    with LocalBroker(workdir / "broker") as broker:
        rig = make_rig(workdir, broker.port, session={"cannot_continue_after_seconds": 3.0})
        try:
            rig.tap(ButtonName.START)
            rig.wait_state(State.RECORDING)
            assert rig.service.hal.sim is not None
            rig.service.hal.sim.fault("storage", True)
            rig.wait_state(State.FAULT, 40)
            rig.service.hal.sim.fault("storage", False)
            assert rig.service.spool.wait_drained(60), "central did not receipt the session"
            assert wait_until(lambda: bool(rig.store.alerts()), 30), "the alert did not reach central"
            yield rig
        finally:
            rig.close()


def test_a_real_devices_full_disk_fills_in_the_form_and_two_officers_sign_it__INTERRUPT(full_disk: Rig) -> None:
    rig = full_disk
    store, cfg = rig.store, rig.central
    [kept] = store.alerts()
    device, session = kept.alert.device, kept.alert.session
    book = Explanations(store, Registers(store, build_audit(cfg, store)), cfg.central.zone, central_key(cfg))
    [form] = book.forms(device, session)
    files = store.session_files(device, session)
    ledger = [parse_entry(files.read_entry(seq)) for seq in files.entry_seqs()]
    [gap] = [e for e in ledger if e.kind == "interruption"]
    assert gap.interruption is not None and gap.interruption.resumed_ns is None
    before = [e.segment for e in ledger if e.segment is not None and e.seq < gap.seq]
    # The `open` entry's people and place are sealed to central's key (FORMAT §4.2.1): central opens them.
    assert ledger[0].opening is not None and ledger[0].opening.sealed is not None
    assert (form.unit, form.room, form.location) == (rig.config.device.unit, rig.config.device.room,
                                                     rig.config.device.location)
    assert [(o.name, o.certificate) for o in form.officers] == [
        (o.name, o.certificate) for o in rig.config.session.officers]
    assert (form.interruption, form.alerts, form.kind, form.cause) == (gap.seq, (kept.alert.id,), "cannot_continue",
                                                                       "storage_full")
    assert form.interrupted_at == dt.datetime.fromisoformat(kept.alert.interrupted_at).astimezone(
        cfg.central.zone).isoformat(sep=" ", timespec="seconds")
    assert form.attempts is not None and form.attempts >= 1
    assert form.segments == len(before) > 0 and form.recorded_ns == sum(s.end - s.start_ns for s in before) > 0
    assert "a fault did not clear" in form.closed
    first = book.sign(device, session, LI, form.with_account(ACCOUNT), form.facts_sha256)
    book.cosign(device, session, WANG, form, str(first.detail["form_sha256"]))
    [state] = book.states(device, session)
    assert state.state == "complete" and state.complete[0].signers == ("李警官", "王科长")
    assert book.registers.check(device, session).ok
