"""The evidence export package (ARCHIVE): built from the stored session as an ISO 9660 image, listed and
extracted with xorriso, its written note read back with pdftotext, and verified offline by the verifier it
carries, in a fresh virtual environment with nothing installed; a range export's inclusion proofs checked;
every tampering found; an original changed in the store stops the export."""

from __future__ import annotations

import py_compile
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from central.errors import CentralError
from central.export.package import Exported, TimeRange, export_session
from central.register import Actor
from evidence import layout
from tests.central.conftest import ZONE, Kept

LEGAL = Actor("法制员", "legal")
APPROVAL = {"request": 7, "reason": "移送法院", "approved_by": "王科长", "approved_at": "2026-11-29T10:00:00+08:00"}


def exported(kept: Kept, part: TimeRange | None = None) -> Exported:
    return export_session(kept.store, kept.retention.registers, kept.central_key(), kept.device, kept.session, LEGAL,
                          "法制部门 legal office", APPROVAL, ZONE, part)


def extract(image: Path, to: Path) -> Path:
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(image), "-extract", "/", str(to)], check=True,
                   capture_output=True, timeout=120)
    subprocess.run(["chmod", "-R", "u+w", str(to)], check=True)
    return to


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with nothing installed: what a court's expert has."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    found = subprocess.run([str(python), "-c", "import cryptography"], capture_output=True)
    assert found.returncode != 0, "the fresh environment must not have cryptography"
    return python


def run_verifier(python: Path, package: Path, key: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), "verifier/verify_export.py", ".", "--central-key", key], cwd=package,
                          capture_output=True, text=True, timeout=300)


def test_an_export_verifies_offline_in_a_bare_python__ARCHIVE(kept: Kept, tmp_path: Path, bare_python: Path) -> None:
    done = exported(kept)
    listing = subprocess.run(["xorriso", "-indev", str(done.image), "-find", "/", "-type", "f"], check=True,
                             capture_output=True, text=True, timeout=60).stdout
    for name in ("NOTE.pdf", "MANIFEST.json", "MANIFEST.sig", "enrollment.json", "README.txt",
                 "verifier/verify_export.py", "verifier/evidence/package.py", "playable/session.m3u8",
                 f"session/{kept.session}/entries/00000000.json", f"session/{kept.session}/media/000001.ts",
                 "playable/000001.ts"):
        assert f"'/{name}'" in listing, name
    package = extract(done.image, tmp_path / "disc")
    result = run_verifier(bare_python, package, kept.retention.registers.audit.public_key_b64)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the whole session verifies" in result.stdout and "playable copies are the recording" in result.stdout
    assert result.stdout.rstrip().endswith("RESULT    OK: the package is as central signed it and its recording "
                                           "as the device sealed it")
    # The export is on record, in the session's register and in the audit.
    [record] = [r for r in kept.retention.registers.records(kept.device, kept.session) if r.action == "export"]
    assert record.detail["manifest_sha256"] == done.manifest_sha256 and record.actor == LEGAL.name


def test_the_written_note_is_in_chinese_and_names_what_the_rules_ask__ARCHIVE(kept: Kept, tmp_path: Path) -> None:
    package = extract(exported(kept).image, tmp_path / "disc")
    text = subprocess.run(["pdftotext", "-layout", str(package / "NOTE.pdf"), "-"], check=True, capture_output=True,
                          text=True, timeout=60).stdout
    opening = kept.opening()
    assert opening.room and opening.unit and opening.officers
    facts = (opening.matter, opening.case, opening.room, opening.unit, opening.location, kept.device, "法制员",
             "执法音视频记录文字说明", *(o.name for o in opening.officers), *(o.certificate for o in opening.officers),
             *opening.parties)
    for fact in filter(None, facts):
        assert fact.replace(" ", "") in text.replace(" ", ""), fact


@pytest.mark.parametrize("tamper", ["media", "entry", "manifest", "playable", "added", "pycache"])
def test_any_change_to_a_package_is_found__ARCHIVE(kept: Kept, tmp_path: Path, bare_python: Path,
                                                   tamper: str) -> None:
    package = extract(exported(kept).image, tmp_path / "disc")
    base = package / "session" / kept.session
    if tamper == "media":
        _flip(base / layout.MEDIA / "000002.ts")
    elif tamper == "entry":
        _flip(base / layout.ENTRIES / "00000002.json")
    elif tamper == "manifest":
        manifest = package / "MANIFEST.json"
        manifest.write_bytes(manifest.read_bytes().replace(b'"bytes":', b'"bytes": ', 1))
    elif tamper == "playable":
        _flip(package / "playable" / "000002.ts")
    elif tamper == "added":
        (package / "session" / kept.session / layout.MEDIA / "999999.ts").write_bytes(b"inserted")
    else:
        # A compiled verifier that says OK to anything, slipped in beside the checked sources, with a changed
        # segment: Python would run it instead of package.py if the launcher read compiled files.
        _flip(base / layout.MEDIA / "000002.ts")
        source = package / "verifier" / "evidence" / "package.py"
        liar = tmp_path / "package.py"
        liar.write_text(source.read_text().replace("return 0 if report.ok else 1", "return 0"))
        cache = source.parent / "__pycache__" / f"package.{sys.implementation.cache_tag}.pyc"
        py_compile.compile(str(liar), cfile=str(cache), dfile=str(source),
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    result = run_verifier(bare_python, package, kept.retention.registers.audit.public_key_b64)
    assert result.returncode == 1 and "RESULT    FAILED" in result.stdout, result.stdout


def test_a_range_export_proves_its_segments_belong_to_the_session__ARCHIVE(kept: Kept, tmp_path: Path,
                                                                           bare_python: Path) -> None:
    done = exported(kept, TimeRange(0.5, 1.5))
    package = extract(done.image, tmp_path / "disc")
    entries = sorted((package / "session" / kept.session / layout.ENTRIES).iterdir())
    total = len(list((kept.store.session_dir(kept.device, kept.session) / layout.ENTRIES).iterdir()))
    assert 3 <= len(entries) < total and done.segments >= 1
    key = kept.retention.registers.audit.public_key_b64
    result = run_verifier(bare_python, package, key)
    assert result.returncode == 0, result.stdout
    assert "inclusion proofs" in result.stdout
    proofs = package / "proofs.json"
    proofs.write_text(proofs.read_text().replace("a", "b", 1))
    broken = run_verifier(bare_python, package, key)
    assert broken.returncode == 1 and "inclusion proof does not lead to the root" in broken.stdout


def test_an_original_changed_in_the_store_stops_the_export__NO_EDIT(kept: Kept) -> None:
    _flip(kept.store.session_dir(kept.device, kept.session) / layout.MEDIA / "000001.ts")
    with pytest.raises(CentralError, match="SHA-256 differs"):
        exported(kept)
    assert kept.store.kept_exports(kept.device, kept.session) == []
    assert not list((kept.store.root / "exports" / kept.device / kept.session).iterdir())  # no temporary left
    assert not [r for r in kept.retention.registers.records(kept.device, kept.session) if r.action == "export"]


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_two_exports_at_once_each_keep_their_own_image__ARCHIVE(kept: Kept) -> None:
    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda _: exported(kept), range(2)))
    assert done[0].image != done[1].image and all(d.image.is_file() for d in done)
    assert sorted(kept.store.kept_exports(kept.device, kept.session)) == sorted(d.image.name for d in done)
