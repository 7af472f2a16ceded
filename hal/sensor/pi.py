"""The room sensor on a GPIO input, through gpiozero (the pin factory given: lgpio on the board, gpiozero's
MockFactory in tests).

`door`: a door contact (reed switch) between the pin and ground, closed while the door is shut: the internal
pull-up holds the pin high while the door is open, so gpiozero reads the shut door as active, and the room
counts as in use while its door is shut (an interview room stands open while it is free).
`presence`: a PIR presence sensor whose output is high while it sees someone; its own hold time (the
potentiometer on most modules, set to a few minutes) keeps it high while people sit still.
"""

from __future__ import annotations

from typing import Any

from gpiozero import DigitalInputDevice, MotionSensor

from hal.clock.base import Clock
from hal.errors import BackendError
from hal.sensor.base import RoomSensor

DOOR_BOUNCE_S = 0.05
"""A reed contact chatters for a few milliseconds as the door closes."""


class PiRoomSensor(RoomSensor):
    def __init__(self, kind: str, pin: int | str, pin_factory: Any, clock: Clock) -> None:
        device: DigitalInputDevice
        if kind == "door":
            device = DigitalInputDevice(pin, pull_up=True, bounce_time=DOOR_BOUNCE_S, pin_factory=pin_factory)
        elif kind == "presence":
            device = MotionSensor(pin, pin_factory=pin_factory)
        else:
            raise BackendError(f"room.sensor: no room sensor {kind!r} (door or presence)")
        self._device = device
        super().__init__(kind, clock, bool(device.is_active))
        device.when_activated = lambda: self._changed(True)
        device.when_deactivated = lambda: self._changed(False)

    def close(self) -> None:
        self._device.close()
