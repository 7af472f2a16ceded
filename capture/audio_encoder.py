"""One AAC encoder for the whole session, so audio runs on across segment boundaries without priming
gaps; its packets are muxed into whichever segment is open when they come out."""

from __future__ import annotations

import fractions
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from hal.audio.base import Pcm


@dataclass(frozen=True, slots=True)
class AudioPacket:
    data: bytes
    pts: int
    """In samples since the first sample of the session."""
    duration: int


class AacEncoder:
    def __init__(self, sample_rate: int, bitrate: int = 48_000) -> None:
        ctx = av.CodecContext.create("aac", "w")
        ctx.sample_rate = sample_rate
        ctx.layout = "mono"
        ctx.format = "fltp"
        ctx.bit_rate = bitrate
        ctx.time_base = fractions.Fraction(1, sample_rate)
        ctx.open()
        self._ctx = ctx
        self.sample_rate = sample_rate
        self.frame_size = int(ctx.frame_size)
        self.extradata = bytes(ctx.extradata or b"")
        self._pending = np.zeros(0, dtype=np.float32)
        self._next_pts = 0
        self.samples_in = 0

    def encode(self, pcm: Pcm) -> list[AudioPacket]:
        self.samples_in += len(pcm)
        self._pending = np.concatenate([self._pending, pcm.astype(np.float32) / 32768.0])
        out: list[AudioPacket] = []
        while len(self._pending) >= self.frame_size:
            chunk, self._pending = self._pending[: self.frame_size], self._pending[self.frame_size :]
            out.extend(self._encode_frame(chunk))
        return out

    def flush(self) -> list[AudioPacket]:
        out: list[AudioPacket] = []
        if len(self._pending):
            out.extend(self._encode_frame(self._pending))
            self._pending = np.zeros(0, dtype=np.float32)
        out.extend(self._wrap(p) for p in self._ctx.encode(None))
        return out

    def _encode_frame(self, chunk: np.ndarray) -> list[AudioPacket]:
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="fltp", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = self._next_pts
        frame.time_base = fractions.Fraction(1, self.sample_rate)
        self._next_pts += len(chunk)
        return [self._wrap(p) for p in self._ctx.encode(frame)]

    @staticmethod
    def _wrap(packet: av.Packet[Any]) -> AudioPacket:
        return AudioPacket(bytes(packet), int(packet.pts or 0), int(packet.duration or 0))
