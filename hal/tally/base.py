"""The tally light outside the room, driven through gpiozero on either pin factory."""

from __future__ import annotations

import enum
import threading
from typing import Any

from gpiozero import LED


class TallyPattern(enum.Enum):
    OFF = "off"
    PREFLIGHT = "preflight"
    NOTICE = "notice"
    RECORDING = "recording"
    FAULT = "fault"
    ALERT = "alert"


# (on seconds, off seconds); None means steady. Each blinking pattern starts lit, so the light answers a
# press at once; fault blinks fast enough that nobody mistakes it for the notice.
_BLINKS: dict[TallyPattern, tuple[float, float] | None] = {
    TallyPattern.PREFLIGHT: (0.1, 0.4),
    TallyPattern.NOTICE: (0.5, 0.5),
    TallyPattern.RECORDING: None,
    TallyPattern.FAULT: (0.1, 0.1),
    TallyPattern.ALERT: (0.05, 1.95),
}


class Tally:
    def __init__(self, pin: int | str, pin_factory: Any) -> None:
        self._led = LED(pin, pin_factory=pin_factory)
        self._lock = threading.Lock()
        self.pattern = TallyPattern.OFF

    def show(self, pattern: TallyPattern) -> None:
        with self._lock:
            if pattern is self.pattern:
                return
            self.pattern = pattern
            if pattern is TallyPattern.OFF:
                self._led.off()
                return
            blink = _BLINKS[pattern]
            if blink is None:
                self._led.on()
            else:
                # gpiozero's blink thread would switch the LED on only after scheduling; switching it on
                # here first keeps press-to-light latency at one GPIO write.
                self._led.on()
                self._led.blink(on_time=blink[0], off_time=blink[1], background=True)

    @property
    def lit(self) -> bool:
        return bool(self._led.is_lit)

    def close(self) -> None:
        self._led.close()
