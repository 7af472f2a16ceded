"""The written note (文字说明) of an evidence export, as an A4 PDF in Chinese (issue 11, ARCHIVE: recordings go
onto disc "with a written note of the matter, time, place, method and officers").

The text is set in WenQuanYi Micro Hei (Debian's fonts-wqy-microhei), embedded as a subset of the glyphs the
note uses, so the note reads the same on any machine and its text can be searched and copied. Labels are in
Chinese with the English after them; every table and paragraph wraps and flows onto further pages.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import astuple, dataclass
from pathlib import Path

# fontTools (fpdf2's font reader) ships no type information; its error is what a damaged font file raises.
from fontTools.ttLib import TTLibError  # type: ignore[import-untyped]
from fpdf import FPDF
from fpdf.enums import Align, TableBordersLayout, XPos, YPos
from fpdf.errors import FPDFException
from fpdf.fonts import FontFace, TTFFont

from central.errors import CentralError
from evidence.durable import atomic_write

DEFAULT_FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
FONT_PACKAGE = "fonts-wqy-microhei"
# The collection holds WenQuanYi Micro Hei (0) and its monospaced twin (1).
_FACE = 0
_FAMILY = "wqy"
_MARGIN = 20.0
_LINE = 6.0
_BODY_PT = 10.5
_LABEL_PT = 9.0
_GREY = (235, 235, 235)
# Labels and table headings: small, on grey. (The one face has no bold, which fpdf2's headings default to.)
_LABEL = FontFace(family=_FAMILY, size_pt=_LABEL_PT, fill_color=_GREY)
# The height of the signature block, which is kept whole on one page.
_SIGNATURE_HEIGHT = 48.0
_NONE = "无 None"
_EMPTY = "—"


@dataclass(frozen=True)
class WrittenNote:
    """What the note says. Times are strings already in the agency's zone ("2026-11-29 14:03:05 +08:00");
    `officers` are (name, certificate number); `contents` are (label, value) rows of what the package
    holds; `range_text` is "" when the package holds the whole session."""

    matter: str
    case: str
    unit: str
    room: str
    location: str
    started: str
    ended: str
    duration: str
    method: str
    device: str
    officers: tuple[tuple[str, str], ...]
    parties: tuple[str, ...]
    taken_by: str
    taken_at: str
    contents: tuple[tuple[str, str], ...]
    interruptions: tuple[str, ...]
    verification: str
    manifest_sha256: str
    range_text: str = ""
    title: str = "执法音视频记录文字说明"


class _NotePdf(FPDF):
    def footer(self) -> None:
        # fpdf2 puts the number of pages in place of {nb} once the document is complete.
        self.set_y(-_MARGIN + 5)
        self.set_font(_FAMILY, size=_LABEL_PT)
        self.cell(0, _LINE, f"第 {self.page_no()} 页 共 {{nb}} 页", align=Align.C)


def _document(font: Path) -> _NotePdf:
    if not font.is_file():
        raise CentralError(f"the written note's font {font} is missing: install the Debian package "
                           f"{FONT_PACKAGE} (apt-get install {FONT_PACKAGE})")
    pdf = _NotePdf(orientation="portrait", unit="mm", format="A4")
    try:
        pdf.add_font(_FAMILY, "", font, collection_font_number=_FACE)
    except (OSError, TTLibError, FPDFException, ValueError) as err:
        raise CentralError(f"the written note's font {font} cannot be read ({err}): reinstall the Debian "
                           f"package {FONT_PACKAGE}") from err
    pdf.set_margins(_MARGIN, _MARGIN, _MARGIN)
    pdf.set_auto_page_break(True, margin=_MARGIN)
    pdf.set_lang("zh-CN")
    pdf.set_creator("room-recorder")
    return pdf


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, tuple):
        for item in value:
            yield from _strings(item)


def _check_glyphs(pdf: FPDF, note: WrittenNote, font: Path) -> None:
    """CentralError naming every character of the note the font cannot draw: fpdf2 would leave a blank
    there, and a name in a legal record must not silently lose a character (WenQuanYi Micro Hei lacks,
    for one, 䶮 of CJK Extension A, which is found in personal names)."""
    face = pdf.fonts[_FAMILY]
    cmap = face.cmap if isinstance(face, TTFFont) else {}
    missing = sorted({c for text in _strings(astuple(note)) for c in text if not c.isspace() and ord(c) not in cmap})
    if missing:
        listed = ", ".join(f"{c} (U+{ord(c):04X})" for c in missing)
        raise CentralError(f"the written note's font {font} has no glyph for {listed}: write those characters "
                           "another way (in pinyin, say) or give a font that has them")


def _section(pdf: FPDF, title: str) -> None:
    # A heading left alone at the foot of a page belongs on the next one, with what it heads.
    if pdf.will_page_break(4 * _LINE):
        pdf.add_page()
    pdf.ln(_LINE / 2)
    pdf.set_font(_FAMILY, size=12)
    pdf.cell(0, _LINE + 2, title, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font(_FAMILY, size=_BODY_PT)


def _pairs(pdf: FPDF, rows: Sequence[tuple[str, str]], headings: tuple[str, str] | None = None) -> None:
    """A two-column table of labelled values: label on grey, value beside it."""
    with pdf.table(col_widths=(32, 68), first_row_as_headings=headings is not None, headings_style=_LABEL,
                   line_height=_LINE, text_align=Align.L, borders_layout=TableBordersLayout.ALL,
                   padding=(1, 2, 1, 2)) as table:
        if headings is not None:
            heading = table.row()
            for text in headings:
                heading.cell(text)
        for label, value in rows:
            row = table.row()
            row.cell(label, style=_LABEL)
            row.cell(value or _EMPTY)


def _numbered(pdf: FPDF, headings: Sequence[str], col_widths: Sequence[int], rows: Sequence[Sequence[str]]) -> None:
    """A table whose first column numbers its rows; its headings repeat on every page it flows onto."""
    with pdf.table(col_widths=tuple(col_widths), headings_style=_LABEL, line_height=_LINE, text_align=Align.L,
                   padding=(1, 2, 1, 2)) as table:
        heading = table.row()
        for text in headings:
            heading.cell(text)
        for number, cells in enumerate(rows, start=1):
            row = table.row()
            row.cell(str(number), align=Align.C)
            for text in cells:
                row.cell(text or _EMPTY)


def _paragraph(pdf: FPDF, text: str) -> None:
    pdf.multi_cell(0, _LINE, text or _EMPTY, align=Align.L, new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def _signatures(pdf: FPDF) -> None:
    """Lines for the hand signatures of whoever took the copy and a witness, each with its date."""
    if pdf.will_page_break(_SIGNATURE_HEIGHT):
        pdf.add_page()
    pdf.ln(_LINE * 2)
    height = _LINE * 2
    for role in ("提取人（签名）Taken by：", "见证人（签名）Witness："):
        pdf.cell(pdf.get_string_width(role) + 1, height, role, new_x=XPos.RIGHT, new_y=YPos.TOP)
        baseline = pdf.get_y() + height - 2
        pdf.line(pdf.get_x(), baseline, pdf.l_margin + 95, baseline)
        pdf.set_x(pdf.l_margin + 100)
        pdf.cell(0, height, "日期 Date：        年      月      日", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.ln(_LINE)


def render_note(note: WrittenNote, font: Path = DEFAULT_FONT) -> bytes:
    """The note as PDF bytes. CentralError if the font is missing or unreadable, or lacks a character of the
    note."""
    # fontTools logs every table of the font it subsets at INFO: a dozen lines per note in central's log.
    logging.getLogger("fontTools").setLevel(max(logging.WARNING, logging.getLogger("fontTools").level))
    pdf = _document(font)
    _check_glyphs(pdf, note, font)
    pdf.set_title(note.title)
    pdf.set_subject(f"{note.matter} {note.case}".strip())
    pdf.add_page()

    pdf.set_font(_FAMILY, size=18)
    pdf.cell(0, 12, note.title, align=Align.C, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font(_FAMILY, size=_LABEL_PT)
    pdf.cell(0, _LINE, "Written note of an audio-video record for law enforcement", align=Align.C,
             new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font(_FAMILY, size=_BODY_PT)

    _section(pdf, "一、基本情况 Particulars")
    _pairs(pdf, [
        ("事由 Matter", note.matter),
        ("案件 Case", note.case),
        ("单位 Unit", note.unit),
        ("房间 Room", note.room),
        ("地点 Place", note.location),
        ("开始时间 Started", note.started),
        ("结束时间 Ended", note.ended),
        ("时长 Duration", note.duration),
        ("设备编号 Device", note.device),
        ("导出范围 Range", note.range_text or "整个会话 Whole session"),
        ("提取人 Taken by", note.taken_by),
        ("提取时间 Taken at", note.taken_at),
    ])

    _section(pdf, "二、执法人员 Officers")
    if note.officers:
        _numbered(pdf, ("序号 No.", "姓名 Name", "执法证号 Certificate No."), (12, 44, 44),
                  [(name, certificate) for name, certificate in note.officers])
    else:
        _paragraph(pdf, _NONE)

    _section(pdf, "三、当事人 Parties")
    if note.parties:
        _numbered(pdf, ("序号 No.", "姓名或名称 Name"), (12, 88), [(party,) for party in note.parties])
    else:
        _paragraph(pdf, _NONE)

    _section(pdf, "四、录制方式 Method of recording")
    _paragraph(pdf, note.method)

    _section(pdf, "五、导出内容 Contents")
    _pairs(pdf, note.contents, headings=("项目 Item", "内容 Value"))

    _section(pdf, "六、中断情况 Interruptions")
    if note.interruptions:
        _numbered(pdf, ("序号 No.", "情况 What happened"), (12, 88), [(line,) for line in note.interruptions])
    else:
        _paragraph(pdf, "无中断 No interruption")

    _section(pdf, "七、核验 Verification")
    _paragraph(pdf, note.verification)
    # Small enough that the 64 hex digits stay on one line, to be read out or compared at a glance.
    pdf.set_font(_FAMILY, size=_LABEL_PT)
    _paragraph(pdf, f"文件清单 SHA-256 files list (MANIFEST.json, but this note)：{note.manifest_sha256}")
    pdf.set_font(_FAMILY, size=_BODY_PT)

    _signatures(pdf)
    return bytes(pdf.output())


def write_note_pdf(note: WrittenNote, out: Path, font: Path = DEFAULT_FONT) -> None:
    """Write the note to `out` durably (write-temp, fsync, rename, fsync the folder), mode 0640.
    CentralError if the font is missing or unreadable, or lacks a character of the note; StorageFault if the
    file cannot be written."""
    atomic_write(out, render_note(note, font), mode=0o640)
