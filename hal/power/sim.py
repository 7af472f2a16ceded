"""Simulated power: mains, with an under-voltage or battery level a scenario can set."""

from __future__ import annotations

from hal.power.base import Power, PowerState


class SimPower(Power):
    def __init__(self) -> None:
        self.under_voltage = False
        self.battery_percent: float | None = None

    def state(self) -> PowerState:
        return PowerState(self.under_voltage, self.battery_percent)
