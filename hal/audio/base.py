"""Microphone and speaker, as 16-bit mono PCM at the configured sample rate."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Pcm = npt.NDArray[np.int16]


@dataclass(frozen=True, slots=True)
class AudioBlock:
    samples: Pcm
    first_sample_ns: int
    """Monotonic time at which the first sample of the block was captured."""


AudioSink = Callable[[AudioBlock], None]


class Microphone(abc.ABC):
    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate

    @abc.abstractmethod
    def start(self, sink: AudioSink) -> None:
        """Start capturing; blocks arrive in order, without gaps, on the microphone's own thread."""

    @abc.abstractmethod
    def stop(self) -> None: ...


class Speaker(abc.ABC):
    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate

    @abc.abstractmethod
    def play(self, pcm: Pcm, on_first_sample: Callable[[], None] | None = None) -> None:
        """Play and return when the last sample has left the speaker.

        `on_first_sample` is called when the first sample is handed to the output device, which is the
        moment the event log gives for a prompt.
        """

    @abc.abstractmethod
    def check(self) -> None:
        """Open the output device and play a few milliseconds of silence; raise HalError if it cannot."""
