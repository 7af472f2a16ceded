"""A booking from central to the room (issue 12, ROOM): Mosquitto on loopback, central's receiver and the device
on the simulator, as the rig assembles them.

booking_to_device_s: a booking made at central (`Bookings.make`: checked, the room's next set signed, the
audit record and the store's record written durably) until the device holds it (the receiver saw the store
change, published the set retained, the device checked central's signature and replaced its tinydb file
atomically); target <= 2 s. The median and the largest of TRIALS bookings, one after another.
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
from pathlib import Path
from typing import Any

from central.bookings import Fields
from central.build import build_bookings
from central.register import Actor
from firmware_py import rig as rig_mod
from mqtt.broker import LocalBroker

TRIALS = 10


def run(workdir: Path) -> dict[str, Any]:
    with LocalBroker(workdir / "broker") as broker:
        rig = rig_mod.make_rig(*rig_mod.configs(workdir, "127.0.0.1", broker.port, rig_mod.fast({})))
        try:
            bookings = build_bookings(rig.central, rig.store)
            device = rig.config.device.id
            start = rig.service.hal.clock.now() + dt.timedelta(hours=1)
            took = []
            for n in range(TRIALS):
                begins = start + dt.timedelta(hours=n)
                t0 = time.perf_counter()
                bookings.make(device, Fields(begins, begins + dt.timedelta(minutes=50), matter=f"询问 {n}",
                                             act="询问"), Actor("bench", "admin"))
                serial = bookings.of(device).serial
                assert rig.service.bookings.wait_serial(serial, 10), f"set {serial} never reached the device"
                took.append(time.perf_counter() - t0)
        finally:
            rig.close()
    return {"booking_to_device_s": round(statistics.median(took), 3),
            "booking_to_device_max_s": round(max(took), 3)}
