"""The one place a hardware backend is chosen and built.

`pi` drives the real board, `sim` the simulator that ships with the product, and `auto` picks `pi` on a
Raspberry Pi with picamera2 installed, and otherwise falls back to `sim` with a loud warning saying why.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from evidence.supervisor import Spawn
from hal.audio.base import Microphone, Speaker
from hal.buttons.base import ButtonHandler, ButtonName, Buttons
from hal.camera.base import Camera, VideoFormat
from hal.clock.base import Clock
from hal.errors import BackendError
from hal.gpio.sim import SimPins
from hal.power.base import Power
from hal.sensor.base import RoomSensor
from hal.storage.base import Storage
from hal.tally.base import Tally

log = logging.getLogger(__name__)

_MODEL = Path("/proc/device-tree/model")


@dataclass(frozen=True)
class HalSettings:
    backend: Literal["pi", "sim", "auto"]
    video: VideoFormat
    sample_rate: int
    timezone: str
    storage_root: Path
    pins: dict[str, int]
    """The buttons', the tally's and (with a sensor) the room sensor's ("sensor") BCM pin numbers."""
    stop_hold_seconds: float
    sensor: Literal["none", "door", "presence"] = "none"


SIM_FAULTS = ("camera", "microphone", "storage", "power")
"""What a scenario can break on the simulator: the camera delivers no frames, the microphone only digital
silence, the storage is full, the power supply is under-voltage."""


@dataclass
class SimControls:
    """The simulator's hands: what a scenario or a test uses to press buttons and cause faults."""

    pins: SimPins
    room: Any
    power: Any
    clock: Any
    storage: Any
    camera: Any
    sensor: Any = None
    """The simulated room sensor (hal/sensor/sim.py); None when the room has none (room.sensor = "none")."""

    def people(self, present: bool) -> None:
        """People enter the room (`True`), or everyone leaves: what the room sensor then reports."""
        if self.sensor is None:
            raise BackendError("the room has no sensor to see people come and go: set room.sensor to door or "
                               "presence")
        self.sensor.set(present)

    def fault(self, device: str, on: bool) -> None:
        """Break (or mend) one of SIM_FAULTS."""
        if device == "camera":
            self.camera.broken = on
        elif device == "microphone":
            self.room.dead_microphone = on
        elif device == "storage":
            # Full: nothing more than what is there now fits.
            self.storage.capacity_bytes = self.storage.used_bytes() if on else None
        elif device == "power":
            self.power.under_voltage = on
        else:
            raise BackendError(f"no simulated fault {device!r} (one of {', '.join(SIM_FAULTS)})")


@dataclass
class Hal:
    backend: str
    camera: Camera
    microphone: Microphone
    speaker: Speaker
    clock: Clock
    storage: Storage
    power: Power
    tally: Tally
    pin_factory: Any
    settings: HalSettings
    sim: SimControls | None = None
    sensor: RoomSensor | None = None
    """The room's door contact or presence sensor; None without one (room.sensor = "none")."""

    def buttons(self, handler: ButtonHandler, brushed: ButtonHandler, held: ButtonHandler) -> Buttons:
        pins = {name: self.settings.pins[name.value] for name in ButtonName}
        return Buttons(pins, self.settings.stop_hold_seconds, self.pin_factory, handler, brushed, held)

    def close(self) -> None:
        self.tally.close()
        if self.sensor is not None:
            self.sensor.close()
        if self.sim is not None:
            self.sim.room.close()


def board_model(model_file: Path = _MODEL) -> str:
    """The board's model as the device tree names it ("Raspberry Pi 5 Model B Rev 1.0"); "" if unknown."""
    try:
        return model_file.read_text(errors="replace").strip("\x00\n ")
    except OSError:
        return ""


def is_raspberry_pi(model_file: Path = _MODEL) -> bool:
    return "Raspberry Pi" in board_model(model_file)


def resolve_backend(requested: str, model_file: Path = _MODEL) -> str:
    if requested != "auto":
        return requested
    model = board_model(model_file)
    if "Raspberry Pi" not in model:
        why = f"this is not a Raspberry Pi ({model_file} says {model!r})" if model else f"{model_file} is absent"
    elif importlib.util.find_spec("picamera2") is None:
        why = f"this is a {model} but picamera2 is not installed (apt install python3-picamera2)"
    else:
        return "pi"
    message = f"hal.backend=auto: falling back to the SIMULATED hardware because {why}. Nothing real is recorded."
    log.warning(message)
    print(f"WARNING: {message}", file=sys.stderr)
    return "sim"


def _build_pi(s: HalSettings) -> Hal:
    from hal.audio.pi import PiMicrophone, PiSpeaker
    from hal.camera.pi import PiCamera
    from hal.clock.pi import PiClock
    from hal.gpio.pi import pin_factory
    from hal.power.pi import PiPower
    from hal.sensor.pi import PiRoomSensor
    from hal.storage.pi import PiStorage

    factory = pin_factory()
    clock = PiClock(s.timezone)
    sensor = None if s.sensor == "none" else PiRoomSensor(s.sensor, s.pins["sensor"], factory, clock)
    return Hal("pi", PiCamera(s.video), PiMicrophone(s.sample_rate), PiSpeaker(s.sample_rate),
               clock, PiStorage(s.storage_root), PiPower(),
               Tally(s.pins["tally"], factory), factory, s, sensor=sensor)


def _build_sim(s: HalSettings, spawn: Spawn) -> Hal:
    from hal.audio.sim import SimMicrophone, SimRoom, SimSpeaker
    from hal.camera.sim import SimCamera
    from hal.clock.sim import SimClock
    from hal.power.sim import SimPower
    from hal.sensor.sim import SimRoomSensor
    from hal.storage.sim import SimStorage

    pins = SimPins()
    room = SimRoom(s.sample_rate, spawn)
    clock = SimClock(s.timezone)
    power = SimPower()
    storage = SimStorage(s.storage_root)
    camera = SimCamera(s.video, spawn)
    sensor = None if s.sensor == "none" else SimRoomSensor(s.sensor, clock)
    controls = SimControls(pins, room, power, clock, storage, camera, sensor)
    return Hal("sim", camera, SimMicrophone(room), SimSpeaker(room), clock, storage, power,
               Tally(s.pins["tally"], pins.factory), pins.factory, s, controls, sensor)


def build_hal(settings: HalSettings, spawn: Spawn) -> Hal:
    """The backend `settings` ask for; `spawn` starts the threads of simulated devices under supervision."""
    backend = resolve_backend(settings.backend)
    if backend == "pi":
        return _build_pi(settings)
    if backend == "sim":
        return _build_sim(settings, spawn)
    raise BackendError(f"hal.backend: unknown backend {backend!r} (use pi, sim or auto)")
