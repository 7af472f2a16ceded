"""Anyone with Python verifies offline (FORMAT §7.5): the files `verifier_sources()` names, copied out of the
project into a CPython with nothing installed (a venv without pip, so without `cryptography`), verify a
recorded session and the access audit there, and print what `recorder verify` prints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.audit import AuditLog
from evidence import layout
from evidence.audit import check_audit
from evidence.standalone import PACKAGE, verifier_sources
from firmware_py.cli import main
from provisioning.identity import DeviceIdentity
from tests.conftest import RecordedSession
from tests.media import entries

ROOT = Path(__file__).resolve().parents[2]
CHECK_AUDIT = """
import sys
from evidence.audit import check_audit
from evidence.keys import BACKEND, load_public_key_b64
with open(sys.argv[1], "rb") as lines:
    check = check_audit(lines, load_public_key_b64(sys.argv[2]))
print(BACKEND)
print(check.records, check.ok, check.head)
for problem in check.problems:
    print(problem)
"""
DECRYPT = """
import sys
from pathlib import Path
from evidence.errors import EvidenceError
from evidence.verify import verify_session
try:
    verify_session(Path(sys.argv[1]), sys.argv[2], central_key=object())
except EvidenceError as err:
    print(type(err).__name__, err)
"""


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CPython with nothing installed: a venv without pip (it does not see the project's packages)."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    assert run(python, venv, "-c", "import cryptography").returncode != 0, "cryptography is installed there"
    return python


def run(python: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # -E -s: neither PYTHONPATH nor the user's site-packages may bring the project or cryptography in.
    return subprocess.run([str(python), "-E", "-s", *args], cwd=cwd, capture_output=True, text=True,
                          encoding="utf-8", env={"PATH": os.environ["PATH"], "LC_ALL": "C.UTF-8"}, timeout=300)


def ship(folder: Path, sources: list[Path]) -> Path:
    """`sources` copied into `folder`/verifier/evidence/, as an export carries them: the folder to run from."""
    package = folder / "verifier" / PACKAGE
    package.mkdir(parents=True)
    for source in sources:
        shutil.copy2(source, package / source.name)
    return package.parent


def cli_output(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["verify", *args])
    return code, capsys.readouterr().out


@pytest.fixture
def session(recorded: RecordedSession, tmp_path: Path) -> Path:
    target = tmp_path / recorded.session
    shutil.copytree(recorded.central_dir, target)
    return target


def test_verifier_sources_are_the_modules_verification_imports__TAMPER_PROOF_IT() -> None:
    named = sorted(PACKAGE if p.name == "__init__.py" else f"{PACKAGE}.{p.stem}" for p in verifier_sources())
    # Importing every named module imports no module of the package that is not named: none is left behind.
    probe = (f"import importlib, json, sys; [importlib.import_module(m) for m in {named!r}]; "
             "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'evidence')))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    assert json.loads(done.stdout) == named
    assert {"evidence.ed25519", "evidence.keys", "evidence.standalone"} <= set(named)
    assert not {"evidence.encryption", "evidence.durable", "evidence.settings"} & set(named)


def test_a_bare_python_verifies_a_recorded_session_and_names_a_flipped_byte__NO_EDIT(
        recorded: RecordedSession, session: Path, bare_python: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    key = recorded.rig.service.identity.public_key_b64
    verifier = ship(tmp_path, verifier_sources())
    for form in ([], ["--json"]):
        done = run(bare_python, verifier, "-m", "evidence.standalone", str(session), "--key", key, *form)
        assert (done.returncode, done.stdout) == cli_output(capsys, str(session), "--key", key, *form), done.stderr
        assert done.returncode == 0
    assert done.stdout.count('"ok": true') == 1 and '"key_anchored": true' in done.stdout
    second = [e for e in entries(session) if e["kind"] == "segment"][1]
    target = layout.media_path(session, second["body"]["file"])
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    done = run(bare_python, verifier, "-m", "evidence.standalone", str(session), "--key", key)
    assert (done.returncode, done.stdout) == cli_output(capsys, str(session), "--key", key)
    assert done.returncode == 1
    assert done.stdout.startswith(f"FAILED  {session}: segment 2 (entry {second['seq']}): changed bytes: "
                                  f"{second['body']['file']}: SHA-256 or size differs from the sealed record")
    done = run(bare_python, verifier, "-m", "evidence.standalone", str(session), "--key", "AAAA")
    assert done.returncode == 2 and "not a base64 Ed25519 public key" in done.stderr


def test_a_bare_python_checks_the_access_audit__TAMPER_PROOF_IT(bare_python: Path, tmp_path: Path) -> None:
    central = DeviceIdentity(Ed25519PrivateKey.generate())
    path = tmp_path / "audit.log"
    log = AuditLog(path, central.sign, central.public_key_b64)
    for i in range(6):
        log.append(f"警官{i}", "viewer", "view", f"SIM-0001/s{i}", {"content": i % 2 == 0}, "127.0.0.1")
    verifier = ship(tmp_path, verifier_sources())
    with path.open("rb") as lines:
        head = check_audit(lines, central.public_key).head
    done = run(bare_python, verifier, "-c", CHECK_AUDIT, str(path), central.public_key_b64)
    assert done.stdout.splitlines() == ["pure Python (evidence/ed25519.py)", f"6 True {head}"], done.stderr
    kept = path.read_bytes().splitlines(keepends=True)
    kept[2] = kept[2].replace("警官2".encode(), "警官9".encode())
    path.write_bytes(b"".join(kept))
    with path.open("rb") as lines:
        expected = check_audit(lines, central.public_key)
    assert expected.problems
    done = run(bare_python, verifier, "-c", CHECK_AUDIT, str(path), central.public_key_b64)
    assert done.stdout.splitlines()[1:] == [f"6 False {expected.head}", *expected.problems], done.stderr
    assert "line 3: the signature is not central's" in done.stdout


def test_decrypting_in_a_bare_python_says_it_needs_cryptography__TAMPER_PROOF_IT(
        recorded: RecordedSession, bare_python: Path, tmp_path: Path) -> None:
    verifier = ship(tmp_path, sorted((ROOT / PACKAGE).glob("*.py")))
    done = run(bare_python, verifier, "-c", DECRYPT, str(recorded.central_dir),
               recorded.rig.service.identity.public_key_b64)
    assert done.stdout.startswith("EvidenceError decrypting needs the Python package cryptography"), done.stderr
