"""The access audit (FORMAT §12): appended under a lock, chained and signed, and every way of breaking it is
found (ACCESS)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.audit import AuditLog
from central.errors import CentralError
from evidence.audit import AUDIT_CONTEXT, check_audit
from evidence.canonical import canonical
from firmware_py.cli import main
from provisioning.identity import DeviceIdentity

CENTRAL = DeviceIdentity(Ed25519PrivateKey.generate())


def make_log(path: Path, records: int = 5) -> AuditLog:
    log = AuditLog(path, CENTRAL.sign, CENTRAL.public_key_b64)
    for i in range(records):
        log.append(f"警官{i}", "viewer", "view", f"SIM-0001/s{i}", {"content": i % 2 == 0}, "127.0.0.1")
    return log


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_appends_from_many_threads_make_one_unbroken_chain__ACCESS(tmp_path: Path) -> None:
    log = make_log(tmp_path / "audit.log", 0)
    threads = [threading.Thread(target=make_log, args=(tmp_path / "audit.log", 20)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check = log.check()
    assert check.ok and check.records == 80 and not check.torn_tail
    assert [r.seq for r in log.records()] == list(range(80))


@pytest.mark.parametrize("damage", ["edit", "remove", "swap", "insert", "forge"])
def test_every_change_to_the_audit_is_found__ACCESS(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "audit.log"
    make_log(path)
    kept = lines(path)
    if damage == "edit":
        kept[2] = kept[2].replace(b"SIM-0001/s2", b"SIM-0001/s9")
    elif damage == "remove":
        del kept[2]
    elif damage == "swap":
        kept[1], kept[2] = kept[2], kept[1]
    elif damage == "insert":
        kept.insert(3, kept[3])
    else:
        # A record signed by another key, chained correctly: only the signature gives it away.
        other = DeviceIdentity(Ed25519PrivateKey.generate())
        value = json.loads(kept[4])
        value["actor"] = "nobody"
        unsigned = {k: v for k, v in value.items() if k != "sig"}
        value["sig"] = other.sign(AUDIT_CONTEXT + canonical(unsigned))
        kept[4] = canonical(value) + b"\n"
    check = check_audit(kept, CENTRAL.public_key)
    assert not check.ok, damage
    assert any(p.startswith("line ") for p in check.problems)


def test_a_torn_last_line_is_moved_aside_whole_and_the_chain_goes_on__ACCESS(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = make_log(path, 3)
    with path.open("ab") as f:
        f.write(b'{"action":"vie')  # central stopped mid-write
    assert log.check().torn_tail and log.check().ok
    log.append("admin", "admin", "login")
    aside = list(tmp_path.glob("audit.log.torn-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == b'{"action":"vie'
    check = log.check()
    assert check.ok and check.records == 4 and not check.torn_tail


def test_a_damaged_last_record_stops_appending_rather_than_fork_the_chain__ACCESS(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = make_log(path, 2)
    path.write_bytes(path.read_bytes()[:-10] + b"garbage}\n")
    with pytest.raises(CentralError, match="last record is damaged"):
        log.append("admin", "admin", "login")


def test_the_audit_command_checks_and_exports__ACCESS(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.log"
    make_log(path)
    assert main(["central", "audit", "--file", str(path), "--key", CENTRAL.public_key_b64]) == 0
    assert "audit holds: 5 records" in capsys.readouterr().out
    assert main(["central", "audit", "--file", str(path), "--key", CENTRAL.public_key_b64, "--csv"]) == 0
    csv_out = capsys.readouterr().out
    assert csv_out.count("\n") == 6 and "警官3" in csv_out
    data = path.read_bytes()
    path.write_bytes(data.replace(b"s3", b"s4", 1))
    assert main(["central", "audit", "--file", str(path), "--key", CENTRAL.public_key_b64]) == 1
    assert "AUDIT BROKEN" in capsys.readouterr().out
