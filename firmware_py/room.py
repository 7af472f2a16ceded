"""The room's own thread: bookings from central, their automatic starts, and the room sensor's reminders
(ROOM, NO-RECORD).

About once a second (sooner when a booking set arrives or an automatic start is due) it:
* keeps the booking set taken on the MQTT client's network thread (firmware_py/bookings.py);
* starts the session of each booking that asks for it at its start time, exactly as START does (pre-flight,
  then the notice; the controller logs a `booking_start` event instead of the button), never twice for
  one booking (the cache remembers it across restarts), and not while a session is open;
* with a room sensor: people in the room and no session open for `room.remind_after_minutes` → the device
  says so; still so `room.alert_after_minutes` later → an `unrecorded_presence` alert to central. A session
  declined while they are in the room silences both until the room is empty again (they chose, lawfully,
  not to record). A session still recording `room.overrun_minutes` after its booking's end with nobody in the
  room → a spoken prompt to end it; still so `room.alert_after_minutes` later → an `overrun` alert.

It only asks: the session thread (the controller) decides, from the state it owns, whether to start, speak
or alert. Nothing is recorded outside a session, and no session starts without its notice.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time

from evidence.alert import OVERRUN, UNRECORDED_PRESENCE
from evidence.supervisor import Beat
from firmware_py.bookings import AUTO_STARTED, OPEN_AT_START, BookingCache
from firmware_py.config import RoomConfig
from firmware_py.controller import RECORDING_STATES, Controller
from firmware_py.state_machine import State
from hal.clock.base import Clock
from hal.sensor.base import Occupancy, RoomSensor

log = logging.getLogger(__name__)

TICK_S = 1.0
IDLE_STATES = (State.IDLE, State.FAULT)
"""No session and nothing under way: where START (and so an automatic start) begins a session."""


class RoomWatch:
    def __init__(self, config: RoomConfig, clock: Clock, sensor: RoomSensor | None, bookings: BookingCache,
                 controller: Controller) -> None:
        self._config = config
        self._clock = clock
        self._sensor = sensor
        self._bookings = bookings
        self._controller = controller
        self._stop = threading.Event()
        self._quiet_since = time.monotonic()
        """Monotonic time a session (or its start, or a decline) last kept the device busy."""
        self._declines = 0
        self._declined_while: float | None = None
        """The `since_mono` of the stay in the room during which a session was declined."""
        self._reminded: float | None = None
        self._alerted: float | None = None
        self._prompted: tuple[str, dt.datetime] | None = None
        self._overrun_alerted: tuple[str, dt.datetime] | None = None
        if sensor is not None:
            sensor.on_change(self._changed)

    @staticmethod
    def _changed(occupancy: Occupancy) -> None:
        log.info("room sensor: %s", "people in the room" if occupancy.occupied else "nobody in the room")

    def stop(self) -> None:
        self._stop.set()

    def run(self, beat: Beat) -> None:
        while not self._stop.is_set():
            beat()
            self._bookings.commit()
            now = self._clock.now()
            self._start_due(now)
            if self._sensor is not None:
                self._watch_sensor(self._sensor.kind, self._sensor.reading(), now, time.monotonic())
            self._bookings.wait(self._pause(now))

    def _pause(self, now: dt.datetime) -> float:
        """Until the next tick, or the next automatic start if that comes sooner (a start is on time to within
        a few milliseconds, not a second)."""
        start = self._bookings.next_start(now)
        if start is None:
            return TICK_S
        return min(TICK_S, max(0.005, (start - self._clock.now()).total_seconds()))

    def _start_due(self, now: dt.datetime) -> None:
        controller = self._controller
        for booking in self._bookings.due(now):
            state = controller.machine.state
            if controller.session_id is None and state in IDLE_STATES:
                # Noted first, so no restart can start it twice; then started as START starts a session.
                self._bookings.mark(booking, AUTO_STARTED)
                controller.auto_start(booking)
                return
            if controller.session_id is not None and (state in RECORDING_STATES or state is State.INTERRUPTED):
                log.info("booking %s: a session (%s) is open at its start; it is not started automatically",
                         booking.id, controller.session_id)
                self._bookings.mark(booking, OPEN_AT_START)
            # Otherwise the device is starting, closing or declining a session: looked at again next tick.

    def _watch_sensor(self, sensor: str, occupancy: Occupancy, now: dt.datetime, mono: float) -> None:
        controller, config = self._controller, self._config
        session, state = controller.session_id, controller.machine.state
        if session is not None or state not in IDLE_STATES:
            self._quiet_since = mono
        declines = len(controller.timings.sessions_declined)
        if declines != self._declines:
            self._declines = declines
            self._declined_while = occupancy.since_mono if occupancy.occupied else None
        if occupancy.occupied and session is None and self._declined_while != occupancy.since_mono:
            since = max(occupancy.since_mono, self._quiet_since)
            waited = mono - since
            remind, alert = config.remind_after_minutes * 60, config.alert_after_minutes * 60
            if waited >= remind and self._reminded != since:
                self._reminded = since
                controller.remind()
            if waited >= remind + alert and self._alerted != since:
                self._alerted = since
                began = now - dt.timedelta(seconds=waited)
                controller.room_alert(
                    UNRECORDED_PRESENCE, None, sensor,
                    f"people in the room ({sensor} sensor) since {began:%Y-%m-%d %H:%M:%S %Z} and no "
                    f"session open for {waited / 60:.1f} minutes; reminded after {config.remind_after_minutes:g} "
                    "minutes", began)
        booking = controller.session_booking
        if booking is None or session is None or state not in RECORDING_STATES or occupancy.occupied:
            return
        since_wall = max(booking.end, occupancy.since)
        over = (now - since_wall).total_seconds()
        key = (session, since_wall)
        if over >= config.overrun_minutes * 60 and self._prompted != key:
            self._prompted = key
            controller.overrun(session)
        if over >= (config.overrun_minutes + config.alert_after_minutes) * 60 and self._overrun_alerted != key:
            self._overrun_alerted = key
            end = booking.end.astimezone(now.tzinfo)
            controller.room_alert(
                OVERRUN, session, sensor,
                f"session {session} still recording {(now - booking.end).total_seconds() / 60:.1f} minutes after "
                f"booking {booking.id} ended at {end:%Y-%m-%d %H:%M %Z}, nobody in the room ({sensor} "
                f"sensor) since {occupancy.since.astimezone(now.tzinfo):%H:%M:%S}; asked to end it after "
                f"{config.overrun_minutes:g} minutes", since_wall)
