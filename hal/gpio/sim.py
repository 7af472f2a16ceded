"""Pins for the simulator: gpiozero's own MockFactory, so the same gpiozero device code runs."""

from __future__ import annotations

import time

from gpiozero.pins.mock import MockFactory, MockPin


class SimPins:
    """A MockFactory plus the hands that press its buttons."""

    def __init__(self) -> None:
        self.factory = MockFactory()

    def pin(self, number: int | str) -> MockPin:
        return self.factory.pin(number)

    def press(self, number: int | str) -> None:
        # Buttons are pull-up: pressing pulls the line to ground.
        self.pin(number).drive_low()

    def release(self, number: int | str) -> None:
        self.pin(number).drive_high()

    def tap(self, number: int | str, seconds: float = 0.1) -> None:
        self.press(number)
        time.sleep(seconds)
        self.release(number)
