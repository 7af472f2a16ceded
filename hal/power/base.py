"""Power supply health: under-voltage, and battery level where the board has one."""

from __future__ import annotations

import abc
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PowerState:
    under_voltage: bool
    battery_percent: float | None
    """None when the board runs from mains with no battery."""


class Power(abc.ABC):
    @abc.abstractmethod
    def state(self) -> PowerState: ...
