"""Microphone and speaker on the board, through PortAudio (sounddevice).

sounddevice is imported when a device is built, not at module import: the import loads PortAudio and
enumerates the sound devices, so it must fail as a DeviceUnavailable with a fix, and happen after whatever
sound server the devices go through is reachable.
"""

from __future__ import annotations

import importlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any, Literal, NamedTuple

import numpy as np

from hal.audio.base import AudioBlock, AudioSink, Microphone, Pcm, Speaker
from hal.errors import DeviceUnavailable, HalError

log = logging.getLogger(__name__)

Device = int | str | None
"""A PortAudio device index, a part of its name (as sounddevice matches them), or None for the default."""

BLOCKS_PER_SECOND = 50
# Longer than any PortAudio start-up or buffer latency, so only a device that stopped can exceed it.
PLAY_TIMEOUT_MARGIN_S = 5.0
# The timeline fills a gap once at least this much audio has been missing for this long; a smaller loss
# (or clock drift below it) is left alone rather than patched with silence.
GAP_FILL_THRESHOLD_NS = 100_000_000
GAP_CONFIRM_NS = 500_000_000

_NS = 1_000_000_000


def _sounddevice() -> ModuleType:
    try:
        return importlib.import_module("sounddevice")
    except OSError as err:  # sounddevice's import raises "PortAudio library not found"
        raise DeviceUnavailable(f"audio: {err}; install it with sudo apt install libportaudio2") from err


def _open_stream(
    sd: ModuleType, role: Literal["microphone", "speaker"], device: Device, **kwargs: Any
) -> Any:
    kind = "input" if role == "microphone" else "output"
    stream_class = sd.InputStream if role == "microphone" else sd.OutputStream
    try:
        stream = stream_class(device=device, dtype="int16", channels=1, **kwargs)
    except ValueError as err:  # sounddevice found no device (or several) matching the name
        names = [d["name"] for d in sd.query_devices() if d[f"max_{kind}_channels"] > 0]
        raise DeviceUnavailable(f"{role} {device!r}: {err}; {kind} devices here: {names}") from err
    except sd.PortAudioError as err:
        raise HalError(f"{role} {device!r}: PortAudio cannot open it: {err}") from err
    try:
        stream.start()
    except sd.PortAudioError as err:
        stream.close()
        raise HalError(f"{role} {device!r}: PortAudio cannot start it: {err}") from err
    return stream


class Placed(NamedTuple):
    fill: AudioBlock | None
    """Silence standing in for samples the device lost just before `block`, if it lost any."""
    block: AudioBlock


class SampleTimeline:
    """Puts every captured sample on the monotonic clock by counting samples, and fills in what was lost.

    PortAudio's own capture times cannot be used for this: on ALSA they are on CLOCK_REALTIME, and through
    the PulseAudio or PipeWire ALSA plugin its latency estimate was measured up to 0.56 s wrong (placing a
    tone before it was played). Arrival times are reliable in one direction: a sample cannot arrive before it
    was captured. So each block's arrival, minus the time the samples counted so far (this block included)
    last, bounds when the first sample was captured; the lowest such bound is the anchor, and a sample's time
    is the anchor plus its position divided by the rate.

    How far a block's bound lies above the anchor is its lag. After a late callback the lag jumps, and the
    catch-up burst that follows brings it straight back down. After samples were lost (an overflow, or a
    sound server dropping what a stalled client did not take) it stays up by the amount lost. So once the
    lag has stayed above GAP_FILL_THRESHOLD_NS for GAP_CONFIRM_NS, the least lag seen in that time is filled
    with silence and later audio keeps its place against the video; the silence lands up to GAP_CONFIRM_NS
    after the actual loss.
    """

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.samples = 0
        self._anchor_ns: int | None = None
        self._lagging_since_ns: int | None = None
        self._least_lag_ns = 0

    def _ns(self, samples: int) -> int:
        return samples * _NS // self.sample_rate

    def place(self, samples: Pcm, arrival_ns: int) -> Placed:
        bound_ns = arrival_ns - self._ns(self.samples + len(samples))
        if self._anchor_ns is None or bound_ns < self._anchor_ns:
            self._anchor_ns = bound_ns
        anchor_ns = self._anchor_ns
        lag_ns = bound_ns - anchor_ns
        fill = None
        if lag_ns <= GAP_FILL_THRESHOLD_NS:
            self._lagging_since_ns = None
        elif self._lagging_since_ns is None:
            self._lagging_since_ns, self._least_lag_ns = arrival_ns, lag_ns
        else:
            self._least_lag_ns = min(self._least_lag_ns, lag_ns)
            if arrival_ns - self._lagging_since_ns >= GAP_CONFIRM_NS:
                missing = self._least_lag_ns * self.sample_rate // _NS
                fill = AudioBlock(np.zeros(missing, dtype=np.int16), anchor_ns + self._ns(self.samples))
                self.samples += missing
                self._lagging_since_ns = None
        block = AudioBlock(samples, anchor_ns + self._ns(self.samples))
        self.samples += len(samples)
        return Placed(fill, block)


class PiMicrophone(Microphone):
    """Capture runs in PortAudio's real-time callback, which only timestamps and queues each block; the sink
    is called on the microphone's own thread, so a slow sink (encoding, a disk flush) delays delivery but
    never makes the device drop samples."""

    def __init__(self, sample_rate: int, device: Device = None) -> None:
        super().__init__(sample_rate)
        self._sd = _sounddevice()
        self.device = device
        self._stream: Any = None
        self._queue: queue.SimpleQueue[tuple[Placed, bool] | None] = queue.SimpleQueue()
        self._delivery: threading.Thread | None = None

    def start(self, sink: AudioSink) -> None:
        timeline = SampleTimeline(self.sample_rate)
        blocks = self._queue

        def callback(indata: Any, frames: int, time_info: Any, status: Any) -> None:
            arrival_ns = time.monotonic_ns()
            blocks.put((timeline.place(indata[:, 0].copy(), arrival_ns), bool(status.input_overflow)))

        self._stream = _open_stream(
            self._sd, "microphone", self.device,
            samplerate=self.sample_rate, blocksize=self.sample_rate // BLOCKS_PER_SECOND, callback=callback,
        )
        self._delivery = threading.Thread(
            target=self._deliver, args=(sink,), name="pi-microphone", daemon=True
        )
        self._delivery.start()

    def _deliver(self, sink: AudioSink) -> None:
        overflows = 0
        while (item := self._queue.get()) is not None:
            (fill, block), overflowed = item
            if overflowed:
                overflows += 1
                log.warning("microphone %r: PortAudio reports input overflow (%d so far)",
                            self.device, overflows)
            if fill is not None:
                log.warning("microphone %r: %d ms of audio went missing; filled with silence to keep sync",
                            self.device, len(fill.samples) * 1000 // self.sample_rate)
            for each in (fill, block):
                if each is None:
                    continue
                try:
                    sink(each)
                except Exception:
                    # Losing this block is the lesser harm: the samples were counted, so the blocks after it
                    # keep their times, whereas stopping would leave the rest of the session silent.
                    log.exception("microphone %r: the audio sink failed on a block", self.device)

    def stop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        # stop() returns after PortAudio's last callback, so the sentinel is queued behind the last block.
        stream.stop()
        stream.close()
        self._queue.put(None)
        if self._delivery is not None:
            self._delivery.join()
            self._delivery = None


class PiSpeaker(Speaker):
    def __init__(self, sample_rate: int, device: Device = None) -> None:
        super().__init__(sample_rate)
        self._sd = _sounddevice()
        self.device = device

    def play(self, pcm: Pcm, on_first_sample: Callable[[], None] | None = None) -> None:
        sd = self._sd
        finished = threading.Event()
        handed_over = 0
        failures: list[Exception] = []

        def callback(outdata: Any, frames: int, time_info: Any, status: Any) -> None:
            nonlocal handed_over
            chunk = pcm[handed_over : handed_over + frames]
            outdata[: len(chunk), 0] = chunk
            outdata[len(chunk) :] = 0
            if handed_over == 0 and on_first_sample is not None:
                try:
                    on_first_sample()
                except Exception as err:
                    failures.append(err)
                    raise sd.CallbackAbort from err
            handed_over += len(chunk)
            if handed_over >= len(pcm):
                raise sd.CallbackStop  # PortAudio plays out what it holds, then calls finished.set

        stream = _open_stream(
            sd, "speaker", self.device,
            samplerate=self.sample_rate, callback=callback, finished_callback=finished.set,
        )
        try:
            done = finished.wait(len(pcm) / self.sample_rate + PLAY_TIMEOUT_MARGIN_S)
        finally:
            stream.close()  # discards whatever is still queued if we gave up waiting
        if not done:
            raise HalError(f"speaker {self.device!r}: playback did not finish; the output device stalled")
        if failures:
            raise failures[0]
        if handed_over < len(pcm):
            raise HalError(
                f"speaker {self.device!r}: the output device stopped after {handed_over} of {len(pcm)} "
                "samples"
            )

    def check(self) -> None:
        self.play(np.zeros(self.sample_rate // BLOCKS_PER_SECOND, dtype=np.int16))
