"""The composition root: builds every part from the configuration, starts them in order and stops them
in reverse. Nothing else in the service constructs hardware or reads the configuration file."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
from typing import Any

from capture.durable import atomic_write
from capture.errors import StorageFault
from capture.ledger import Appended
from capture.recovery import recover_spool
from capture.spool import Spool
from capture.stamp import find_cjk_font
from firmware_py.config import Config
from firmware_py.controller import Controller
from firmware_py.deadlines import Assessment, Level, assess, worst_warning
from firmware_py.prompts import PromptCache, PromptError, notice_prompts
from firmware_py.state_machine import State
from hal.buttons.base import Buttons
from hal.camera.base import VideoFormat
from hal.factory import Hal, HalSettings, build_hal
from mqtt.uploader import Uploader
from provisioning.identity import DeviceIdentity

log = logging.getLogger(__name__)


def hal_settings(config: Config, backend: str | None = None) -> HalSettings:
    v = config.video
    pins = config.hal.pins
    return HalSettings(
        backend=backend or config.hal.backend,  # type: ignore[arg-type]
        video=VideoFormat(v.width, v.height, v.fps, v.bitrate),
        sample_rate=config.audio.sample_rate,
        timezone=config.device.timezone,
        storage_root=config.spool_dir,
        pins={"start": pins.start, "stop": pins.stop, "mark": pins.mark, "tally": pins.tally},
        stop_hold_seconds=config.session.stop_hold_seconds,
    )


class Service:
    def __init__(self, config: Config, hal: Hal | None = None) -> None:
        self.config = config
        self.hal = hal or build_hal(hal_settings(config))
        self.identity = DeviceIdentity.load_or_create(config.keys_dir)
        self.spool = Spool(config.spool_dir)
        self.prompts = PromptCache(config.prompt_dir, config.audio.sample_rate, config.notice.words_per_minute)
        self._warm_prompts()
        if not config.device.central_public_key:
            message = ("device.central_public_key is not set: recordings are stored UNENCRYPTED on this device; "
                       "set it to central's X25519 public key (recorder central-key prints one)")
            log.warning(message)
        m = config.mqtt
        self.uploader = Uploader(self.spool, config.device.id, m.host, m.port, m.topic_prefix, m.keepalive,
                                 m.retry_max_seconds, status=self.health, tls=m.tls,
                                 live_session=lambda: self.controller.session_id, resend_after=m.resend_seconds)
        self.recovered = recover_spool(config.spool_dir, self.identity, self.hal.clock, self._on_entry)
        self.controller = Controller(config, self.hal, self.identity, self.prompts, find_cjk_font(), self._on_entry)
        self.controller.state_listeners.append(self._write_status)
        self._buttons: Buttons | None = None
        self._stopping = threading.Event()
        self._watch_interval = 5.0
        self._watch = threading.Thread(target=self._watch_deadlines, name="deadlines", daemon=True)

    def _warm_prompts(self) -> None:
        # Rendering at start keeps espeak-ng off the START-to-notice path; a failure here is reported
        # again by every pre-flight, so the service still starts and says what is wrong.
        try:
            for prompt in notice_prompts(self.config.notice):
                self.prompts.load(prompt)
        except PromptError as err:
            log.error("%s", err)

    def _on_entry(self, appended: Appended) -> None:
        self.spool.added(appended)
        self.uploader.wake()

    def upload_deadlines(self) -> list[Assessment]:
        return assess(self.spool.deadlines(), time.time(), self.config.upload)

    def _watch_deadlines(self) -> None:
        """Every few seconds, online or not: the tally's alert and a log line when a threshold is passed."""
        announced: float | None = None
        while not self._stopping.wait(self._watch_interval):
            assessments = self.upload_deadlines()
            worst = worst_warning(assessments, self.config.upload)
            if worst != announced:
                if worst is not None:
                    late = [a.deadline.session for a in assessments if a.level is not Level.OK]
                    log.warning("upload deadline: %d recording(s) not receipted by central %g h after they "
                                "ended: %s", len(late), worst, ", ".join(late))
                self.controller.set_upload_alert(worst is not None)
                announced = worst

    def health(self) -> dict[str, Any]:
        backlog = self.spool.backlog()
        at_risk = [a.as_dict() for a in self.upload_deadlines() if a.level is not Level.OK]
        return {
            "state": self.controller.machine.state.value,
            "session": self.controller.session_id,
            "backlog_entries": backlog.entries,
            "backlog_bytes": backlog.bytes,
            "oldest_unreceipted_s": backlog.oldest_age_s,
            "free_bytes": self.hal.storage.free_bytes(),
            "clock_synced": self.hal.clock.is_synchronised(),
            "last_fault": self.controller.last_fault,
            "backend": self.hal.backend,
            "upload_alerts": at_risk,
            "pid": os.getpid(),
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }

    def _write_status(self, state: State | None) -> None:
        """Record the state for `recorder status`; None means the service has stopped."""
        health = self.health()
        if state is None:
            health["state"] = "stopped"
        try:
            atomic_write(self.config.device.state_dir / "status.json",
                         json.dumps(health, ensure_ascii=False, indent=1).encode())
        except StorageFault as err:
            log.error("status file not written: %s", err)  # a full disk must not stop the session thread

    def start(self) -> None:
        self.controller.start()
        self.uploader.start()
        self._buttons = self.hal.buttons(self.controller.on_button)
        self._watch.start()
        self._write_status(State.IDLE)
        log.info("recorder %s up on the %s backend; spool %s", self.config.device.id, self.hal.backend,
                 self.config.spool_dir)

    def stop(self) -> None:
        self._stopping.set()
        if self._buttons is not None:
            self._buttons.close()
            self._buttons = None
        self.controller.request_stop()
        self.controller.join()
        self.uploader.stop()
        self._write_status(None)
        self.hal.close()


def wait_for_state(service: Service, state: State, timeout: float) -> bool:
    """True once the device is in `state`; for IDLE, also with no session left open."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        controller = service.controller
        if controller.machine.state is state and (state is not State.IDLE or controller.session_id is None):
            return True
        time.sleep(0.01)
    return False
