"""A simulated room: what the speaker plays, the microphone hears, mixed with a quiet room tone.

The room keeps real time on its own thread, so playing a prompt takes as long as it would in a real
room, and a recording running at the same time contains it.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable

import numpy as np

from evidence.supervisor import Beat, Spawn, Supervised
from hal.audio.base import AudioBlock, AudioSink, Microphone, Pcm, Speaker
from hal.errors import HalError
from hal.pacing import ticks

_BLOCK_S = 0.02
_ROOM_TONE_RMS = 40  # about -58 dBFS: quiet, but never digital silence, as a real microphone


class _Playback:
    def __init__(self, pcm: Pcm, on_first_sample: Callable[[], None] | None) -> None:
        self.pcm = pcm
        self.offset = 0
        self.on_first_sample = on_first_sample
        self.done = threading.Event()


class SimRoom:
    def __init__(self, sample_rate: int, spawn: Spawn, seed: int = 0) -> None:
        self._spawn = spawn
        self.sample_rate = sample_rate
        self.block = int(sample_rate * _BLOCK_S)
        self._rng = np.random.default_rng(seed)
        self._queue: collections.deque[_Playback] = collections.deque()
        self._lock = threading.Lock()
        self._listener: AudioSink | None = None
        self._stop = threading.Event()
        self._thread: Supervised | None = None
        self.muted_speaker = False
        self.dead_microphone = False
        self.played = 0
        """Playbacks finished so far: how a test knows the speaker said something."""

    def open(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = self._spawn("sim-room", self._run, silence_s=10.0)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            for playback in self._queue:
                playback.done.set()
            self._queue.clear()

    def listen(self, sink: AudioSink | None) -> None:
        with self._lock:
            self._listener = sink

    def enqueue(self, playback: _Playback) -> None:
        with self._lock:
            self._queue.append(playback)

    def _speaker_block(self) -> tuple[np.ndarray, list[Callable[[], None]]]:
        out = np.zeros(self.block, dtype=np.int32)
        started: list[Callable[[], None]] = []
        filled = 0
        while filled < self.block and self._queue:
            playback = self._queue[0]
            if playback.offset == 0 and playback.on_first_sample is not None:
                started.append(playback.on_first_sample)
            take = min(self.block - filled, len(playback.pcm) - playback.offset)
            out[filled : filled + take] = playback.pcm[playback.offset : playback.offset + take]
            playback.offset += take
            filled += take
            if playback.offset >= len(playback.pcm):
                self._queue.popleft()
                self.played += 1
                playback.done.set()
        return out, started

    def _run(self, beat: Beat) -> None:
        for tick_ns in ticks(self.block * 1_000_000_000 // self.sample_rate, self._stop):
            beat()
            with self._lock:
                played, started = self._speaker_block()
                listener = self._listener
            for callback in started:
                callback()
            if listener is not None:
                heard = np.zeros(self.block, dtype=np.int32)
                if not self.dead_microphone:
                    tone = self._rng.normal(0, _ROOM_TONE_RMS, self.block).astype(np.int32)
                    heard = tone + (0 if self.muted_speaker else played)
                listener(AudioBlock(np.clip(heard, -32768, 32767).astype(np.int16), tick_ns))


class SimMicrophone(Microphone):
    def __init__(self, room: SimRoom) -> None:
        super().__init__(room.sample_rate)
        self._room = room

    def start(self, sink: AudioSink) -> None:
        self._room.open()
        self._room.listen(sink)

    def stop(self) -> None:
        self._room.listen(None)


class SimSpeaker(Speaker):
    def __init__(self, room: SimRoom) -> None:
        super().__init__(room.sample_rate)
        self._room = room

    def play(self, pcm: Pcm, on_first_sample: Callable[[], None] | None = None) -> None:
        self._room.open()
        playback = _Playback(pcm, on_first_sample)
        self._room.enqueue(playback)
        # Generous bound: the room plays in real time, so only a stopped room can exceed it.
        if not playback.done.wait(len(pcm) / self.sample_rate + 5.0):
            raise HalError("simulated speaker did not finish playing: the room thread has stopped")

    def check(self) -> None:
        if self._room.muted_speaker:
            raise HalError("speaker: no sound reaches the room (simulated fault)")
