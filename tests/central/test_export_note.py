"""The written note of an evidence export (ARCHIVE: "a written note of the matter, time, place, method and
officers"): a Chinese A4 PDF whose text a standard reader (poppler's pdftotext, scripts/setup.sh) gets back,
with its font embedded, flowing onto more pages when there is more to say."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from central.errors import CentralError
from central.export.note_pdf import WrittenNote, write_note_pdf

OFFICERS = (("张三", "31010012345"), ("李四 Li Si", "31010067890"), ("Wang Wu 王五", "31010054321"))
INTERRUPTIONS = tuple(f"14:{i:02d}:00 断电重启 power_loss，已口头说明 ({i:02d})" for i in range(45))
METHOD = ("使用固定安装于询问室的执法记录设备连续录音录像，画面叠加时间、地点、设备编号及执法人员信息；开始录制时"
          "向室内播放录音录像告知。Recorded continuously by the room's fixed recorder, every two-second segment "
          "hashed, signed, encrypted and sent to central storage.")


def a_note(**changes: object) -> WrittenNote:
    fields: dict[str, object] = dict(
        matter="询问违法嫌疑人 Questioning of a suspect",
        case="浦公行〔2026〕01234号 盗窃案",
        unit="浦东分局陆家嘴派出所 Lujiazui Station",
        room="询问室一 Interview room 1",
        location="上海市浦东新区陆家嘴环路1000号三楼",
        started="2026-11-29 14:03:05 +08:00",
        ended="2026-11-29 15:10:45 +08:00",
        duration="1 小时 7 分 40 秒",
        method=METHOD,
        device="SIM-0001",
        officers=OFFICERS,
        parties=("赵六（违法嫌疑人）", "Qian Qi (interpreter)"),
        taken_by="孙八（档案管理员）",
        taken_at="2026-12-01 09:30:00 +08:00",
        contents=(("片段 Segments", "2031"), ("字节 Bytes", "512,345,678"), ("台账条目 Entries", "4087")),
        interruptions=INTERRUPTIONS,
        verification="中心已按与 recorder verify 相同的规则核验本会话：OK。",
        manifest_sha256="0123456789abcdef" * 4,
        range_text="2026-11-29 14:10:00 +08:00 至 14:40:00 +08:00",
    )
    fields.update(changes)
    return WrittenNote(**fields)  # type: ignore[arg-type]


def pdftotext(pdf: Path) -> str:
    return subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True,
                          check=True).stdout


def squeezed(text: str) -> str:
    """The text without white space: pdftotext lays a wrapped line or a spaced footer out as it likes."""
    return re.sub(r"\s+", "", text)


def test_export_note_pdf_text_reads_back__ARCHIVE(tmp_path: Path) -> None:
    note = a_note()
    out = tmp_path / "说明.pdf"
    write_note_pdf(note, out)

    assert out.read_bytes().startswith(b"%PDF-")
    assert out.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["说明.pdf"], "no temporary file is left"
    text = pdftotext(out)
    pages = text.count("\f")
    assert pages >= 2, "45 interruptions flow onto a second page"
    flat = squeezed(text)
    for page in range(1, pages + 1):
        assert f"第{page}页共{pages}页" in flat
    assert "执法音视频记录文字说明" in text
    for value in (note.matter, note.case, note.unit, note.room, note.location, note.started, note.ended,
                  note.duration, note.device, note.taken_by, note.taken_at, note.range_text, note.manifest_sha256):
        assert squeezed(value) in flat, value
    for label in ("事由", "地点", "开始时间", "录制方式", "执法人员", "提取人（签名）", "见证人（签名）"):
        assert label in text, label
    for name, certificate in OFFICERS:
        assert re.search(rf"{re.escape(name)}\s+{certificate}", text), name
    for party in note.parties:
        assert party in text
    for line in INTERRUPTIONS:
        assert line in text, line
    assert squeezed(METHOD) in flat, "the method paragraph wraps without losing a character"

    fonts = subprocess.run(["pdffonts", str(out)], capture_output=True, text=True, check=True).stdout
    embedded = [line.split() for line in fonts.splitlines() if "WenQuanYiMicroHei" in line]
    assert embedded and all(row[-5:-2] == ["yes", "yes", "yes"] for row in embedded), fonts  # emb sub uni


def test_export_note_pdf_says_none_and_whole_session__ARCHIVE(tmp_path: Path) -> None:
    out = tmp_path / "note.pdf"
    write_note_pdf(a_note(parties=(), interruptions=(), range_text=""), out)
    text = pdftotext(out)
    assert "整个会话 Whole session" in text and "无中断 No interruption" in text and "无 None" in text


def test_export_note_pdf_missing_font_names_the_package__ARCHIVE(tmp_path: Path) -> None:
    out = tmp_path / "note.pdf"
    missing = tmp_path / "fonts" / "wqy-microhei.ttc"
    with pytest.raises(CentralError, match=rf"{re.escape(str(missing))} is missing: .*fonts-wqy-microhei"):
        write_note_pdf(a_note(), out, font=missing)
    not_a_font = tmp_path / "broken.ttc"
    not_a_font.write_bytes(b"not a font")
    with pytest.raises(CentralError, match=r"broken\.ttc cannot be read .*fonts-wqy-microhei"):
        write_note_pdf(a_note(), out, font=not_a_font)
    assert not out.exists()


def test_export_note_pdf_refuses_a_character_the_font_lacks__ARCHIVE(tmp_path: Path) -> None:
    out = tmp_path / "note.pdf"
    # 䶮 (CJK Extension A) is in personal names; WenQuanYi Micro Hei has no glyph for it.
    with pytest.raises(CentralError, match=r"no glyph for 䶮 \(U\+4DAE\)"):
        write_note_pdf(a_note(officers=(("刘䶮", "31010099999"),)), out)
    assert not out.exists()
