"""Pins on a real board: gpiozero's default pin factory (lgpio on a Pi 5, the only one that works there)."""

from __future__ import annotations

from typing import Any


def pin_factory() -> Any:
    # None tells gpiozero devices to use Device.pin_factory, which gpiozero resolves on first use.
    return None
