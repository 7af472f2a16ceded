"""The ledger entry is read one way only: its bytes must be the canonical form of what they hold, and
hostile bytes are a malformed entry, never a crash (NO-EDIT, TAMPER-PROOF-IT)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from evidence import layout
from evidence.canonical import canonical
from evidence.entry import parse_entry, sign_entry, signed_message
from evidence.errors import MalformedEntry
from evidence.rules import Problem
from evidence.verify import verify_session
from firmware_py.cli import main
from tests.conftest import RecordedSession
from tests.media import entries


@pytest.fixture
def copy(recorded: RecordedSession, tmp_path: Path) -> Path:
    target = tmp_path / recorded.session
    shutil.copytree(recorded.central_dir, target)
    return target


def test_a_second_body_key_is_refused_not_read_one_way__NO_EDIT(recorded: RecordedSession, copy: Path) -> None:
    # A viewer keeping the first "body" would show the fake officer; Python keeps the last and the signature
    # holds. The bytes are not canonical, so no reader reads them at all.
    path = layout.entry_path(copy, 0)
    raw = path.read_text(encoding="utf-8")
    genuine = json.loads(raw)["body"]
    fake = {**genuine, "officers": [{"name": "假警官", "certificate": "00000000000"}]}
    forged = raw.replace('{"body":', '{"body":' + json.dumps(fake, ensure_ascii=False, sort_keys=True,
                                                             separators=(",", ":")) + ',"body":', 1)
    path.write_text(forged, encoding="utf-8")
    with pytest.raises(MalformedEntry, match="appears twice"):
        parse_entry(path.read_bytes())
    report = verify_session(copy, recorded.rig.service.identity.public_key_b64)
    assert (report.findings[0].problem, report.findings[0].where) == (Problem.MALFORMED_ENTRY, "entry 0")


@pytest.mark.parametrize("change", [
    lambda raw: raw.replace(b'{"body":', b'{ "body":', 1),            # a space
    lambda raw: raw.replace(b'"v":1', b'"v":1.0', 1),                 # 1.0 for 1
    lambda raw: raw.replace("出".encode(), b"\\u51fa", 1),            # an escape for a printable character
    lambda raw: raw + b"\n",                                          # a trailing newline
])
def test_non_canonical_bytes_are_refused__NO_EDIT(recorded: RecordedSession, change: object) -> None:
    mark = next(e for e in entries(recorded.central_dir) if e["kind"] == "event" and e["body"]["name"] == "mark")
    raw = layout.entry_path(recorded.central_dir, mark["seq"]).read_bytes()  # its label is Chinese
    changed = change(raw)  # type: ignore[operator]
    assert changed != raw
    with pytest.raises(MalformedEntry):
        parse_entry(changed)


@pytest.mark.parametrize(("name", "payload"), [
    ("lone surrogate", b'{"v":1,"body":{"name":"\\ud800"}}'),
    ("20,000 nested arrays", b"[" * 20_000 + b"]" * 20_000),
    ("5,000-digit integer", b'{"seq":' + b"7" * 5000 + b"}"),
    ("NaN", b'{"mono_ns":NaN}'),
    ("integer beyond 64 bits", b'{"mono_ns":' + str(2**64).encode() + b"}"),
    ("not UTF-8", b'{"room":"\xb2\xe2"}'),
])
def test_hostile_entries_are_malformed_entries_not_tracebacks__TAMPER_PROOF_IT(
        copy: Path, capsys: pytest.CaptureFixture[str], name: str, payload: bytes) -> None:
    layout.entry_path(copy, 1).write_bytes(payload)
    assert main(["verify", str(copy), "--json"]) == 1
    [report] = json.loads(capsys.readouterr().out)
    assert report["problems"] == [{"kind": "malformed_entry", "where": "entry 1",
                                   "detail": report["problems"][0]["detail"]}], name


def test_mono_ns_beyond_2_53_is_kept_exactly__TAMPER_PROOF_IT(recorded: RecordedSession) -> None:
    # After about 104 days of uptime CLOCK_MONOTONIC in nanoseconds passes 2^53, where a double can no longer
    # hold every integer: the canonical bytes, and so the hash and signature, must keep the exact value.
    fields = json.loads(layout.entry_path(recorded.central_dir, 1).read_bytes())
    del fields["sig"]
    fields["mono_ns"] = 2**53 + 1
    entry = sign_entry(fields, recorded.rig.service.identity.sign)
    assert b'"mono_ns":9007199254740993,' in entry.raw
    assert parse_entry(entry.raw).mono_ns == 2**53 + 1
    assert entry.signed_message == signed_message(json.loads(entry.raw))
    as_double = {**fields, "mono_ns": float(2**53 + 1)}  # what a reader with only doubles would compute
    assert canonical(as_double) != canonical(fields)


def test_the_device_cannot_write_an_entry_the_format_refuses(recorded: RecordedSession) -> None:
    fields = json.loads(layout.entry_path(recorded.central_dir, 1).read_bytes())
    del fields["sig"]
    for bad in ({**fields, "body": {"name": "x", "seconds": float("nan")}}, {**fields, "seq": 10**12},
                {**fields, "kind": "open"}):
        with pytest.raises(MalformedEntry):
            sign_entry(bad, recorded.rig.service.identity.sign)
