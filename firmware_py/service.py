"""The composition root: builds every part from the configuration, starts them in order and stops them
in reverse. Nothing else in the service constructs hardware or reads the configuration file.

Every long-lived thread runs under one supervisor (evidence/supervisor.py): an unexpected exception is a
fault said everywhere (the log at error level, a `fault` event in the open session's ledger, the tally's
fault pattern, the status sent to central) and the thread is started again; a thread that hangs stops the
watchdog being fed, so systemd restarts the service (image/recorder.service, `WatchdogSec=`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from capture.pruning import Pruner
from capture.recording import known_opening
from capture.recovery import Recovered, recover_spool
from capture.spool import Spool
from capture.stamp import find_cjk_font
from evidence.alert import NOT_RESUMED, Alert, MalformedAlert, session_alert
from evidence.deadline import Level
from evidence.durable import atomic_write
from evidence.entry import EVENT, Entry
from evidence.errors import StorageFault
from evidence.keys import load_public_key_b64
from evidence.supervisor import Beat, Supervisor
from firmware_py.bookings import BookingCache
from firmware_py.config import Config
from firmware_py.controller import Controller
from firmware_py.deadlines import Assessment, assess, worst_warning
from firmware_py.errors import ServiceError
from firmware_py.preflight import bytes_needed, recording_hours
from firmware_py.prompts import PromptCache, PromptError, notice_prompts
from firmware_py.room import RoomWatch
from firmware_py.state_machine import State
from firmware_py.systemd import Notifier
from firmware_py.weaknesses import refusal, weaknesses
from hal.buttons.base import Buttons
from hal.camera.base import VideoFormat
from hal.errors import HalError
from hal.factory import Hal, HalSettings, build_hal, is_raspberry_pi, resolve_backend
from mqtt.alert_outbox import AlertOutbox
from mqtt.protocol import proves_delivery
from mqtt.uploader import Uploader
from provisioning.identity import DeviceIdentity

log = logging.getLogger(__name__)
PRUNE_INTERVAL_S = 300.0


def hal_settings(config: Config, backend: str | None = None) -> HalSettings:
    v = config.video
    pins = config.hal.pins
    return HalSettings(
        backend=backend or config.hal.backend,  # type: ignore[arg-type]
        video=VideoFormat(v.width, v.height, v.fps, v.bitrate),
        sample_rate=config.audio.sample_rate,
        timezone=config.device.timezone,
        storage_root=config.spool_dir,
        pins={"start": pins.start, "stop": pins.stop, "mark": pins.mark, "tally": pins.tally,
              "sensor": config.room.sensor_pin},
        stop_hold_seconds=config.session.stop_hold_seconds,
        sensor=config.room.sensor,
    )


def _prepare_state_dir(path: Path) -> None:
    """The state folder exists (made if need be) and the service may write it; else a clear error."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as err:
        raise ServiceError(f"device.state_dir {path} is a file, not a folder; point it at a folder") from err
    except OSError as err:
        raise ServiceError(f"device.state_dir {path} cannot be made: {err.strerror or err}; create it and give "
                           "the recorder user write access") from err
    if not path.is_dir():
        raise ServiceError(f"device.state_dir {path} is not a folder")
    if not os.access(path, os.W_OK | os.X_OK):
        raise ServiceError(f"device.state_dir {path} is not writable by this user; give the recorder user write "
                           "access")


class Service:
    def __init__(self, config: Config, hal: Hal | None = None, backend: str | None = None,
                 notifier: Notifier | None = None) -> None:
        self.config = config
        _prepare_state_dir(config.device.state_dir)
        self.supervisor = Supervisor()
        self.notifier = notifier or Notifier(None)
        chosen = hal.backend if hal is not None else resolve_backend(backend or config.hal.backend)
        on_pi = is_raspberry_pi()
        refused = refusal(config, chosen, on_pi)
        if refused is not None:
            raise ServiceError(refused)
        for weakness in weaknesses(config, on_pi):
            log.warning("%s", weakness)
        self.hal = hal or build_hal(hal_settings(config, chosen), self.supervisor.spawn)
        self.identity = DeviceIdentity.load_or_create(config.keys_dir)
        self.spool = Spool(config.spool_dir)
        self.prompts = PromptCache(config.prompt_dir, config.audio.sample_rate, config.notice.words_per_minute)
        self._warm_prompts()
        m = config.mqtt
        central_key = (load_public_key_b64(config.device.central_signing_key)
                       if config.device.central_signing_key else None)
        self.alerts = AlertOutbox(config.device.state_dir / "alerts", m.resend_seconds)
        self.bookings = BookingCache(config.bookings_file, config.device.id, central_key)
        self.uploader = Uploader(self.spool, config.device.id, m.host, m.port, m.topic_prefix, m.keepalive,
                                 m.retry_max_seconds, status=self.health, tls=m.tls,
                                 live_session=lambda: self.controller.session_id, resend_after=m.resend_seconds,
                                 spawn=self.supervisor.spawn, alerts=self.alerts, central_key=central_key,
                                 on_bookings=self.bookings.receive)
        floor = bytes_needed(config.video.bitrate, config.session.max_minutes) * config.spool.free_space_floor_sessions
        self.pruner = Pruner(
            self.spool,
            None if central_key is None else (
                lambda raw, session, seq, digest: proves_delivery(raw, session, seq, digest, central_key)),
            config.spool.keep_receipted_days, int(floor), self._free_bytes, lambda: self.controller.session_id)
        self._prune_now = threading.Event()
        """Set when a session has ended or been wholly receipted: the pruner looks at once rather than at its
        next round."""
        self.spool.delivered_listeners.append(lambda session: self._prune_now.set())
        self.recovery = recover_spool(config.spool_dir, self.identity, self.hal.clock, self._on_entry,
                                      self._may_resume, self._read_hung_marker())
        self.controller = Controller(config, self.hal, self.identity, self.prompts, find_cjk_font(), self._on_entry,
                                     self.supervisor.spawn, self._alert, self.bookings)
        self.room = RoomWatch(config.room, self.hal.clock, self.hal.sensor, self.bookings, self.controller)
        for closed in self.recovery.closed:
            self._alert_not_resumed(closed)
        self.controller.state_listeners += [self._write_status, self._on_state]
        self.supervisor.set_fault_handler(self.controller.on_thread_fault)
        self._buttons: Buttons | None = None
        self._watch_interval = 5.0
        self._announced: float | None = None
        """The upload-deadline threshold last announced (on the tally and in the log)."""
        self._stopping = False

    def _alert(self, alert: Alert) -> None:
        """Central is told (INTERRUPT): the alert goes out now and again until central acknowledges it."""
        log.error("alert %s to central: %s", alert.id, alert.summary())
        self.alerts.add(alert)
        self.uploader.wake()

    def _alert_not_resumed(self, closed: Recovered) -> None:
        clock = self.hal.clock
        try:
            # Sealed in the entry (FORMAT §4.2.1), the session's people are named in the alert as configured here.
            opening = known_opening(closed.opening, self.controller.meta_of(closed.opening))
            alert = session_alert(NOT_RESUMED, opening, self.config.device.id, closed.session, closed.cause,
                                  closed.why, closed.interrupted_at, 0, clock.now().isoformat(timespec="milliseconds"),
                                  clock.is_synchronised(), self.identity.sign)
        except MalformedAlert as err:
            # The session is closed and its ledger says why; only the alert about it could not be made.
            log.error("alert about session %s not made: %s", closed.session, err)
            return
        self._alert(alert)

    @property
    def _hung_marker(self) -> Path:
        return self.config.device.state_dir / "hung.txt"

    def _read_hung_marker(self) -> str | None:
        """What the last run's watchdog found hung, if it stopped answering systemd (which then restarted it)."""
        try:
            text = self._hung_marker.read_text(encoding="utf-8", errors="replace").strip()
        except FileNotFoundError:
            return None
        except OSError as err:
            log.error("cannot read %s: %s", self._hung_marker, err)
            return None
        self._hung_marker.unlink(missing_ok=True)
        return text or "a thread stopped responding"

    def _may_resume(self, entries: list[Entry]) -> str | None:
        """None if the session the last run left open may be taken up again; otherwise why not."""
        s, d = self.config.session, self.config.device
        if s.resume_within_minutes == 0:
            return "resuming after a restart is off (session.resume_within_minutes = 0)"
        first, last = entries[0], entries[-1]
        opening = first.opening
        assert opening is not None
        if first.device != d.id or opening.device_key != self.identity.public_key_b64:
            return "it was recorded under another device id or key"
        if opening.recipient != (d.central_public_key or None):
            return "central's encryption key has changed since"
        if opening.fps != self.config.video.fps or opening.sample_rate != self.config.audio.sample_rate:
            return "the video or audio format has changed since"
        if any(e.body.get("name") == "cannot_continue" for e in entries if e.kind == EVENT):
            return "the device had said recording could not continue"
        try:
            age = self.hal.clock.now() - dt.datetime.fromisoformat(last.time)
        except ValueError:
            return f"its last entry's time {last.time!r} cannot be read"
        if age > dt.timedelta(minutes=s.resume_within_minutes):
            return (f"it was left {age.total_seconds() / 60:.0f} minutes ago, longer than "
                    f"session.resume_within_minutes ({s.resume_within_minutes})")
        return None

    def _warm_prompts(self) -> None:
        # Rendering at start keeps espeak-ng off the START-to-notice path; a failure here is reported
        # again by every pre-flight, so the service still starts and says what is wrong.
        try:
            for prompt in notice_prompts(self.config.notice):
                self.prompts.load(prompt)
        except PromptError as err:
            log.error("%s", err)

    def _on_entry(self, entry: Entry) -> None:
        self.spool.added(entry)
        self.uploader.wake()

    def upload_deadlines(self) -> list[Assessment]:
        return assess(self.spool.recordings(), time.time(), self.config.upload)

    def _watch_deadlines(self, beat: Beat) -> None:
        """Every few seconds, online or not: the tally's alert and a log line when a threshold is passed."""
        while not self._stopping:
            beat()
            self._check_deadlines()
            self._sleep(self._watch_interval, beat)

    def _check_deadlines(self) -> None:
        assessments = self.upload_deadlines()
        worst = worst_warning(assessments)
        if worst != self._announced:
            if worst is not None:
                late = [a.recording.session for a in assessments if a.level is not Level.OK]
                log.warning("upload deadline: %d recording(s) not receipted by central %g h after they "
                            "ended: %s", len(late), worst, ", ".join(late))
            self.controller.set_upload_alert(worst is not None)
            self._announced = worst

    def _sleep(self, seconds: float, beat: Beat) -> None:
        end = time.monotonic() + seconds
        while not self._stopping and (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 1.0))
            beat()

    def _free_bytes(self) -> int:
        try:
            return self.hal.storage.free_bytes()
        except (HalError, OSError) as err:
            log.error("cannot tell the free space of the spool's storage: %s", err)
            return 0

    def _prune(self, beat: Beat) -> None:
        """Free the spool of sessions central has proven it holds: at start, after each session, then every few
        minutes (receipts and the free space change meanwhile)."""
        while not self._stopping:
            beat()
            self.pruner.run(beat=beat)
            end = time.monotonic() + PRUNE_INTERVAL_S
            while not self._stopping and not self._prune_now.is_set() and (left := end - time.monotonic()) > 0:
                self._prune_now.wait(min(left, 1.0))
                beat()
            self._prune_now.clear()

    def _on_state(self, state: State | None) -> None:
        if state is State.IDLE:
            self._prune_now.set()

    def _watchdog(self, beat: Beat) -> None:
        """Tell systemd the service is alive, but only while every supervised thread is (WatchdogSec=)."""
        while not self._stopping:
            beat()
            problems = self.supervisor.problems()
            if problems:
                self.notifier.status("; ".join(problems))
                if self.notifier.watchdog_enabled and not self._hung_marker.exists():
                    # systemd will restart the service: the next start says why the session broke off.
                    try:
                        atomic_write(self._hung_marker, "; ".join(problems).encode())
                    except StorageFault as err:
                        log.error("cannot note the hang for the next start: %s", err)
            else:
                self._hung_marker.unlink(missing_ok=True)
                self.notifier.watchdog()
            self._sleep(self.notifier.interval_s, beat)

    def health(self) -> dict[str, Any]:
        backlog = self.spool.backlog()
        at_risk = [a.as_dict() for a in self.upload_deadlines() if a.level is not Level.OK]
        return {
            "state": self.controller.machine.state.value,
            "session": self.controller.session_id,
            "backlog_entries": backlog.entries,
            "backlog_bytes": backlog.bytes,
            "oldest_unreceipted_s": backlog.oldest_age_s,
            "free_bytes": (free := self._free_bytes()),
            "recording_hours_left": round(recording_hours(free, self.config.video.bitrate), 1),
            "clock_synced": self.hal.clock.is_synchronised(),
            "last_fault": self.controller.last_fault,
            "backend": self.hal.backend,
            "upload_alerts": at_risk,
            "alerts": [{"id": a.id, "kind": a.kind, "session": a.session, "cause": a.cause, "time": a.time}
                       for a in self.alerts.waiting()],
            "threads": self.supervisor.problems(),
            "bookings": self.bookings.summary(self.hal.clock.now(), self.hal.clock.tz),
            "room": self._room(),
            "broker_connected": self.uploader.connected,
            "broker_refuses": self.uploader.refused_by_broker,
            "pid": os.getpid(),
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }

    def _room(self) -> dict[str, Any] | None:
        """The room sensor's reading; None without a sensor."""
        sensor = self.hal.sensor
        if sensor is None:
            return None
        reading = sensor.reading()
        return {"sensor": sensor.kind, "occupied": reading.occupied,
                "since": reading.since.isoformat(timespec="seconds")}

    def _write_status(self, state: State | None) -> None:
        """Record the state for `recorder status`; None means the service has stopped."""
        health = self.health()
        if state is None:
            health["state"] = "stopped"
        data = json.dumps(health, ensure_ascii=False, indent=1).encode()
        path = self.config.device.state_dir / "status.json"
        try:
            atomic_write(path, data)
        except StorageFault as err:
            # A full disk has no room for a new file: overwrite the old one in place (a status fits in the
            # blocks it already has), so `recorder status` still shows the fault that filled the disk.
            try:
                with path.open("r+b") as f:
                    f.write(data)
                    f.truncate()
            except OSError as again:
                log.error("status file not written: %s; %s", err, again)

    def start(self) -> None:
        self.controller.start()
        if self.recovery.resumable is not None:
            self.controller.take_up(self.recovery.resumable)
        self.uploader.start()
        self._buttons = self.hal.buttons(self.controller.on_button, self.controller.on_brushed,
                                        self.controller.on_held)
        self.supervisor.spawn("deadlines", self._watch_deadlines, silence_s=30.0)
        self.supervisor.spawn("watchdog", self._watchdog, silence_s=30.0)
        self.supervisor.spawn("pruner", self._prune, silence_s=120.0)
        self.supervisor.spawn("room", self.room.run, silence_s=30.0)
        self._write_status(State.IDLE)
        self.notifier.ready()
        log.info("recorder %s up on the %s backend; spool %s", self.config.device.id, self.hal.backend,
                 self.config.spool_dir)

    def stop(self) -> None:
        self.notifier.stopping()
        self._stopping = True
        self.room.stop()
        self.supervisor.stop()
        if self._buttons is not None:
            self._buttons.close()
            self._buttons = None
        self.controller.request_stop()
        self.controller.join()
        self.uploader.stop()
        self._write_status(None)
        self.bookings.close()
        self.hal.close()


def wait_for_state(service: Service, state: State, timeout: float) -> bool:
    """True once the device is in `state`; for IDLE, also with no session left open."""
    deadline = time.monotonic() + timeout
    while True:
        controller = service.controller
        if controller.machine.state is state and (state is not State.IDLE or controller.session_id is None):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
