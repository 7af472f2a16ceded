"""The session controller: reacts to buttons and faults by moving the state machine and doing what each
state needs. One thread (the session thread) owns all of it; button callbacks, capture faults and the voice
only post to its queue, so no two things ever change a session at once.

A fault while recording does not end the session (INTERRUPT, CONTINUOUS): the run of segments is ended,
the fault is spoken and shown, and the controller keeps trying to start the inputs again. When they deliver,
recording resumes in the same session (the break's `interruption` entry is written with the run's first
frame), the device asks for the reason, and the notice is given again. If the cause persists for
`session.cannot_continue_after_seconds`, the device says recording cannot continue and closes the session.
"""

from __future__ import annotations

import datetime as dt
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
from capture.recording import MediaTime, Recording, RecordingParts, SessionMeta, record_declined
from capture.recovery import Resumable
from capture.stamp import Stamper, StampFacts
from evidence.alert import CANNOT_CONTINUE, OVERRUN, Alert, MalformedAlert, room_alert, session_alert
from evidence.booking import Booking
from evidence.encryption import public_key_from_b64
from evidence.entry import BookingRef, Entry, Opening
from evidence.errors import RecorderError, StorageFault
from evidence.layout import new_session_id
from evidence.reasons import DECLINE_REASONS
from evidence.supervisor import Beat, Spawn, Supervised
from evidence.verify import CLOCK_STEP_S
from firmware_py.bookings import AUTO_STARTED, DECLINED, STARTED, BookingCache, booking_ref
from firmware_py.config import Config
from firmware_py.explaining import Explanation, SpokenMenu, reason_options
from firmware_py.preflight import CheckResult, Preflight, bytes_needed
from firmware_py.prompts import Prompt, PromptCache, failure_prompt, notice_prompts
from firmware_py.state_machine import Event, State, StateMachine
from firmware_py.voice import Utterance, Voice
from firmware_py.words import Words
from hal.audio.base import Pcm
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
    State.INTERRUPTED: TallyPattern.FAULT,
    State.EXPLAINING: TallyPattern.NOTICE,
    State.DECLINING: TallyPattern.OFF,  # nothing is recorded, and the light says so to everyone in the room
}
RECORDING_STATES = (State.NOTICE, State.RECORDING, State.EXPLAINING)
"""States in which the inputs feed a run of segments."""
CLOSING_TAIL_S = 0.5
CLOSING_WORDS_S = 30.0
"""The longest the closing statement may take to be said (it takes about 5 s) before the session closes
without it."""


@dataclass
class Timings:
    """Monotonic times (ns) of the moments the benchmarks measure."""

    tally_on: int | None = None
    notice_first_sample: int | None = None
    sessions_closed: list[str] = field(default_factory=list)
    sessions_declined: list[str] = field(default_factory=list)
    resumed: list[int] = field(default_factory=list)
    """When each resumed run's first frame was recorded."""


FAULT_FLASH_S = 5.0
"""How long the tally shows the fault pattern for a fault that did not stop the session (a thread that
failed and was restarted), before it shows the state again."""
RESUME_WAIT_S = 2.0
"""How long one attempt to resume waits for a frame and for sound before it stops the inputs and retries."""


@dataclass
class Break:
    """The session's recording is broken off; the controller is trying to resume it."""

    cause: str
    reason: str
    since: float
    """time.monotonic() when it broke."""
    notice_owed: bool
    """The notice was not given in full before the break: it is given again whatever the configuration."""
    next_attempt: float
    attempt_started: float | None = None
    attempts: int = 0
    said: list[Utterance] = field(default_factory=list)
    """The fault as spoken; what is not said yet when recording resumes is dropped (the question says it)."""


class Controller:
    def __init__(self, config: Config, hal: Hal, signer: Signer, prompts: PromptCache, font: Path,
                 on_entry: Callable[[Entry], None], spawn: Spawn,
                 on_alert: Callable[[Alert], None], bookings: BookingCache | None = None) -> None:
        self._config = config
        self._bookings = bookings
        self._lead = dt.timedelta(minutes=config.room.booking_lead_minutes)
        self._on_alert = on_alert
        self._spawn = spawn
        self.voice = Voice(hal.speaker, prompts, hal.clock, spawn)
        self._words = Words(config.notice)
        self._hal = hal
        self._signer = signer
        self._prompts = prompts
        self._font = font
        self._on_entry = on_entry
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.machine = StateMachine(self._on_transition)
        self._notice_prompts = notice_prompts(config.notice)
        self._session_notice: list[Prompt] = self._notice_prompts
        """The notice of the session being recorded: the standard wording, and its booking's matter after the
        Chinese one."""
        self._notice_pcm: dict[str, Pcm] = {}
        """The session's own notice words (its matter), rendered in pre-flight."""
        self._booking: Booking | None = None
        """The booking of the session being recorded, as held (for its words and people)."""
        self.session_booking: BookingRef | None = None
        """The booking the open session was started under, as its `open` entry names it; None without one."""
        self._preflight = Preflight(
            hal, prompts, self._notice_prompts + [failure_prompt(c, config.notice.voice_zh) for c in
                                           ("storage", "camera", "microphone", "clock")],
            config.video.bitrate, config.session.max_minutes,
        )
        self._inputs: LiveInputs | None = None
        self._stamper: Stamper | None = None
        self._recording: Recording | None = None
        self._early: list[tuple[str, dict[str, Any]]] = []
        """Ledger events that happened before the session's ledger existed (the START press, pre-flight)."""
        self._notices: list[Utterance] = []
        """The notice prompts being given, until each has been said."""
        self._break: Break | None = None
        self._explanation: Explanation | None = None
        self._declining: SpokenMenu | None = None
        self._reserve = bytes_needed(config.video.bitrate, 1)
        """Free space below which recording breaks off as storage full: a minute of recording, so the
        ledger's interruption and close entries always find room."""
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

    def on_brushed(self, name: ButtonName) -> None:
        """Buttons: STOP was let go before the hold time."""
        self._queue.put(("brushed", name))

    def on_held(self, name: ButtonName) -> None:
        """Buttons: MARK was held (for as long as STOP must be)."""
        self._queue.put(("held", name))

    def on_fault(self, fault: RecorderError) -> None:
        self._queue.put(("fault", fault))

    def on_thread_fault(self, thread: str, reason: str) -> None:
        """Supervisor: a thread failed unexpectedly (and was restarted) or hung."""
        self._queue.put(("thread_fault", (thread, reason)))

    def request_stop(self) -> None:
        self._queue.put(("shutdown", None))

    def take_up(self, resumable: Resumable) -> None:
        """After a restart: resume the session the last run left open (recovery found it recent enough)."""
        self._queue.put(("resume", resumable))

    def set_upload_alert(self, on: bool) -> None:
        """A recording is near or past its upload deadline: shown on the tally while the room is idle."""
        self._queue.put(("alert", on))

    def auto_start(self, booking: Booking) -> None:
        """The booking's start time has come and it asks for an automatic start: exactly as START (pre-flight,
        then the notice), unless a session is open by the time the session thread gets to it."""
        self._queue.put(("auto_start", booking))

    def remind(self) -> None:
        """People in the room and no session open (NO-RECORD): say so, unless a session has begun meanwhile."""
        self._queue.put(("remind", None))

    def overrun(self, session: str) -> None:
        """`session` still records well after its booking's end, with nobody in the room: ask to end it."""
        self._queue.put(("overrun", session))

    def room_alert(self, kind: str, session: str | None, sensor: str, detail: str, since: dt.datetime) -> None:
        """Tell central about the room (`unrecorded_presence` with no session, `overrun` about `session`)."""
        self._queue.put(("room_alert", (kind, session, sensor, detail, since)))

    # ---- the session thread --------------------------------------------------------------------
    def start(self) -> None:
        self.voice.start()
        self._thread = self._spawn("session", self._run)

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
        self.voice.stop()

    def _run(self, beat: Beat) -> None:
        self._beat = beat
        while True:
            beat()
            self._tick()
            # Quick turns while a break is being mended or explained: resuming is measured in frames.
            wait = 0.05 if self.machine.state in (State.INTERRUPTED, State.EXPLAINING) else 0.5
            try:
                kind, value = self._queue.get(timeout=wait)
            except queue.Empty:
                continue
            if kind == "shutdown":
                self._shut_down()
                return
            try:
                if kind == "button":
                    self._button(value)
                elif kind == "brushed":
                    self._brushed(value)
                elif kind == "held":
                    self._held(value)
                elif kind == "spoken":
                    self._spoken(value)
                elif kind == "resume":
                    self._take_up(value)
                elif kind == "fault":
                    self._fault(str(value), fault_cause(value))
                elif kind == "thread_fault":
                    self._thread_fault(*value)
                elif kind == "alert":
                    self._upload_alert = bool(value)
                    self._show_tally(self.machine.state)
                elif kind == "auto_start":
                    self._auto_start(value)
                elif kind == "remind":
                    self._remind()
                elif kind == "overrun":
                    self._overrun(value)
                elif kind == "room_alert":
                    self._room_alert(*value)
            except RecorderError as err:
                log.exception("session thread: %s", err)
                self._fault(str(err), fault_cause(err))

    def _tick(self) -> None:
        """Between events: end a fault flash, watch the inputs, the disk, the power and the clock while
        recording, mend a break, and move an explanation or a decline menu along."""
        if self._fault_flash_until is not None and time.monotonic() >= self._fault_flash_until:
            self._fault_flash_until = None
            self._show_tally(self.machine.state)
        state = self.machine.state
        if state in RECORDING_STATES:
            problem = self._recording_problem()
            if problem is not None:
                self._fault(str(problem), problem.cause)
                return
        if state is State.INTERRUPTED:
            self._mend()
        elif state is State.EXPLAINING and self._explanation is not None:
            self._explanation.tick()
            self._explained()
        elif state is State.DECLINING and self._declining is not None:
            self._declining.tick()
            self._decline_if_chosen()
        self._watch_clock()

    def _recording_problem(self) -> InputFault | None:
        """What stops the recording from being whole: an input gone quiet, the disk nearly full, the power."""
        s = self._config.session
        stalled = self._inputs.stalled(s.input_timeout_seconds) if self._inputs is not None else None
        if stalled is not None:
            return stalled
        if self._hal.storage.free_bytes() < self._reserve:
            return InputFault("storage_full", f"storage is nearly full: less than {self._reserve / 1e6:.0f} MB left")
        if self._hal.power.state().under_voltage:
            return InputFault("undervoltage", "the power supply is under-voltage")
        return None

    def _watch_clock(self) -> None:
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
        self.last_fault = f"thread {thread}: {reason}"
        log.error("fault: %s", self.last_fault)
        self._log_event("fault", reason=reason, thread=thread)
        if thread == "session" and self.machine.state in (State.PREFLIGHT, State.CLOSING):
            # The session thread failed half-way through starting or closing a session: finish the job as a
            # fault does (what was recorded is closed; START tries again) rather than stay half-way.
            self._enter_fault(f"thread session: {reason}")
        elif thread == "session" and self.machine.state is State.DECLINING:
            self._end_declining()  # back to idle, so START works again
        elif self._recording is not None:
            self._say(self._words.recovered())
        # The status file first: whoever sees the light flash finds the reason already written.
        for listener in self.state_listeners:
            listener(self.machine.state)
        self._fault_flash_until = time.monotonic() + FAULT_FLASH_S
        self._hal.tally.show(TallyPattern.FAULT)

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
            self.voice.tone("start")
            self.machine.fire(Event.START)
            self._begin_session(self._current_booking(), STARTED)
            return
        self._log_event("button", button=name.value)
        if self._declining is not None and state is State.DECLINING:
            if name is ButtonName.STOP:
                self._declining.take("cancel")  # STOP held: the officer does not want to decline after all
            elif self._declining.button(name):
                self.voice.tone("mark" if name is ButtonName.MARK else "start")
            self._decline_if_chosen()
        elif self._explanation is not None and state is State.EXPLAINING and self._explanation.button(name):
            self.voice.tone("mark" if name is ButtonName.MARK else "start")
            self._explained()
        elif name is ButtonName.STOP:
            if self.machine.fire(Event.STOP):
                self.voice.tone("stop")
                if state in RECORDING_STATES and self._config.notice.closing_statement:
                    self._say_closing_statement()
                closed = self._close_session("stop button held", "stop_button")
                self.machine.fire(Event.CLOSED if closed else Event.FAULT)
        elif name is ButtonName.MARK and state in (State.NOTICE, State.RECORDING):
            self.voice.tone("mark")
            self._log_event("mark", label=self._config.session.mark_label)
        elif self._recording is not None:
            self.voice.tone("refused")  # heard, but it does nothing now (START while recording)

    def _held(self, name: ButtonName) -> None:
        """MARK held while idle: declining to record (NO-RECORD), through the spoken menu."""
        if name is not ButtonName.MARK or self._recording is not None or not self.machine.fire(Event.DECLINE):
            return
        words = self._words
        options = [(code, words.decline_option(code)) for code in ("cancel", *DECLINE_REASONS)]
        # The menu's first option ("cancel") is said after the introduction, as what silence will take.
        self._declining = SpokenMenu(self.voice, words.decline_intro() + options[0][1], options,
                                     self._config.session.menu_seconds, self._on_spoken)

    def _decline_if_chosen(self) -> None:
        menu = self._declining
        if menu is None or menu.result is None:
            return
        code = menu.result[0]
        if code == "cancel":
            log.info("declining cancelled: nothing written")
            self._say(self._words.decline_cancelled())
            self._end_declining()
            return
        session_id = new_session_id(self._hal.clock.now())
        booking = self._current_booking()
        try:
            record_declined(self._parts(), self._config.spool_dir, session_id, self.session_meta(booking), code,
                            DECLINE_REASONS[code].zh, self._on_entry, self._open_extra(booking))
        except Exception as err:
            # Whatever failed (a full or read-only disk), the device goes back to idle, ready for START.
            self.last_fault = f"the declined session could not be written: {err}"
            log.error("%s", self.last_fault)
            self._say(self._words.fault(fault_cause(err) if isinstance(err, RecorderError) else "storage_full"))
            self._end_declining()
            return
        log.info("session %s declined (%s): nothing recorded", session_id, code)
        if booking is not None and self._bookings is not None:
            self._bookings.mark(booking, DECLINED)  # declined: never started automatically afterwards
        self.timings.sessions_declined.append(session_id)
        self._say(self._words.declined(code))
        self._declining = None
        self.machine.fire(Event.DECLINED)

    def _end_declining(self) -> None:
        """Back to idle with nothing written."""
        if self._declining is not None:
            self._declining.close()
            self._declining = None
        self.machine.fire(Event.CANCELLED)

    def _brushed(self, name: ButtonName) -> None:
        """A STOP let go too soon does nothing, but is never silent: the officer hears how to stop, and the
        ledger shows the press."""
        if self._recording is None:
            return
        self._log_event("brushed_stop", button=name.value)
        self._say(self._words.hold_to_stop())

    def _say_closing_statement(self) -> None:
        """The closing statement with the end time, said into the recording before it closes (the inputs
        still run) and in the ledger before the close. What the explanation or a fault still had to say is
        dropped (the session is ending); the notice is not, and is said first."""
        self.voice.cancel([u for u in self.voice.waiting() if u not in self._notices])
        booking = self._booking
        ended = self._words.ended(self._hal.clock.now(), *((booking.act, booking.matter) if booking else ()))
        said = [self.voice.say(p, cache=False) for p in ended]
        deadline = time.monotonic() + CLOSING_WORDS_S
        while not all(u.done.wait(0.25) for u in said):
            self._beat()
            if time.monotonic() > deadline:
                self.voice.cancel(said)
                break
        # The speaker's last samples reach the room, and the microphone's buffer the segmenter, a little after
        # play() returns: a moment of room tone keeps the statement's last syllable inside the recording.
        time.sleep(CLOSING_TAIL_S)
        for utterance in said:
            if utterance.done.is_set() and utterance.error != "cancelled":
                self._log_spoken(utterance)
            else:
                self._log_event("spoken", prompt=utterance.key, text=utterance.text, voice=utterance.voice,
                                started=None, seconds=0.0, error=f"not said within {CLOSING_WORDS_S:g} s of STOP")

    # ---- the room: bookings and the room sensor (ROOM, NO-RECORD) --------------------------------------
    def _auto_start(self, booking: Booking) -> None:
        state = self.machine.state
        if self._recording is not None or state not in (State.IDLE, State.FAULT):
            log.info("booking %s: not started automatically, the device is %s", booking.id, state.value)
            return
        log.info("booking %s (%s %s): its start time, starting the session automatically", booking.id,
                 booking.act, booking.matter)
        self._early = [("booking_start", {"booking": booking.id, "version": booking.version})]
        self.voice.tone("start")
        self.machine.fire(Event.START)
        self._begin_session(booking, AUTO_STARTED)

    def _remind(self) -> None:
        if self._recording is not None or self.machine.state not in (State.IDLE, State.FAULT):
            return  # a session began (or is being declined) since the room watch looked
        log.warning("people in the room and no session open: reminding them to press START")
        self._say(self._words.reminder())

    def _overrun(self, session: str) -> None:
        if self.session_id != session or self.machine.state not in RECORDING_STATES:
            return
        log.warning("session %s still records after its booking's end, nobody in the room: asking to end it",
                    session)
        self._say(self._words.overrun())  # into the recording: its `spoken` events say it was asked

    def _room_alert(self, kind: str, session: str | None, sensor: str, detail: str, since: dt.datetime) -> None:
        """Made here, on the session thread, from what the session (or the booking under way) says of itself."""
        recording = self._recording
        if kind == OVERRUN:
            if recording is None or recording.session_id != session:
                return
            meta = SessionMeta.of(recording.opening, self._config.device.id)
        else:
            if recording is not None:
                return
            meta = self.session_meta(self._current_booking())
        clock = self._hal.clock
        try:
            alert = room_alert(kind, self._config.device.id, session or "", meta.as_body(), sensor, detail,
                               since.isoformat(timespec="milliseconds"), clock.now().isoformat(timespec="milliseconds"),
                               clock.is_synchronised(), self._signer.sign)
        except MalformedAlert as err:
            log.error("alert to central not made: %s", err)
            return
        self._on_alert(alert)

    def _fault(self, reason: str, cause: str = "device_fault") -> None:
        state = self.machine.state
        if state is State.INTERRUPTED:
            self._attempt_failed(reason)
            return
        self.last_fault = reason
        log.error("fault: %s", reason)
        self._log_event("fault", reason=reason)
        if state in RECORDING_STATES:
            self._interrupt(cause, reason)
        else:
            self._enter_fault(reason, cause)

    def _enter_fault(self, reason: str, cause: str = "device_fault") -> None:
        """To the fault state, closing what was being recorded on the way."""
        if self.machine.fire(Event.FAULT):
            self._close_session(f"fault: {reason}", "fault_not_cleared", cause)
            self.machine.fire(Event.FAULT)

    def _shut_down(self) -> None:
        """The service is stopping. An open session is an interruption, not an end (a reboot, an update): its
        run is sealed and it is left open for the next start to take up; with resuming off it is closed."""
        recording = self._recording
        if recording is None:
            return
        self._log_event("service_stopping")
        if self._config.session.resume_within_minutes == 0:
            self._close_session("service stopped", "service_stopped")
            self.machine.fire(Event.CLOSED)
            return
        self._stop_inputs()
        try:
            recording.end_run("service_restart", "the recording service was stopped")
        except RecorderError as err:
            log.error("session %s: ending the run: %s", recording.session_id, err)
        log.warning("session %s left open: the service is stopping; the next start takes it up again",
                    recording.session_id)

    def _take_up(self, resumable: Resumable) -> None:
        cfg = self._config
        first = resumable.entries[0].opening
        assert first is not None
        booking = self._booking_of(first)
        self._recording = recording = Recording.resume(
            self._parts(), resumable.session_dir, resumable.entries, resumable.cause, resumable.detail,
            self.on_fault, self._on_entry, self.session_meta(booking))
        opening = recording.opening  # with the personal fields as this device knows them (sealed in the entry)
        self._use_booking(booking, first.booking)
        officers = tuple((o.name, o.certificate) for o in opening.officers)
        facts = StampFacts(opening.room, opening.location, cfg.device.id, officers, recording.session_id,
                           first.booking.act if first.booking else "", opening.matter, opening.case)
        self._stamper = Stamper(facts, self._hal.clock, cfg.video.width, cfg.video.height, self._font,
                                lambda: self._recording.current_index if self._recording else 0)
        self._inputs = LiveInputs(self._hal.camera, self._hal.microphone)
        # A session that never reached `recording` was cut off in its notice, which is then owed in full.
        reached = any(e.body.get("name") == "state" and e.body.get("target") == State.RECORDING.value
                      for e in resumable.entries)
        now = time.monotonic()
        self._break = Break(resumable.cause, resumable.detail, now, not reached, now)
        self.machine.fire(Event.RESUME)
        log.warning("taking up session %s again (%s)", recording.session_id, resumable.cause)

    # ---- breaks ----------------------------------------------------------------------------------
    def _interrupt(self, cause: str, reason: str) -> None:
        """Recording broke off while a session was open: end the run, say so, and start mending."""
        recording = self._recording
        assert recording is not None
        notice_owed = self.machine.state is State.NOTICE or (self._break is not None and self._break.notice_owed)
        self._explanation = None
        self.machine.fire(Event.FAULT)
        self._stop_inputs()
        try:
            recording.end_run(cause, reason)
        except RecorderError as err:
            # The disk took no more: what the run wrote stays on disk and is sealed at the next attempt.
            log.error("session %s: ending the run: %s", recording.session_id, err)
        now = time.monotonic()
        self._break = Break(cause, reason, now, notice_owed, now + self._config.session.resume_retry_seconds)
        log.warning("session %s interrupted (%s): %s; trying to resume", recording.session_id, cause, reason)
        self._break.said = self._say(self._words.fault(cause))

    def _mend(self) -> None:
        """One step towards resuming: start an attempt when it is time, and see how the current one does."""
        b, recording, s = self._break, self._recording, self._config.session
        if b is None or recording is None:
            return
        now = time.monotonic()
        if now - b.since >= s.cannot_continue_after_seconds:
            self._cannot_continue(b)
            return
        if b.attempt_started is None:
            if now >= b.next_attempt:
                self._attempt(b, recording)
            return
        inputs = self._inputs
        assert inputs is not None
        if inputs.recording_started.is_set():
            if recording.pending is None:
                self._resumed(b, recording)
            else:
                self._attempt_failed("the break could not be written to the ledger")
        elif not inputs.attached and inputs.live_since(int(b.attempt_started * 1e9)):
            inputs.attach(recording.segmenter.push_video, recording.segmenter.push_audio)
        elif now - b.attempt_started > RESUME_WAIT_S:
            self._attempt_failed(f"no frame and sound within {RESUME_WAIT_S:g} s")

    def _can_resume(self, cause: str) -> str | None:
        """Why the cause of the break still holds; None once it may have cleared."""
        if cause == "storage_full" and self._hal.storage.free_bytes() < 2 * self._reserve:
            return f"storage is still nearly full ({self._hal.storage.free_bytes() / 1e6:.0f} MB free)"
        if self._hal.power.state().under_voltage:
            return "the power supply is still under-voltage"
        return None

    def _attempt(self, b: Break, recording: Recording) -> None:
        b.attempts += 1
        held = self._can_resume(b.cause)
        if held is not None:
            b.next_attempt = time.monotonic() + self._config.session.resume_retry_seconds
            log.debug("not resuming yet: %s", held)
            return
        try:
            recording.end_run(None)  # seal what an earlier attempt could not (a disk that was full)
            recording.start_run()
            inputs = self._inputs or LiveInputs(self._hal.camera, self._hal.microphone)
            self._inputs = inputs
            assert self._stamper is not None
            b.attempt_started = time.monotonic()
            inputs.start(self._stamper)
        except (RecorderError, HalError) as err:
            self._attempt_failed(str(err))

    def _attempt_failed(self, reason: str) -> None:
        b, recording = self._break, self._recording
        if b is None or recording is None:
            return
        log.info("resume attempt %d failed: %s", b.attempts, reason)
        self._stop_inputs()
        try:
            recording.end_run(b.cause, b.reason)
        except RecorderError as err:
            log.error("session %s: ending the attempt: %s", recording.session_id, err)
        b.attempt_started = None
        b.next_attempt = time.monotonic() + self._config.session.resume_retry_seconds

    def _resumed(self, b: Break, recording: Recording) -> None:
        entry = recording.last_interruption
        assert entry is not None and entry.interruption is not None
        self.timings.resumed.append(time.monotonic_ns())
        self.voice.cancel(b.said)
        self.machine.fire(Event.RESUMED)
        began = dt.datetime.fromisoformat(str(entry.body["began_wall"]))
        s, words = self._config.session, self._words
        self._explanation = Explanation(
            self.voice, words.interrupted(began, self._hal.clock.now(), b.cause), words.choose(b.cause),
            reason_options(b.cause, words.option), words.chosen, s.explanation_seconds, s.menu_seconds,
            self._media_now, self._log_event, self._on_spoken, entry.seq)
        log.info("session %s resumed after %.1f s (%s)", recording.session_id, time.monotonic() - b.since, b.cause)

    def _media_now(self) -> MediaTime:
        assert self._recording is not None
        return self._recording.media_time(time.monotonic_ns())

    def _explained(self) -> None:
        explanation, b = self._explanation, self._break
        if explanation is None or explanation.step.value != "done":
            return
        self._explanation = None
        self._break = None
        if (b is not None and b.notice_owed) or self._config.session.notice_again:
            self.machine.fire(Event.NOTICE_AGAIN)
            self._give_notice()
        else:
            self.machine.fire(Event.EXPLAINED)

    def _cannot_continue(self, b: Break) -> None:
        reason = f"recording cannot continue: {b.reason} (for {time.monotonic() - b.since:.0f} s)"
        self.last_fault = reason
        log.error("%s", reason)
        self._stop_inputs()
        self._log_event("cannot_continue", cause=b.cause, reason=b.reason, attempts=b.attempts)
        self._say(self._words.cannot_continue(b.cause))
        self._alert_central(b)
        self.machine.fire(Event.CANNOT_CONTINUE)
        if not self._close_session(f"fault: {reason}", "fault_not_cleared", b.cause):
            # Said first, as the officers must act on it; the closing failure (a full disk) after it.
            reason = f"{reason}; {self.last_fault}"
        self.last_fault = reason
        self.machine.fire(Event.FAULT)

    def _alert_central(self, b: Break) -> None:
        """The head of the unit is told at once (INTERRUPT): a signed alert with the facts the officers' written
        explanation needs. Made from memory, so a full disk does not stop it."""
        recording, session = self._recording, self.session_id
        if recording is None or session is None:
            return
        clock = self._hal.clock
        try:
            alert = session_alert(CANNOT_CONTINUE, recording.opening, self._config.device.id, session, b.cause,
                                  b.reason, recording.wall_of(recording.covered_to), b.attempts,
                                  clock.now().isoformat(timespec="milliseconds"), clock.is_synchronised(),
                                  self._signer.sign)
        except MalformedAlert as err:
            log.error("alert to central not made: %s", err)
            return
        self._on_alert(alert)

    # ---- speech ----------------------------------------------------------------------------------
    def _say(self, prompts: list[Prompt]) -> list[Utterance]:
        return [self.voice.say(p, self._on_spoken) for p in prompts]

    def _on_spoken(self, utterance: Utterance) -> None:
        """From the voice's thread: an utterance was said (or could not be)."""
        self._queue.put(("spoken", utterance))

    def _spoken(self, utterance: Utterance) -> None:
        if utterance in self._notices:
            self._notice_spoken(utterance)
            return
        self._log_spoken(utterance)
        if self._declining is not None:
            self._declining.spoken(utterance)
        if self._explanation is not None:
            self._explanation.spoken(utterance)
            self._explained()

    def _log_spoken(self, utterance: Utterance) -> None:
        if self._recording is None:
            return
        details: dict[str, Any] = {"prompt": utterance.key, "text": utterance.text, "voice": utterance.voice,
                                   "started": utterance.started, "seconds": utterance.seconds}
        if utterance.started_mono_ns is not None:
            details["started_ns"] = self._recording.media_time(utterance.started_mono_ns).ns
        if utterance.error is not None:
            details["error"] = utterance.error
        self._log_event("spoken", **details)

    def _give_notice(self) -> None:
        """The notice prompts, said into the recording; the `notice` events follow as each is said."""
        # The standard wording is cached by key; the booking's matter changes, so it is never (FORMAT §4.3).
        self._notices = [self.voice.say(p, self._on_spoken, cache=p in self._notice_prompts,
                                        pcm=self._notice_pcm.get(p.key))
                         for p in self._session_notice]

    def _notice_spoken(self, utterance: Utterance) -> None:
        recording = self._recording
        if utterance.started_mono_ns is not None and self.timings.notice_first_sample is None:
            self.timings.notice_first_sample = utterance.started_mono_ns
        if recording is not None:
            if utterance.error is not None:
                self._notice_failed(f"notice {utterance.key} could not be played: {utterance.error}")
                return
            self._log_event("notice", prompt=utterance.key, text=utterance.text, voice=utterance.voice,
                            started=utterance.started, started_mono_ns=utterance.started_mono_ns,
                            seconds=utterance.seconds)
        if all(u.done.is_set() for u in self._notices):
            self._notices = []
            if self.machine.state is State.NOTICE:
                self.machine.fire(Event.NOTICE_DONE)

    def _notice_failed(self, reason: str) -> None:
        """The notice cannot be given, so the session cannot lawfully go on; what was recorded is closed."""
        self.last_fault = reason
        log.error("fault: %s", reason)
        self._log_event("fault", reason=reason)
        if self.machine.fire(Event.CANNOT_CONTINUE):
            self._close_session(f"fault: {reason}", "fault_not_cleared", "device_fault")
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
            except (StorageFault, CaptureError) as err:
                # The disk took no more (the fault this often reports): the service's log keeps the
                # event, and the session thread goes on to show the fault and close what it can.
                log.error("ledger refused event %s %s: %s", name, details, err)
        elif self.machine.state is State.PREFLIGHT:
            self._early.append((name, details))
        else:
            log.debug("no session: %s %s not recorded in a ledger", name, details)

    # ---- session steps -------------------------------------------------------------------------
    def session_meta(self, booking: Booking | None = None) -> SessionMeta:
        """What a session says of itself: the configured defaults, or with a booking its case, matter, parties
        and (when it names any) officers (PROTOCOL §14.3)."""
        d, s = self._config.device, self._config.session
        if booking is None:
            return SessionMeta(d.unit, d.room, d.location, d.id, tuple((o.name, o.certificate) for o in s.officers),
                               s.case, s.matter, s.parties)
        officers = booking.officers or s.officers
        return SessionMeta(d.unit, d.room, d.location, d.id, tuple((o.name, o.certificate) for o in officers),
                           booking.case, booking.matter, booking.parties)

    def meta_of(self, opening: Opening) -> SessionMeta:
        """What this device knows of a session it recorded (its `open` entry's personal fields may be sealed):
        from its booking, if the held set still has it, else from the configuration."""
        return self.session_meta(self._booking_of(opening))

    def _booking_of(self, opening: Opening) -> Booking | None:
        if opening.booking is None or self._bookings is None:
            return None
        return self._bookings.find(opening.booking.id)

    def _current_booking(self) -> Booking | None:
        if self._bookings is None:
            return None
        return self._bookings.current(self._hal.clock.now(), self._lead)

    def _open_extra(self, booking: Booking | None) -> dict[str, Any]:
        return {} if booking is None else {"booking": booking_ref(booking).as_json()}

    def _use_booking(self, booking: Booking | None, ref: BookingRef | None) -> None:
        """The session's booking: its words in the notice and the closing statement, its end for the room's
        overrun watch."""
        self._booking = booking
        self.session_booking = ref
        self._notice_pcm = {}
        matter = self._words.matter(booking.act, booking.matter) if booking is not None else []
        # The booking's matter follows the Chinese notice, which is always first (firmware_py/prompts.py).
        self._session_notice = [*self._notice_prompts[:1], *matter, *self._notice_prompts[1:]]

    def _begin_session(self, booking: Booking | None = None, how: str = STARTED) -> None:
        cfg = self._config
        meta = self.session_meta(booking)
        session_id = new_session_id(self._hal.clock.now())
        facts = StampFacts(meta.room, meta.location, meta.device_id, meta.officers, session_id,
                           booking.act if booking else "", meta.matter, meta.case)
        self._stamper = Stamper(facts, self._hal.clock, cfg.video.width, cfg.video.height, self._font,
                                lambda: self._recording.current_index if self._recording else 0)
        self._use_booking(booking, booking_ref(booking) if booking else None)
        inputs = LiveInputs(self._hal.camera, self._hal.microphone)
        self._inputs = inputs
        inputs.start(self._stamper)
        results = self._preflight.run(inputs, [p for p in self._session_notice if p not in self._notice_prompts])
        self._notice_pcm = dict(self._preflight.rendered)
        self.last_preflight = results
        failed = [r for r in results if not r.ok]
        blocking = [r for r in failed if r.name not in cfg.session.continue_on]
        for r in results:
            self._early.append(("preflight", {"check": r.name, "ok": r.ok, "detail": r.detail}))
        if blocking:
            inputs.stop()
            self._inputs = None
            self._early.clear()
            self._use_booking(None, None)
            self.last_fault = "; ".join(f"{r.name}: {r.detail}" for r in blocking)
            log.error("pre-flight failed, session not started: %s", self.last_fault)
            self.machine.fire(Event.PREFLIGHT_FAILED)
            self._speak_failures(blocking)
            return
        for r in failed:
            log.warning("pre-flight: %s: %s (configured to continue)", r.name, r.detail)
        self._recording = Recording.open(
            self._parts(), cfg.spool_dir, session_id, meta,
            {"preflight_warnings": [r.name for r in failed], "clock_synced": self._hal.clock.is_synchronised(),
             **self._open_extra(booking)},
            self.on_fault, self._on_entry,
        )
        if booking is not None and self._bookings is not None:
            self._bookings.mark(booking, how)
        early, self._early = self._early, []
        for name, details in early:
            self._recording.event(name, **details)
        inputs.attach(self._recording.segmenter.push_video, self._recording.segmenter.push_audio)
        # The notice must be inside the recording: wait for its first frame (at most a frame or two).
        if not inputs.recording_started.wait(self._preflight.device_timeout):
            raise InputFault("camera", "the camera stopped delivering frames as the recording began")
        self.machine.fire(Event.PREFLIGHT_OK)
        self._speak_failures(failed)
        self._give_notice()

    def _parts(self) -> RecordingParts:
        cfg = self._config
        recipient = public_key_from_b64(cfg.device.central_public_key) if cfg.device.central_public_key else None
        return RecordingParts(self._hal.clock, self._signer, self._hal.camera.format,
                              self._hal.microphone.sample_rate, cfg.session.segment_seconds,
                              self._hal.camera.request_keyframe, recipient, self._spawn)

    def _speak_failures(self, failed: list[CheckResult]) -> None:
        for result in failed:
            if result.name == "prompts":
                continue  # the very thing that would speak is broken; the tally shows the fault
            self.voice.say(failure_prompt(result.name, self._config.notice.voice_zh))

    def _stop_inputs(self) -> None:
        if self._inputs is not None:
            self._inputs.stop()

    def _close_session(self, reason: str, code: str, cause: str | None = None) -> bool:
        """Stop the inputs and close the session's record; False if its closing entry could not be written
        (the session is then closed by crash recovery at the next start)."""
        while any(not u.done.is_set() for u in self._notices):
            # Never cut the notice short: the recording must show it was given in full.
            self._notices[0].done.wait(0.5) if self._notices else None
            self._beat()
        self._stop_inputs()
        self._inputs = None
        self._break = None
        self._explanation = None
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
            self._use_booking(None, None)
        self.timings.sessions_closed.append(recording.session_id)
        log.info("session %s closed: %s", recording.session_id, reason)
        return closed

    @property
    def session_id(self) -> str | None:
        return self._recording.session_id if self._recording else None
