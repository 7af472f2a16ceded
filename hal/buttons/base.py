"""The room's three buttons: START (short press), STOP (held), MARK (short press)."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any

from gpiozero import Button


class ButtonName(enum.Enum):
    START = "start"
    STOP = "stop"
    MARK = "mark"


ButtonHandler = Callable[[ButtonName], None]


class Buttons:
    """Wires gpiozero buttons to one handler.

    STOP fires only after it has been held for `stop_hold_s`, so a brush against it cannot end a
    recording; START and MARK fire on press.
    """

    def __init__(
        self,
        pins: Mapping[ButtonName, int | str],
        stop_hold_s: float,
        pin_factory: Any,
        handler: ButtonHandler,
    ) -> None:
        self._buttons: dict[ButtonName, Button] = {}
        for name, pin in pins.items():
            hold = stop_hold_s if name is ButtonName.STOP else 1.0
            button = Button(pin, pull_up=True, hold_time=hold, pin_factory=pin_factory)
            if name is ButtonName.STOP:
                button.when_held = lambda n=name: handler(n)
            else:
                button.when_pressed = lambda n=name: handler(n)
            self._buttons[name] = button

    def close(self) -> None:
        for button in self._buttons.values():
            button.close()
