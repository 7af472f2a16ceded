"""Retention at central (RETENTION, NO-EDIT): raising a class, refusing a silent lowering, two roles to lower, a
legal hold stopping expiry, removal only after expiry keeping the ledger and a signed tombstone, through the
rule book and through `recorder central retention` / `remove`."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from central import config as config_mod
from central.audit import AUDIT_FILE
from central.errors import CentralError
from central.register import Actor
from central.retention import (
    EVERYDAY,
    EVIDENCE,
    LONG_TERM,
    Disposition,
    RetentionRefused,
    _add_months,
    expires,
    mark_class,
)
from central.sweep import sweep
from evidence import layout
from evidence.entry import parse_entry
from evidence.errors import ConfigError
from evidence.verify import verify_session
from firmware_py.cli import main
from tests.central.conftest import ZONE, Kept
from tests.conftest import RecordedSession

RECORDS = Actor("档案员", "records")
SUPERVISOR = Actor("王科长", "supervisor")
LEGAL = Actor("法制员", "legal")
VIEWER = Actor("李警官", "viewer")


def test_a_class_is_raised_with_a_reason_and_never_lowered_by_raising__RETENTION(kept: Kept) -> None:
    assert kept.of() == EVERYDAY
    with pytest.raises(RetentionRefused, match="only"):
        kept.retention.raise_class(kept.device, kept.session, VIEWER, EVIDENCE, "a case officer cannot")
    with pytest.raises(RetentionRefused, match="reason"):
        kept.retention.raise_class(kept.device, kept.session, RECORDS, EVIDENCE, "  ")
    with pytest.raises(RetentionRefused, match="long-term"):
        kept.retention.raise_class(kept.device, kept.session, RECORDS, LONG_TERM, "complaint", grounds="")
    kept.retention.raise_class(kept.device, kept.session, SUPERVISOR, LONG_TERM, "当事人投诉", grounds="dispute")
    assert kept.of() == LONG_TERM
    with pytest.raises(RetentionRefused, match="already"):
        kept.retention.raise_class(kept.device, kept.session, RECORDS, EVIDENCE, "a lower class is not a raise")
    # Linking to a case never lowers a long-term session to evidence.
    kept.retention.link_case(kept.device, kept.session, RECORDS, "京公(刑)字2026第118号", None, "filed")
    d = kept.retention.of(kept.device, kept.session)
    assert (d.cls, d.case) == (LONG_TERM, "京公(刑)字2026第118号")
    assert kept.retention.registers.check(kept.device, kept.session).ok


def test_lowering_needs_a_request_and_a_second_person_of_another_role__RETENTION(kept: Kept) -> None:
    d, s = kept.device, kept.session
    kept.retention.raise_class(d, s, RECORDS, EVIDENCE, "used as evidence")
    with pytest.raises(RetentionRefused, match="no such request"):
        kept.retention.confirm_lower(d, s, SUPERVISOR, 0)  # nothing asked: nothing to confirm
    request = kept.retention.request_lower(d, s, RECORDS, EVERYDAY, "case dropped, footage not needed")
    assert kept.of() == EVIDENCE  # a request alone changes nothing
    with pytest.raises(RetentionRefused, match="two people"):
        kept.retention.confirm_lower(d, s, RECORDS, request.seq)
    with pytest.raises(RetentionRefused, match="two people"):
        kept.retention.confirm_lower(d, s, Actor("另一档案员", "records"), request.seq)
    kept.retention.confirm_lower(d, s, LEGAL, request.seq)
    assert kept.of() == EVERYDAY
    audit = (kept.store.root / AUDIT_FILE).read_text()
    assert '"action":"lower_request"' in audit and '"lowered":true' in audit and '"requested_by":"档案员"' in audit


def test_a_legal_hold_stops_expiry_and_removal__RETENTION(kept: Kept) -> None:
    d, s = kept.device, kept.session
    kept.age(200)
    kept.retention.set_hold(d, s, LEGAL, True, "诉讼保全 litigation")
    now = dt.datetime.now(ZONE)
    with pytest.raises(RetentionRefused, match="legal hold"):
        kept.retention.remove(d, s, RECORDS, kept.kept_since(), now)
    with pytest.raises(RetentionRefused, match="legal hold"):
        kept.retention.request_lower(d, s, RECORDS, EVERYDAY, "hold blocks lowering too")
    assert all(p.exists() for p in (kept.store.session_dir(d, s) / layout.MEDIA).iterdir())
    kept.retention.set_hold(d, s, LEGAL, False, "litigation ended")
    kept.retention.remove(d, s, RECORDS, kept.kept_since(), now)
    assert not list((kept.store.session_dir(d, s) / layout.MEDIA).iterdir())


def test_nothing_is_removed_before_expiry_by_the_command__NO_EDIT(kept: Kept,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    d, s = kept.device, kept.session
    before = {p.name: p.read_bytes() for p in (kept.store.session_dir(d, s) / layout.MEDIA).iterdir()}
    kept.age(150)  # less than six months
    args = ["central", "remove", d, s, "--config", str(kept.config_file)]
    assert main([*args, "--confirm", f"{d}/{s}"]) == 2
    assert "kept until" in capsys.readouterr().err
    assert main([*args, "--confirm", "something else"]) == 2
    assert "repeat it exactly" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (kept.store.session_dir(d, s) / layout.MEDIA).iterdir()} == before
    kept.retention.raise_class(d, s, RECORDS, LONG_TERM, "assault on an officer", grounds="obstruction")
    kept.age(400)  # past six months, but long-term now
    assert main([*args, "--confirm", f"{d}/{s}"]) == 2
    assert {p.name: p.read_bytes() for p in (kept.store.session_dir(d, s) / layout.MEDIA).iterdir()} == before
    assert main(["central", "retention", "--config", str(kept.config_file)]) == 0
    assert "长期 long-term" in capsys.readouterr().out


def test_removal_after_expiry_keeps_the_ledger_and_a_signed_tombstone__RETENTION(
        kept: Kept, capsys: pytest.CaptureFixture[str]) -> None:
    d, s = kept.device, kept.session
    folder = kept.store.session_dir(d, s)
    entries_before = {p.name: p.read_bytes() for p in (folder / layout.ENTRIES).iterdir()}
    segments = {p.name for p in (folder / layout.MEDIA).iterdir()}
    kept.age(200)
    assert main(["central", "retention", "--expired", "--csv", "--config", str(kept.config_file)]) == 0
    assert f"{d},{s}," in capsys.readouterr().out
    assert main(["central", "remove", d, s, "--confirm", f"{d}/{s}", "--config", str(kept.config_file)]) == 0
    assert f"removed {len(segments)} segment files" in capsys.readouterr().out
    assert not list((folder / layout.MEDIA).iterdir()) and not list((folder / "plain").glob("*"))
    assert {p.name: p.read_bytes() for p in (folder / layout.ENTRIES).iterdir()} == entries_before
    removal = kept.retention.of(d, s).removal
    assert removal is not None and {f["file"] for f in removal.detail["files"]} == segments
    closing = parse_entry(entries_before[max(entries_before)])
    assert removal.detail["close_hash"] == closing.hash
    # The chain still proves what existed: every entry checks, each removed file is named by the tombstone.
    removed = {f["file"]: (f["sha256"], f["bytes"]) for f in removal.detail["files"]}
    report = verify_session(folder, kept.store.device_key(d), removed=removed)
    assert report.ok and report.removed == len(segments) and report.entries == len(entries_before)
    assert not verify_session(folder, kept.store.device_key(d)).ok  # without the tombstone, files are missing
    assert sweep(kept.store, registers=kept.retention.registers).broken == []
    with pytest.raises(RetentionRefused, match="removed"):
        kept.retention.set_hold(d, s, LEGAL, True, "too late")


def test_a_forged_tombstone_does_not_hide_a_removal__NO_EDIT(kept: Kept) -> None:
    d, s = kept.device, kept.session
    kept.retention.raise_class(d, s, RECORDS, EVIDENCE, "used as evidence")
    media = sorted((kept.store.session_dir(d, s) / layout.MEDIA).iterdir())
    media[0].unlink()
    register = kept.store.register_file(d, s)
    text = register.read_text()
    # Someone with the disk but not central's key writes a removal into the register: its signature fails.
    forged = text.replace('"action":"retention"', '"action":"removal"')
    register.write_text(forged)
    [(_, _, problem)] = sweep(kept.store, registers=kept.retention.registers).broken
    assert "register does not hold" in problem


def test_a_device_mark_naming_a_class_raises_it_once__RETENTION(kept: Kept, recorded: RecordedSession) -> None:
    assert mark_class("长期保存 long-term") == LONG_TERM and mark_class("出示执法证件 certificate shown") is None
    assert mark_class("无证据") is None and mark_class("证据") == EVIDENCE  # a word, not a part of one
    files = recorded.rig.store.session_files(recorded.rig.config.device.id, recorded.session)
    entries = [parse_entry(files.read_entry(seq)) for seq in files.entry_seqs()]
    [mark] = [e for e in entries if e.body.get("name") == "mark"]
    assert kept.retention.record_device_classes(kept.device, kept.session, entries) == []  # it names no class
    relabelled = dataclasses.replace(mark, body={**mark.body, "label": "长期 long-term"})
    [written] = kept.retention.record_device_classes(kept.device, kept.session, [relabelled])
    assert written.actor == "device" and written.detail["mark_seq"] == mark.seq and kept.of() == LONG_TERM
    assert kept.retention.record_device_classes(kept.device, kept.session, [relabelled]) == []
    # Lowered by two people afterwards, the same MARK read again (the sweep) does not raise it back.
    request = kept.retention.request_lower(kept.device, kept.session, RECORDS, EVERYDAY, "marked by mistake")
    kept.retention.confirm_lower(kept.device, kept.session, LEGAL, request.seq)
    assert kept.retention.record_device_classes(kept.device, kept.session, [relabelled]) == []
    assert kept.of() == EVERYDAY


def test_periods_never_below_the_law__RETENTION() -> None:
    for bad in ({"everyday_months": 5}, {"everyday_months": float("nan")}, {"long_term_years": 9},
                {"everyday_months": 240, "long_term_years": 10}):
        with pytest.raises(ConfigError, match=r"everyday_months|long_term_years"):
            config_mod.from_dict({"retention": bad})
    cfg = config_mod.from_dict({}).retention
    since = dt.datetime(2026, 8, 31, 12, tzinfo=ZONE)
    assert expires(Disposition(), since, cfg) == dt.datetime(2027, 2, 28, 12, tzinfo=ZONE)
    assert expires(Disposition(cls=LONG_TERM), since, cfg) == _add_months(since, 360)
    assert expires(Disposition(cls=EVIDENCE), since, cfg) is None
    # An evidence session whose case file ends early is still kept at least as long as an everyday one.
    assert expires(Disposition(cls=EVIDENCE, case_file_until=dt.date(2026, 9, 1)), since, cfg) == \
        expires(Disposition(), since, cfg)


def test_a_removal_stopped_part_way_is_finished_without_a_second_tombstone__RETENTION(kept: Kept) -> None:
    d, s = kept.device, kept.session
    media = kept.store.session_dir(d, s) / layout.MEDIA
    left = {p.name: p.read_bytes() for p in sorted(media.iterdir())[:2]}
    kept.age(200)
    first = kept.retention.remove(d, s, RECORDS, kept.kept_since(), dt.datetime.now(ZONE))
    for name, data in left.items():  # as if central stopped after the tombstone, before these went
        (media / name).write_bytes(data)
    again = kept.retention.remove(d, s, RECORDS, kept.kept_since(), dt.datetime.now(ZONE))
    assert again.seq == first.seq and not list(media.iterdir())
    assert [r.action for r in kept.retention.registers.records(d, s)].count("removal") == 1


def test_a_request_to_lower_is_void_once_anything_is_decided_after_it__RETENTION(kept: Kept) -> None:
    d, s = kept.device, kept.session
    kept.retention.raise_class(d, s, RECORDS, EVIDENCE, "used as evidence")
    request = kept.retention.request_lower(d, s, RECORDS, EVERYDAY, "not needed")
    kept.retention.raise_class(d, s, SUPERVISOR, LONG_TERM, "complaint received", grounds="dispute")
    with pytest.raises(RetentionRefused, match="voided"):
        kept.retention.confirm_lower(d, s, LEGAL, request.seq)
    assert kept.of() == LONG_TERM


def test_a_case_file_date_moves_earlier_only_with_two_people__RETENTION(kept: Kept) -> None:
    d, s = kept.device, kept.session
    later, earlier = dt.date.today() + dt.timedelta(days=3650), dt.date.today() + dt.timedelta(days=30)
    kept.retention.link_case(d, s, RECORDS, "案件一", later, "filed")
    with pytest.raises(RetentionRefused, match="shortens retention"):
        kept.retention.link_case(d, s, SUPERVISOR, "案件一", earlier, "a mistake, or not")
    for bad in (dt.date(1, 1, 1), dt.date(9999, 12, 31), dt.date.today() - dt.timedelta(days=1)):
        with pytest.raises(RetentionRefused, match="between today and"):
            kept.retention.link_case(d, s, RECORDS, "案件一", bad, "out of range")
    request = kept.retention.request_lower(d, s, SUPERVISOR, EVIDENCE, "case file closes sooner", earlier)
    kept.retention.confirm_lower(d, s, RECORDS, request.seq)
    assert kept.retention.of(d, s).case_file_until == earlier and kept.of() == EVIDENCE


def test_a_hold_is_lifted_by_the_role_that_placed_it_or_the_legal_office__RETENTION(kept: Kept) -> None:
    d, s = kept.device, kept.session
    kept.retention.set_hold(d, s, LEGAL, True, "诉讼保全")
    with pytest.raises(RetentionRefused, match="placed by the legal role"):
        kept.retention.set_hold(d, s, RECORDS, False, "I would rather remove it")
    kept.retention.set_hold(d, s, LEGAL, False, "litigation over")
    kept.retention.set_hold(d, s, RECORDS, True, "archive audit")
    kept.retention.set_hold(d, s, LEGAL, False, "the legal office lifts any hold")


def test_a_forged_register_record_decides_nothing__NO_EDIT(kept: Kept) -> None:
    d, s = kept.device, kept.session
    kept.retention.set_hold(d, s, LEGAL, True, "诉讼保全")
    register = kept.store.register_file(d, s)
    lines = register.read_bytes().splitlines(keepends=True)
    # Someone with the disk appends an unsigned "hold lifted", then a removal naming an entry file.
    forged = lines[-1].replace(b'"on":true', b'"on":false').replace(b'"seq":0', b'"seq":1')
    register.write_bytes(b"".join(lines) + forged)
    kept.age(400)
    with pytest.raises(CentralError, match="does not hold"):
        kept.retention.of(d, s)
    with pytest.raises(CentralError, match="does not hold"):
        kept.retention.remove(d, s, RECORDS, kept.kept_since(), dt.datetime.now(ZONE))
    assert list((kept.store.session_dir(d, s) / layout.MEDIA).iterdir())
    with pytest.raises(CentralError, match="not a segment file"):
        kept.store.remove_originals(d, s, ["../entries/00000001.json"])


def test_a_register_cut_short_or_gone_is_found_by_the_sweep__NO_EDIT(kept: Kept) -> None:
    d, s = kept.device, kept.session
    kept.retention.raise_class(d, s, RECORDS, EVIDENCE, "used as evidence")
    kept.retention.set_hold(d, s, LEGAL, True, "诉讼保全")
    register = kept.store.register_file(d, s)
    whole = register.read_bytes()
    assert sweep(kept.store, registers=kept.retention.registers).broken == []
    # Dropping the hold from the end leaves a chain that holds: only the audit's copies show it.
    register.write_bytes(whole.splitlines(keepends=True)[0])
    [(_, _, problem)] = sweep(kept.store, registers=kept.retention.registers).broken
    assert "cut from its end" in problem
    register.unlink()
    [(_, _, problem)] = sweep(kept.store, registers=kept.retention.registers).broken
    assert "register is gone" in problem
    register.write_bytes(whole)
    assert sweep(kept.store, registers=kept.retention.registers).broken == []
