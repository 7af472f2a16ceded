"""The stamp burned into every frame: time with zone and clock state, place, device, officers, session, and
(on a line of its own when known) what the session is about: its act, matter and case.

The band is rendered with Pillow once per second (its text changes only then) and copied into each
frame, so stamping costs one array copy per frame.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from capture.errors import CaptureError
from hal.camera.base import RgbFrame
from hal.clock.base import Clock

_FALLBACK_FONTS = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
)


def find_cjk_font() -> Path:
    """A font that has Chinese glyphs; without one the stamp would show boxes, so this is a hard error."""
    if shutil.which("fc-match"):
        found = subprocess.run(
            ["fc-match", "-f", "%{file}", ":lang=zh-cn"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if found and Path(found).exists() and "DejaVu" not in found:
            return Path(found)
    for candidate in _FALLBACK_FONTS:
        if Path(candidate).exists():
            return Path(candidate)
    raise CaptureError("no CJK font installed: install fonts-wqy-microhei (make demo/test do this as root)")


MATTER_CHARS = 60
"""The most of the matter line the stamp shows: it must fit the picture's width."""


@dataclass(frozen=True)
class StampFacts:
    room: str
    location: str
    device_id: str
    officers: Sequence[tuple[str, str]]
    session_id: str
    act: str = ""
    """The enforcement act of the session's booking (询问, 听证); with `matter` and `case` on a line of their own."""
    matter: str = ""
    case: str = ""


def matter_line(act: str, matter: str, case: str) -> str:
    """The stamp's line naming what the session is about; "" when nothing names it."""
    what = "  ".join(part for part in (act, matter) if part)
    line = "  ".join(part for part in (f"执法事项 {what}" if what else "", f"案号 {case}" if case else "") if part)
    return line if len(line) <= MATTER_CHARS else line[: MATTER_CHARS - 1] + "…"


def stamp_lines(facts: StampFacts, when: str, synced: bool, segment: int) -> list[str]:
    clock_state = "时钟已同步" if synced else "时钟未同步 CLOCK UNSYNCED"
    officers = "  ".join(f"{name} 执法证号{cert}" for name, cert in facts.officers)
    lines = [
        f"{when}  {clock_state}",
        f"{facts.room}  {facts.location}  设备号 {facts.device_id}",
        officers,
        f"会话 {facts.session_id}  段 {segment:06d}",
    ]
    matter = matter_line(facts.act, facts.matter, facts.case)
    return [*lines, matter] if matter else lines


class Stamper:
    def __init__(self, facts: StampFacts, clock: Clock, width: int, height: int, font_path: Path,
                 segment_index: Callable[[], int]) -> None:
        self._facts = facts
        self._clock = clock
        self._width = width
        self._size = max(10, height // 26)
        self._font = ImageFont.truetype(str(font_path), self._size)
        self._line_h = self._size + 3
        self.band_height = min(height, self._line_h * len(stamp_lines(facts, "", True, 0)) + 6)
        self._segment_index = segment_index
        self._key: tuple[str, bool, int] | None = None
        self._band: np.ndarray | None = None
        self._lock = threading.Lock()

    def render(self, lines: Sequence[str]) -> np.ndarray:
        image = Image.new("RGB", (self._width, self.band_height), (0, 0, 0))
        draw = ImageDraw.Draw(image)
        for i, line in enumerate(lines):
            draw.text((4, 3 + i * self._line_h), line, font=self._font, fill=(255, 255, 255))
        return np.asarray(image, dtype=np.uint8)

    def __call__(self, frame: RgbFrame, pts_ns: int) -> None:
        now = self._clock.now()
        when = f"{now.isoformat(sep=' ', timespec='seconds')} {now:%Z}"
        key = (when, self._clock.is_synchronised(), self._segment_index())
        with self._lock:
            if key != self._key or self._band is None:
                self._band = self.render(stamp_lines(self._facts, when, key[1], key[2]))
                self._key = key
            band = self._band
        frame[: band.shape[0], : band.shape[1]] = band
