"""The simulated room sensor: people enter and leave when a scenario or a test says so."""

from __future__ import annotations

from hal.clock.base import Clock
from hal.sensor.base import RoomSensor


class SimRoomSensor(RoomSensor):
    def __init__(self, kind: str, clock: Clock) -> None:
        super().__init__(kind, clock, False)

    def set(self, occupied: bool) -> None:
        """People are in the room (`True`), or everyone has left."""
        self._changed(occupied)

    def close(self) -> None:
        return None
