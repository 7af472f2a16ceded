"""The room sensor (ROOM): a door contact or a PIR presence sensor through gpiozero, tested on gpiozero's own
MockFactory as the other pi backends are, and the simulator's sensor that scenarios drive."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import pytest
from gpiozero.pins.mock import MockFactory

from evidence.supervisor import Supervisor
from hal.camera.base import VideoFormat
from hal.clock.sim import SimClock
from hal.errors import BackendError
from hal.factory import HalSettings, build_hal
from hal.sensor.base import Occupancy
from hal.sensor.pi import PiRoomSensor
from hal.sensor.sim import SimRoomSensor
from tests.conftest import wait_until


def test_a_door_contact_reads_the_shut_door_as_the_room_in_use__ROOM() -> None:
    factory = MockFactory()
    pin = factory.pin(6)
    sensor = PiRoomSensor("door", 6, factory, SimClock("Asia/Shanghai"))
    seen: list[Occupancy] = []
    sensor.on_change(seen.append)
    try:
        first = sensor.reading()
        assert not first.occupied  # the pull-up holds the pin high while the door stands open
        time.sleep(0.01)
        pin.drive_low()  # the reed contact closes with the door
        assert wait_until(lambda: sensor.reading().occupied, 2)
        shut = sensor.reading()
        assert shut.since > first.since and shut.since_mono > first.since_mono
        assert [s.occupied for s in seen] == [True]
        time.sleep(DOOR_SETTLE_S)
        pin.drive_high()
        assert wait_until(lambda: not sensor.reading().occupied, 2)
        assert [s.occupied for s in seen] == [True, False]
    finally:
        sensor.close()


DOOR_SETTLE_S = 0.1
"""Longer than the contact's debounce time, so the opening is not taken for the closing's chatter."""


def test_a_presence_sensor_reports_people_while_its_output_is_high__ROOM() -> None:
    factory = MockFactory()
    pin = factory.pin(6)
    sensor = PiRoomSensor("presence", 6, factory, SimClock("Asia/Shanghai"))
    try:
        assert sensor.kind == "presence" and not sensor.reading().occupied
        pin.drive_high()
        assert wait_until(lambda: sensor.reading().occupied, 3)
        pin.drive_low()
        assert wait_until(lambda: not sensor.reading().occupied, 3)
    finally:
        sensor.close()


def test_an_unknown_sensor_kind_is_refused() -> None:
    with pytest.raises(BackendError, match="no room sensor 'lidar'"):
        PiRoomSensor("lidar", 6, MockFactory(), SimClock("Asia/Shanghai"))


def test_the_simulated_sensor_tells_its_listeners_of_each_change_once__ROOM() -> None:
    sensor = SimRoomSensor("door", SimClock("Asia/Shanghai"))
    seen: list[bool] = []

    def broken(occupancy: Occupancy) -> None:
        raise RuntimeError("a listener's bug")

    sensor.on_change(broken)  # logged, and the listeners after it still hear
    sensor.on_change(lambda o: seen.append(o.occupied))
    sensor.set(True)
    sensor.set(True)
    sensor.set(False)
    assert seen == [True, False]


@pytest.mark.parametrize("kind", ["none", "door"])
def test_the_factory_builds_the_configured_sensor__ROOM(tmp_path: Path, kind: Literal["none", "door"]) -> None:
    settings = HalSettings("sim", VideoFormat(64, 64, 1, 50_000), 16000, "Asia/Shanghai", tmp_path,
                           {"start": 17, "stop": 27, "mark": 22, "tally": 5, "sensor": 6}, 0.5, kind)
    hal = build_hal(settings, Supervisor().spawn)
    try:
        assert hal.sim is not None
        if kind == "none":
            assert hal.sensor is None and hal.sim.sensor is None
            with pytest.raises(BackendError, match="no sensor"):
                hal.sim.people(True)
        else:
            assert hal.sensor is hal.sim.sensor and hal.sensor is not None
            hal.sim.people(True)
            assert hal.sensor.reading().occupied
    finally:
        hal.close()
