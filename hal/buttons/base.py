"""The room's three buttons: START (short press), STOP (held), MARK (short press)."""

from __future__ import annotations

import enum
import threading
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
    recording; one let go sooner goes to `brushed` instead, so the officer can be told to hold it. START
    and MARK fire on press; MARK held as long as STOP goes to `held` as well (to decline a session).
    """

    def __init__(
        self,
        pins: Mapping[ButtonName, int | str],
        stop_hold_s: float,
        pin_factory: Any,
        handler: ButtonHandler,
        brushed: ButtonHandler,
        held: ButtonHandler,
    ) -> None:
        self._buttons: dict[ButtonName, Button] = {}
        for name, pin in pins.items():
            button = Button(pin, pull_up=True, hold_time=stop_hold_s, pin_factory=pin_factory)
            if name is ButtonName.STOP:
                self._wire_hold(button, name, handler, brushed)
            else:
                button.when_pressed = lambda n=name: handler(n)
                if name is ButtonName.MARK:
                    button.when_held = lambda n=name: held(n)
            self._buttons[name] = button

    @staticmethod
    def _wire_hold(button: Button, name: ButtonName, handler: ButtonHandler, brushed: ButtonHandler) -> None:
        """Exactly one of `handler` (held long enough) and `brushed` (let go sooner) per press. gpiozero calls
        `when_held` on its hold thread and `when_released` on the pin's: a release at the very moment the hold
        time ends must not count as both."""
        lock = threading.Lock()
        press = {"down": False, "held": False}

        def on_pressed() -> None:
            with lock:
                press.update(down=True, held=False)

        def on_held() -> None:
            with lock:
                if not press["down"]:
                    return  # let go already: it was a brush
                press["held"] = True
            handler(name)

        def on_released() -> None:
            with lock:
                was_brush = press["down"] and not press["held"]
                press.update(down=False, held=False)
            if was_brush:
                brushed(name)

        button.when_pressed = on_pressed
        button.when_held = on_held
        button.when_released = on_released

    def close(self) -> None:
        for button in self._buttons.values():
            button.close()
