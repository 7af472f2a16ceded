"""The camera as the service sees it: raw frames are stamped, then encoded to H.264.

Both backends deliver *encoded* H.264 access units (Annex B, SPS/PPS repeated on every keyframe) to a
sink, so everything after the encoder is one code path for the Pi and the simulator.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

RgbFrame = npt.NDArray[np.uint8]
"""A frame as height x width x 3 RGB bytes, the layout the stamp renderer draws into."""


@dataclass(frozen=True, slots=True)
class EncodedVideo:
    data: bytes
    pts_ns: int
    """Capture time on the monotonic clock, in nanoseconds."""
    keyframe: bool


FrameStamper = Callable[[RgbFrame, int], None]
"""Draws into the frame in place before it is encoded; gets the frame's monotonic capture time (ns)."""

VideoSink = Callable[[EncodedVideo], None]


@dataclass(frozen=True, slots=True)
class VideoFormat:
    width: int
    height: int
    fps: int
    bitrate: int


class Camera(abc.ABC):
    """A camera that encodes what it sees; started once per session."""

    def __init__(self, fmt: VideoFormat) -> None:
        self.format = fmt

    @abc.abstractmethod
    def start(self, stamper: FrameStamper, sink: VideoSink) -> None:
        """Start capturing; every frame is stamped, encoded and handed to `sink` in capture order."""

    @abc.abstractmethod
    def request_keyframe(self) -> None:
        """Make the next encoded frame a keyframe, so a segment can begin on it promptly."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop capturing; returns after the last encoded frame has been handed to the sink."""

    @abc.abstractmethod
    def frames_seen(self) -> int:
        """Frames captured since start: what a technician's self-test of the camera alone can watch."""
