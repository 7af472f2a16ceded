"""The evidence package's disc image (ARCHIVE): an ISO 9660 image whose long names show through Rock Ridge
and Joliet, whose level 1 names are valid and derived deterministically, and which holds exactly the bytes
of its sources, read by a standard tool (xorriso, scripts/setup.sh)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from central.errors import CentralError
from central.export.iso import IsoFile, volume_label, write_iso

LONG_NAMES = {
    "README.txt": b"Read me first.\n",
    "session/entries/000000.json": b'{"kind":"open"}',
    "session/entries/000001.json": b"",
    "session/media/segment_000000_of_the_interview.ts.enc": os.urandom(3 * 1024 * 1024 + 5),
    "session/media/segment_000001_of_the_interview.ts.enc": os.urandom(4097),
    "verifier/evidence/verify.py": b"print('verify')\n",
    "verifier/evidence/Rules_Of_The_Verifier.md": b"# Rules\n",
}


def sources(root: Path, contents: dict[str, bytes]) -> list[IsoFile]:
    files = []
    for i, (name, data) in enumerate(contents.items()):
        source = root / f"source-{i}"
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_bytes(data)
        files.append(IsoFile(name, source, len(data)))
    return files


def xorriso(*args: str) -> list[str]:
    done = subprocess.run(["xorriso", *args], capture_output=True, text=True, check=True)
    return done.stdout.splitlines()


def listed(image: Path, read_fs: str = "any") -> set[str]:
    """The files of the image as a reader sees them through one name tree: Rock Ridge ("any" prefers it),
    Joliet ("norock") or plain ISO 9660 ("ecma119")."""
    lines = xorriso("-read_fs", read_fs, "-indev", str(image), "-find", "/", "-type", "f")
    return {line.strip("'").lstrip("/") for line in lines if line.startswith("'/")}


def test_export_iso_shows_long_names_and_holds_the_exact_bytes__ARCHIVE(tmp_path: Path) -> None:
    files = sources(tmp_path / "src", LONG_NAMES)
    image = tmp_path / "out" / "evidence.iso"
    image.parent.mkdir()
    write_iso(image, files, "evidence sim-0001 20261122")

    assert listed(image) == set(LONG_NAMES), "Rock Ridge (Linux, macOS)"
    assert listed(image, "norock") == set(LONG_NAMES), "Joliet (Windows)"
    short = listed(image, "ecma119")
    assert len(short) == len(LONG_NAMES)
    assert all(re.fullmatch(r"([A-Z0-9_]{1,8}/)*[A-Z0-9_]{1,8}(\.[A-Z0-9_]{0,3})?", name) for name in short), short
    assert "SESSION/ENTRIES/000000.JSO" in short and "VERIFIER/EVIDENCE/VERIFY.PY" in short
    assert [line for line in xorriso("-indev", str(image), "-pvd_info") if line.startswith("Volume Id")] == [
        "Volume Id    : EVIDENCE_SIM_000"]
    assert sorted(p.name for p in image.parent.iterdir()) == ["evidence.iso"], "no temporary file is left"
    assert image.stat().st_mode & 0o777 == 0o640

    extracted = tmp_path / "extracted"
    xorriso("-osirrox", "on", "-indev", str(image), "-extract", "/", str(extracted))
    for name, data in LONG_NAMES.items():
        assert (extracted / name).read_bytes() == data, name


def test_export_iso_level1_names_are_deterministic_and_distinct__ARCHIVE(tmp_path: Path) -> None:
    clashing = {f"session/media/segment_{i:06d}_long_name.ts.enc": bytes([i]) for i in range(12)}
    clashing["session/media/segment_x.TS.ENC.bak"] = b"x"
    files = sources(tmp_path / "src", clashing)
    write_iso(tmp_path / "a.iso", files, "a")
    write_iso(tmp_path / "b.iso", list(reversed(files)), "b")

    short = listed(tmp_path / "a.iso", "ecma119")
    assert len(short) == len(clashing)
    assert short == listed(tmp_path / "b.iso", "ecma119")
    assert "SESSION/MEDIA/SEGMENT_.ENC" in short and "SESSION/MEDIA/SEGMEN_1.ENC" in short
    assert "SESSION/MEDIA/SEGMEN_9.ENC" in short and "SESSION/MEDIA/SEGME_11.ENC" in short
    assert "SESSION/MEDIA/SEGMENT_.BAK" in short
    assert listed(tmp_path / "a.iso") == set(clashing)


@pytest.mark.parametrize(("names", "complaint"), [
    (["../outside.txt"], "'.' or '..'"),
    (["session/../../etc/passwd"], "'.' or '..'"),
    (["/etc/passwd"], "relative path"),
    (["session//entries.json"], "empty"),
    (["README.txt", "README.txt"], "appears twice"),
    (["README.txt", "readme.TXT"], "appears twice"),
    (["session", "session/entries.json"], "both a file and a folder"),
    (["Session/a.json", "session/b.json"], "differ only in letter case"),
    (["what?.txt"], "characters a disc cannot carry"),
    (["说明.pdf"], "characters a disc cannot carry"),
    (["x" * 65], "longer than 64"),
])
def test_export_iso_refuses_bad_names__ARCHIVE(tmp_path: Path, names: list[str], complaint: str) -> None:
    source = tmp_path / "source"
    source.write_bytes(b"data")
    image = tmp_path / "out.iso"
    with pytest.raises(CentralError, match=re.escape(complaint)):
        write_iso(image, [IsoFile(name, source, 4) for name in names], "vol")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source"]


def test_export_iso_refuses_a_source_that_changed__ARCHIVE(tmp_path: Path) -> None:
    files = sources(tmp_path / "src", {"a/first.bin": b"1" * 5000, "a/second.bin": b"2" * 5000})
    files[1].source.write_bytes(b"2" * 4999)
    image = tmp_path / "out" / "evidence.iso"
    image.parent.mkdir()
    with pytest.raises(CentralError, match="holds 4999 bytes, not the 5000"):
        write_iso(image, files, "vol")
    files[1].source.unlink()
    with pytest.raises(CentralError, match=r"cannot read .*source-1"):
        write_iso(image, files, "vol")
    assert list(image.parent.iterdir()) == []


def test_export_iso_volume_label() -> None:
    assert volume_label("Evidence sim-0001 20261122T091848Z") == "EVIDENCE_SIM_000"
    assert volume_label("abc_09") == "ABC_09"
    with pytest.raises(CentralError, match="no letter or digit"):
        volume_label("-- --")
