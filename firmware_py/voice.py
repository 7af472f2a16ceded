"""Everything the device says into the room, one utterance at a time, on a supervised thread of its own.

The notice, the spoken faults, the questions after a break, the menu and the closing statement all go
through here, so two prompts never talk over each other and the session thread never waits for the
speaker. Each utterance says when its first sample reached the speaker and how long it lasted, which is
what the ledger records of it. Acknowledgement tones go ahead of any utterance still waiting, so a press
is answered as soon as the current utterance ends.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from evidence.supervisor import Beat, Spawn, Supervised
from firmware_py.prompts import Prompt, PromptCache, PromptError
from hal.audio.base import Pcm, Speaker
from hal.clock.base import Clock
from hal.errors import HalError

log = logging.getLogger(__name__)

TONES: dict[str, tuple[float, ...]] = {
    "start": (660.0, 880.0),
    "stop": (880.0, 660.0),
    "mark": (880.0,),
    "refused": (330.0, 330.0),
}
"""Acknowledgement tones, as their notes (Hz), each note 0.09 s."""
_NOTE_S = 0.09


def tone_pcm(notes: tuple[float, ...], sample_rate: int) -> Pcm:
    t = np.arange(int(_NOTE_S * sample_rate)) / sample_rate
    fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)  # no click at either end of a note
    wave = np.concatenate([np.sin(2 * np.pi * f * t) * fade for f in notes])
    pcm: Pcm = (wave * 9000).astype(np.int16)
    return pcm


@dataclass
class Utterance:
    key: str
    """The prompt's key (`notice_zh`, `fault_camera`, …) or `tone_<name>`."""
    text: str
    voice: str
    cache: bool = True
    """Kept rendered on disk; prompts whose words change each time (a time of day) are not."""
    pcm: Pcm | None = None
    started_mono_ns: int | None = None
    started: str | None = None
    """Wall time of the first sample (ISO 8601, ms, offset)."""
    seconds: float = 0.0
    error: str | None = None
    """Why it was not said (it could not be rendered or played)."""
    on_done: Callable[[Utterance], None] | None = None
    done: threading.Event = field(default_factory=threading.Event)


class Voice:
    def __init__(self, speaker: Speaker, prompts: PromptCache, clock: Clock, spawn: Spawn) -> None:
        self._speaker = speaker
        self._prompts = prompts
        self._clock = clock
        self._spawn = spawn
        self._queue: collections.deque[Utterance] = collections.deque()
        self._ready = threading.Condition()
        self._stopping = False
        self._current: Utterance | None = None
        self._thread: Supervised | None = None
        self.said: list[Utterance] = []
        """Every utterance finished, in order (for status and tests)."""

    def start(self) -> None:
        # Silent while it speaks: the longest utterance (a notice read slowly) is well under two minutes.
        self._thread = self._spawn("voice", self._run, silence_s=120.0)

    def stop(self) -> None:
        with self._ready:
            self._stopping = True
            self._ready.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for waiting in self._queue:
            waiting.error = "the service stopped before it was said"
            waiting.done.set()
        self._queue.clear()

    def say(self, prompt: Prompt, on_done: Callable[[Utterance], None] | None = None,
            cache: bool = True, pcm: Pcm | None = None) -> Utterance:
        """Queue `prompt`; `pcm`, when given, is its sound rendered already (words of this session only, rendered
        during pre-flight so a failure stops the session before it begins)."""
        utterance = Utterance(prompt.key, prompt.text, prompt.voice, cache and pcm is None, pcm, on_done=on_done)
        with self._ready:
            self._queue.append(utterance)
            self._ready.notify_all()
        return utterance

    def tone(self, name: str) -> Utterance:
        utterance = Utterance(f"tone_{name}", "", "", False, tone_pcm(TONES[name], self._speaker.sample_rate))
        with self._ready:
            self._queue.appendleft(utterance)
            self._ready.notify_all()
        return utterance

    def cancel(self, utterances: list[Utterance]) -> None:
        """Drop those of `utterances` not begun yet (what they would say no longer holds); they are marked
        done without being said, and their `on_done` is not called."""
        with self._ready:
            for utterance in utterances:
                if utterance in self._queue:
                    self._queue.remove(utterance)
                    utterance.error = "cancelled"
                    utterance.done.set()

    def waiting(self) -> list[Utterance]:
        """What is queued and not begun yet."""
        with self._ready:
            return list(self._queue)

    @property
    def busy(self) -> bool:
        with self._ready:
            return self._current is not None or bool(self._queue)

    def _run(self, beat: Beat) -> None:
        while True:
            beat()
            with self._ready:
                if self._stopping:
                    return
                if not self._queue:
                    self._ready.wait(0.5)
                    continue
                utterance = self._current = self._queue.popleft()
            try:
                self._speak(utterance)
            except Exception as err:
                utterance.error = f"{type(err).__name__}: {err}"
                raise  # the supervisor reports it and runs the thread again for what is still queued
            finally:
                with self._ready:
                    self._current = None
                self.said.append(utterance)
                utterance.done.set()
                if utterance.on_done is not None:
                    utterance.on_done(utterance)

    def _speak(self, utterance: Utterance) -> None:
        def first_sample() -> None:
            utterance.started_mono_ns = time.monotonic_ns()
            utterance.started = self._clock.now().isoformat(timespec="milliseconds")

        try:
            pcm = utterance.pcm
            if pcm is None:
                prompt = Prompt(utterance.key, utterance.text, utterance.voice)
                pcm = self._prompts.load(prompt) if utterance.cache else self._prompts.render(prompt)
            self._speaker.play(pcm, on_first_sample=first_sample)
            utterance.seconds = round(len(pcm) / self._speaker.sample_rate, 3)
        except (PromptError, HalError) as err:
            utterance.error = str(err)
            log.error("could not say %s: %s", utterance.key, err)
