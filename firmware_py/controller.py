"""The session controller: reacts to buttons and faults by moving the state machine and doing what each
state needs. One thread (the session thread) owns all of it; button callbacks and capture faults only
post to its queue, so no two things ever change a session at once.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capture.errors import CaptureError, InputFault, fault_cause
from capture.ledger import Signer
from capture.live import LiveInputs
from capture.recording import Recording, RecordingParts, SessionMeta
from capture.stamp import Stamper, StampFacts
from evidence.encryption import public_key_from_b64
from evidence.entry import Entry
from evidence.errors import RecorderError, StorageFault
from evidence.layout import new_session_id
from evidence.supervisor import Beat, Spawn, Supervised
from evidence.verify import CLOCK_STEP_S
from firmware_py.config import Config
from firmware_py.preflight import CheckResult, Preflight
from firmware_py.prompts import Prompt, PromptCache, PromptError, failure_prompt, notice_prompts
from firmware_py.state_machine import Event, State, StateMachine
from hal.buttons.base import ButtonName
from hal.errors import HalError
from hal.factory import Hal
from hal.tally.base import TallyPattern

log = logging.getLogger(__name__)

TALLY = {
    State.IDLE: TallyPattern.OFF,
    State.PREFLIGHT: TallyPattern.PREFLIGHT,
    State.NOTICE: TallyPattern.NOTICE,
    State.RECORDING: TallyPattern.RECORDING,
    State.CLOSING: TallyPattern.RECORDING,
    State.FAULT: TallyPattern.FAULT,
}


@dataclass
class Timings:
    """Monotonic times (ns) of the moments the benchmarks measure."""

    tally_on: int | None = None
    notice_first_sample: int | None = None
    sessions_closed: list[str] = field(default_factory=list)


FAULT_FLASH_S = 5.0
"""How long the tally shows the fault pattern for a fault that did not stop the session (a thread that
failed and was restarted), before it shows the state again."""


class Controller:
    def __init__(self, config: Config, hal: Hal, signer: Signer, prompts: PromptCache, font: Path,
                 on_entry: Callable[[Entry], None], spawn: Spawn) -> None:
        self._config = config
        self._spawn = spawn
        self._hal = hal
        self._signer = signer
        self._prompts = prompts
        self._font = font
        self._on_entry = on_entry
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.machine = StateMachine(self._on_transition)
        self._notices = notice_prompts(config.notice)
        self._preflight = Preflight(
            hal, prompts, self._notices + [failure_prompt(c, config.notice.voice_zh) for c in
                                           ("storage", "camera", "microphone", "clock")],
            config.video.bitrate, config.session.max_minutes,
        )
        self._inputs: LiveInputs | None = None
        self._recording: Recording | None = None
        self._early: list[tuple[str, dict[str, Any]]] = []
        """Ledger events that happened before the session's ledger existed (the START press, pre-flight)."""
        self._notice_thread: Supervised | None = None
        self._thread: Supervised | None = None
        self._fault_flash_until: float | None = None
        self._beat: Beat = lambda: None
        self._clock_offset: float | None = None
        self.timings = Timings()
        self._upload_alert = False
        self.last_preflight: list[CheckResult] = []
        self.last_fault: str | None = None
        self.state_listeners: list[Callable[[State], None]] = []

    # ---- inputs from other threads -------------------------------------------------------------
    def on_button(self, name: ButtonName) -> None:
        self._queue.put(("button", name))

    def on_fault(self, fault: RecorderError) -> None:
        self._queue.put(("fault", fault))

    def on_thread_fault(self, thread: str, reason: str) -> None:
        """Supervisor: a thread failed unexpectedly (and was restarted) or hung."""
        self._queue.put(("thread_fault", (thread, reason)))

    def request_stop(self) -> None:
        self._queue.put(("shutdown", None))

    def set_upload_alert(self, on: bool) -> None:
        """A recording is near or past its upload deadline: shown on the tally while the room is idle."""
        self._queue.put(("alert", on))

    # ---- the session thread --------------------------------------------------------------------
    def start(self) -> None:
        self._thread = self._spawn("session", self._run)

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, beat: Beat) -> None:
        self._beat = beat
        while True:
            beat()
            self._tick()
            try:
                kind, value = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if kind == "shutdown":
                if self._recording is not None:
                    self._log_event("service_stopping")
                    self._close_session("service stopped", "service_stopped")
                    self.machine.fire(Event.CLOSED)
                return
            try:
                if kind == "button":
                    self._button(value)
                elif kind == "notice_done":
                    self.machine.fire(Event.NOTICE_DONE)
                elif kind == "fault":
                    self._fault(str(value), fault_cause(value))
                elif kind == "thread_fault":
                    self._thread_fault(*value)
                elif kind == "alert":
                    self._upload_alert = bool(value)
                    self._show_tally(self.machine.state)
            except RecorderError as err:
                log.exception("session thread: %s", err)
                self._fault(str(err), fault_cause(err))

    def _tick(self) -> None:
        """Between events, about twice a second: end a fault flash, and watch the clock while recording."""
        if self._fault_flash_until is not None and time.monotonic() >= self._fault_flash_until:
            self._fault_flash_until = None
            self._show_tally(self.machine.state)
        if self._recording is not None:
            clock = self._hal.clock
            offset = clock.now().timestamp() - clock.monotonic_ns() / 1e9
            if self._clock_offset is not None and abs(offset - self._clock_offset) > CLOCK_STEP_S:
                step = offset - self._clock_offset
                log.warning("the wall clock stepped by %+.1f s during session %s", step, self.session_id)
                self._log_event("clock_step", seconds=round(step, 3))
            self._clock_offset = offset
        else:
            self._clock_offset = None

    def _thread_fault(self, thread: str, reason: str) -> None:
        """A supervised thread failed (it was restarted) or hung: said everywhere, and the session goes on."""
        if thread == "notice":
            # The notice was not given in full: as when it cannot be played, the session does not go on.
            self._fault(f"notice: {reason}")
            return
        self.last_fault = f"thread {thread}: {reason}"
        log.error("fault: %s", self.last_fault)
        self._log_event("fault", reason=reason, thread=thread)
        if thread == "session" and self.machine.state in (State.PREFLIGHT, State.CLOSING):
            # The session thread failed half-way through starting or closing a session: finish the job as a
            # fault does (what was recorded is closed; START tries again) rather than stay half-way.
            self._enter_fault(f"thread session: {reason}")
        self._fault_flash_until = time.monotonic() + FAULT_FLASH_S
        self._hal.tally.show(TallyPattern.FAULT)
        for listener in self.state_listeners:
            listener(self.machine.state)

    def _show_tally(self, state: State) -> None:
        pattern = TALLY[state]
        if state is State.IDLE and self._upload_alert:
            pattern = TallyPattern.ALERT
        if self._fault_flash_until is None:
            self._hal.tally.show(pattern)

    def _button(self, name: ButtonName) -> None:
        state = self.machine.state
        if name is ButtonName.START and state in (State.IDLE, State.FAULT):
            self._early = [("button", {"button": name.value})]
            self.machine.fire(Event.START)
            self._begin_session()
            return
        self._log_event("button", button=name.value)
        if name is ButtonName.START:
            return
        elif name is ButtonName.STOP:
            if self.machine.fire(Event.STOP):
                closed = self._close_session("stop button held", "stop_button")
                self.machine.fire(Event.CLOSED if closed else Event.FAULT)
        elif name is ButtonName.MARK and state in (State.NOTICE, State.RECORDING):
            self._log_event("mark", label=self._config.session.mark_label)

    def _fault(self, reason: str, cause: str = "device_fault") -> None:
        self.last_fault = reason
        log.error("fault: %s", reason)
        self._log_event("fault", reason=reason)
        self._enter_fault(reason, cause)

    def _enter_fault(self, reason: str, cause: str = "device_fault") -> None:
        """To the fault state, closing what was being recorded on the way."""
        if self.machine.fire(Event.FAULT):
            self._close_session(f"fault: {reason}", "fault_not_cleared", cause)
            self.machine.fire(Event.FAULT)

    def _on_transition(self, source: State, event: Event, target: State) -> None:
        self._fault_flash_until = None
        self._show_tally(target)
        if TALLY[target] is not TallyPattern.OFF and self.timings.tally_on is None:
            self.timings.tally_on = time.monotonic_ns()
        self._log_event("state", source=source.value, event=event.value, target=target.value)
        log.info("state %s --%s--> %s", source.value, event.value, target.value)
        for listener in self.state_listeners:
            listener(target)

    def _log_event(self, name: str, **details: Any) -> None:
        if self._recording is not None:
            try:
                self._recording.event(name, **details)
            except StorageFault as err:
                # The disk took no more (the fault this often reports): the service's log keeps the
                # event, and the session thread goes on to show the fault and close what it can.
                log.error("ledger refused event %s %s: %s", name, details, err)
        elif self.machine.state is State.PREFLIGHT:
            self._early.append((name, details))
        else:
            log.debug("no session: %s %s not recorded in a ledger", name, details)

    # ---- session steps -------------------------------------------------------------------------
    def _meta(self) -> SessionMeta:
        d, s = self._config.device, self._config.session
        return SessionMeta(d.unit, d.room, d.location, d.id, tuple((o.name, o.certificate) for o in s.officers),
                           s.case, s.matter, s.parties)

    def _begin_session(self) -> None:
        cfg = self._config
        meta = self._meta()
        session_id = new_session_id(self._hal.clock.now())
        facts = StampFacts(meta.room, meta.location, meta.device_id, meta.officers, session_id)
        stamper = Stamper(facts, self._hal.clock, cfg.video.width, cfg.video.height, self._font,
                          lambda: self._recording.segmenter.current_index if self._recording else 0)
        inputs = LiveInputs(self._hal.camera, self._hal.microphone)
        self._inputs = inputs
        inputs.start(stamper)
        results = self._preflight.run(inputs)
        self.last_preflight = results
        failed = [r for r in results if not r.ok]
        blocking = [r for r in failed if r.name not in cfg.session.continue_on]
        for r in results:
            self._early.append(("preflight", {"check": r.name, "ok": r.ok, "detail": r.detail}))
        if blocking:
            inputs.stop()
            self._inputs = None
            self._early.clear()
            self.last_fault = "; ".join(f"{r.name}: {r.detail}" for r in blocking)
            log.error("pre-flight failed, session not started: %s", self.last_fault)
            self.machine.fire(Event.PREFLIGHT_FAILED)
            self._speak_failures(blocking)
            return
        for r in failed:
            log.warning("pre-flight: %s: %s (configured to continue)", r.name, r.detail)
        recipient = public_key_from_b64(cfg.device.central_public_key) if cfg.device.central_public_key else None
        parts = RecordingParts(self._hal.clock, self._signer, self._hal.camera.format,
                               self._hal.microphone.sample_rate, cfg.session.segment_seconds,
                               self._hal.camera.request_keyframe, recipient, self._spawn)
        self._recording = Recording(
            parts, cfg.spool_dir, session_id, meta,
            {"preflight_warnings": [r.name for r in failed], "clock_synced": self._hal.clock.is_synchronised()},
            self.on_fault, self._on_entry,
        )
        early, self._early = self._early, []
        for name, details in early:
            self._recording.event(name, **details)
        inputs.attach(self._recording.segmenter.push_video, self._recording.segmenter.push_audio)
        # The notice must be inside the recording: wait for its first frame (at most a frame or two).
        if not inputs.recording_started.wait(self._preflight.device_timeout):
            raise InputFault("camera", "the camera stopped delivering frames as the recording began")
        self.machine.fire(Event.PREFLIGHT_OK)
        self._speak_failures(failed)
        self._notice_thread = self._spawn("notice", self._play_notices, restart=False, silence_s=3600.0)

    def _speak_failures(self, failed: list[CheckResult]) -> None:
        for result in failed:
            if result.name == "prompts":
                continue  # the very thing that would speak is broken; the tally shows the fault
            try:
                self._hal.speaker.play(self._prompts.load(failure_prompt(result.name, self._config.notice.voice_zh)))
            except (PromptError, HalError, KeyError) as err:
                log.error("cannot speak the pre-flight failure %s: %s", result.name, err)

    def _play_notices(self, beat: Beat) -> None:
        recording = self._recording
        assert recording is not None
        for prompt in self._notices:
            self._play_notice(recording, prompt)
        self._queue.put(("notice_done", None))

    def _play_notice(self, recording: Recording, prompt: Prompt) -> None:
        started: dict[str, Any] = {}

        def first_sample() -> None:
            started["mono_ns"] = time.monotonic_ns()
            started["time"] = self._hal.clock.now().isoformat(timespec="milliseconds")
            if self.timings.notice_first_sample is None:
                self.timings.notice_first_sample = started["mono_ns"]

        try:
            pcm = self._prompts.load(prompt)
            self._hal.speaker.play(pcm, on_first_sample=first_sample)
        except (PromptError, HalError) as err:
            self.on_fault(CaptureError(f"notice {prompt.key} could not be played: {err}"))
            return
        try:
            recording.event("notice", prompt=prompt.key, text=prompt.text, voice=prompt.voice,
                            started=started.get("time"), started_mono_ns=started.get("mono_ns"),
                            seconds=round(len(pcm) / self._hal.speaker.sample_rate, 3))
        except StorageFault as err:
            self.on_fault(err)

    def _close_session(self, reason: str, code: str, cause: str | None = None) -> bool:
        """Stop the inputs and close the session's record; False if its closing entry could not be written
        (the session is then closed by crash recovery at the next start)."""
        notice = self._notice_thread
        while notice is not None and notice.is_alive():
            # Never cut the notice short: the recording must show it was given in full.
            notice.join(0.5)
            self._beat()
        self._notice_thread = None
        if self._inputs is not None:
            self._inputs.stop()
            self._inputs = None
        recording = self._recording
        if recording is None:
            return True
        closed = True
        try:
            # Still the live session while its last segment and closing entry are written, so they
            # are uploaded ahead of any backlog.
            recording.close(reason, code, cause)
        except Exception as err:
            # Whatever failed (a storage fault, a failing card), the session ends here; what it wrote stays,
            # and the next start seals and closes it.
            log.error("closing session %s: %s", recording.session_id, err, exc_info=not isinstance(err, StorageFault))
            self.last_fault = f"closing session {recording.session_id}: {err}"
            closed = False
        finally:
            self._recording = None
        self.timings.sessions_closed.append(recording.session_id)
        log.info("session %s closed: %s", recording.session_id, reason)
        return closed

    @property
    def session_id(self) -> str | None:
        return self._recording.session_id if self._recording else None
