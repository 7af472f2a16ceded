"""A simulated camera: a moving test pattern, stamped and encoded to real H.264 in real time."""

from __future__ import annotations

import functools
import threading

import numpy as np

from evidence.supervisor import Beat, Spawn, Supervised
from hal.camera.base import Camera, FrameStamper, RgbFrame, VideoFormat, VideoSink
from hal.camera.x264 import X264Encoder
from hal.pacing import ticks

_BARS = np.array(
    [[192, 192, 192], [192, 192, 0], [0, 192, 192], [0, 192, 0], [192, 0, 192], [192, 0, 0], [0, 0, 192]],
    dtype=np.uint8,
)


def colour_bars(fmt: VideoFormat) -> RgbFrame:
    columns = np.repeat(np.arange(len(_BARS)), -(-fmt.width // len(_BARS)))[: fmt.width]
    return np.ascontiguousarray(np.broadcast_to(_BARS[columns], (fmt.height, fmt.width, 3)))


class SimCamera(Camera):
    """Frames are paced by the monotonic clock; a late frame is still produced, never skipped."""

    def __init__(self, fmt: VideoFormat, spawn: Spawn) -> None:
        super().__init__(fmt)
        self._spawn = spawn
        self._background = colour_bars(fmt)
        self._thread: Supervised | None = None
        self._stop = threading.Event()
        self._encoder: X264Encoder | None = None
        self._frames = 0
        self.broken = False
        """A simulated fault: while set, the camera runs but delivers no frame (a cable pulled, a sensor hung)."""

    def start(self, stamper: FrameStamper, sink: VideoSink) -> None:
        self._encoder = X264Encoder(self.format)
        self._stop.clear()
        self._frames = 0
        self._thread = self._spawn("sim-camera", functools.partial(self._run, stamper, sink, self._encoder),
                                   silence_s=10.0)

    def _frame(self, n: int) -> RgbFrame:
        frame = self._background.copy()
        size = max(8, self.format.height // 6)
        x = (n * 7) % max(1, self.format.width - size)
        y = self.format.height // 2 - size // 2
        frame[y : y + size, x : x + size] = 255
        return frame

    def _run(self, stamper: FrameStamper, sink: VideoSink, encoder: X264Encoder, beat: Beat) -> None:
        for tick_ns in ticks(1_000_000_000 // self.format.fps, self._stop):
            beat()
            if self.broken:
                continue
            frame = self._frame(self._frames)
            stamper(frame, tick_ns)
            for packet in encoder.encode(frame, tick_ns):
                sink(packet)
            self._frames += 1
        for packet in encoder.flush():
            sink(packet)

    def request_keyframe(self) -> None:
        if self._encoder is not None:
            self._encoder.request_keyframe()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def frames_seen(self) -> int:
        return self._frames
