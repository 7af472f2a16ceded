"""Cuts the continuous encoded stream into MPEG-TS segments, each starting on a keyframe.

Video comes from the camera thread, audio from the microphone thread; one lock orders them into the
open segment. MPEG-TS, not MP4: a segment cut off by a power failure still plays up to the last packet.
Timestamps are never rebased: they run on across segments, so the segments of a session concatenate
into one continuous timeline.
"""

from __future__ import annotations

import contextlib
import fractions
import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from capture.audio_encoder import AacEncoder, AudioPacket
from evidence import layout
from evidence.encryption import PlainWriter, SealingWriter
from evidence.errors import StorageFault
from hal.audio.base import AudioBlock
from hal.camera.base import EncodedVideo, VideoFormat

TS_HZ = 90_000
PTS_OFFSET = TS_HZ
"""Media time zero (the session's recording start) is written as PTS 90000, so that the AAC encoder's
priming packet, which starts before zero, never needs a negative timestamp."""
_TB = fractions.Fraction(1, TS_HZ)
def io_buffer_bytes(bitrate: int) -> int:
    """How much FFmpeg may hold before writing to the file (one sealed record each): about 0.1 s of media.

    A killed process loses at most this much beyond what the encoder still held; each write costs a
    syscall and an AEAD record, so much smaller is wasteful. Whole 188-byte TS packets, 4-64 KiB.
    """
    return max(22, min(348, bitrate // 8 // 10 // 188)) * 188


@dataclass(frozen=True)
class ClosedSegment:
    index: int
    part_path: Path
    final_path: Path
    start_ns: int
    """First video frame, nanoseconds after the recording start."""
    end_ns: int
    """Start of the first frame of the next segment (or end of the last frame)."""
    video_frames: int
    audio_samples: int
    keyframe_start: bool
    plain_sha256: str
    plain_bytes: int
    sha256: str
    """Of the file as stored (sealed when encrypted), hashed as it was written."""
    bytes: int


@dataclass(frozen=True)
class _Streams:
    """What every segment file of a session is opened with."""

    fmt: VideoFormat
    sample_rate: int
    audio_extradata: bytes
    recipient: X25519PublicKey | None


class _OpenSegment:
    def __init__(self, index: int, session_dir: Path, streams: _Streams, start_ns: int, keyframe_start: bool) -> None:
        self.index = index
        self.final_path = layout.media_path(session_dir, layout.media_name(index))
        self.part_path = self.final_path.with_name(self.final_path.name + ".part")
        self.start_ns = start_ns
        self.last_ns = start_ns
        self.video_frames = 0
        self.audio_samples = 0
        self.keyframe_start = keyframe_start
        try:
            # Unbuffered on our side, so each of FFmpeg's small writes reaches the page cache at once,
            # sealed to central's key first when there is one (the plaintext never reaches the disk).
            raw = open(self.part_path, "wb", buffering=0)  # noqa: SIM115 (closed by the writer)
            self._file: SealingWriter | PlainWriter = (
                SealingWriter(raw, streams.recipient) if streams.recipient is not None else PlainWriter(raw)
            )
            self.container = av.open(self._file, "w", format="mpegts",
                                     buffer_size=io_buffer_bytes(streams.fmt.bitrate))
        except (OSError, av.FFmpegError) as err:
            raise StorageFault(f"cannot open segment {self.part_path}: {err}") from err
        self.video = self.container.add_stream("h264", rate=streams.fmt.fps)
        self.video.width = streams.fmt.width
        self.video.height = streams.fmt.height
        self.video.pix_fmt = "yuv420p"
        self.video.time_base = _TB
        self.audio = self.container.add_stream("aac", rate=streams.sample_rate)
        self.audio.layout = "mono"
        self.audio.time_base = _TB
        self.audio.codec_context.extradata = streams.audio_extradata

    def close(self, end_ns: int) -> ClosedSegment:
        try:
            self.container.close()
            self._file.close()
        except (OSError, av.FFmpegError) as err:
            raise StorageFault(f"cannot close segment {self.part_path}: {err}") from err
        return ClosedSegment(self.index, self.part_path, self.final_path, self.start_ns, end_ns,
                             self.video_frames, self.audio_samples, self.keyframe_start,
                             self._file.plain.hexdigest(), self._file.plain_bytes,
                             self._file.stored.hexdigest(), self._file.stored_bytes)


class Segmenter:
    def __init__(
        self,
        session_dir: Path,
        fmt: VideoFormat,
        sample_rate: int,
        segment_seconds: float,
        t0_ns: int,
        request_keyframe: Callable[[], None],
        on_closed: Callable[[ClosedSegment], None],
        on_fault: Callable[[StorageFault], None],
        recipient: X25519PublicKey | None = None,
        first_index: int = 1,
        on_first_frame: Callable[[int], None] | None = None,
    ) -> None:
        self._dir = session_dir
        self._segment_ns = int(segment_seconds * 1e9)
        self._frame_ns = 1_000_000_000 // fmt.fps
        self._t0 = t0_ns
        self._request_keyframe = request_keyframe
        self._on_closed = on_closed
        self._on_fault = on_fault
        self._audio = AacEncoder(sample_rate)
        self._streams = _Streams(fmt, sample_rate, self._audio.extradata, recipient)
        self._sample_rate = sample_rate
        self._audio_t0_samples: int | None = None
        self._held_audio: list[AudioPacket] = []
        self._open: _OpenSegment | None = None
        self._next_index = first_index
        self._on_first_frame = on_first_frame
        """Told the media time of the run's first video frame before its file is opened (a run after a break
        writes its `interruption` entry there, so the entry precedes every file of the run)."""
        self._keyframe_asked = False
        self._lock = threading.Lock()

    @property
    def current_index(self) -> int:
        return self._open.index if self._open else self._next_index

    def _pts(self, ns_since_t0: int) -> int:
        return ns_since_t0 * TS_HZ // 1_000_000_000 + PTS_OFFSET

    def _start_segment(self, start_ns: int, keyframe: bool) -> None:
        if self._on_first_frame is not None:
            self._on_first_frame(start_ns)
            self._on_first_frame = None
        self._open = _OpenSegment(self._next_index, self._dir, self._streams, start_ns, keyframe)
        self._next_index += 1
        self._keyframe_asked = False
        held, self._held_audio = self._held_audio, []
        for packet in held:
            self._mux_audio(packet)

    def _finish_segment(self, end_ns: int) -> None:
        if self._open is None:
            return
        segment, self._open = self._open, None
        closed = segment.close(end_ns)
        self._on_closed(closed)

    def _guarded(self, action: Callable[[], None]) -> None:
        try:
            action()
        except StorageFault as fault:
            # The broken file is closed and sealed as far as it got. The very next frame opens a new
            # file rather than waiting for a keyframe, so nothing is dropped; a keyframe is asked for so
            # the new file becomes decodable at once.
            broken, self._open = self._open, None
            self._request_keyframe()
            if broken is not None:
                with contextlib.suppress(StorageFault):  # the fault below already reports this segment
                    self._on_closed(broken.close(broken.last_ns + self._frame_ns))
            self._on_fault(fault)

    def push_video(self, packet: EncodedVideo) -> None:
        with self._lock:
            self._guarded(lambda: self._push_video(packet))

    def _push_video(self, packet: EncodedVideo) -> None:
        rel = packet.pts_ns - self._t0
        current = self._open
        if current is not None:
            elapsed = rel - current.start_ns
            due = self._segment_ns - self._frame_ns // 2
            if packet.keyframe and elapsed >= due:
                self._finish_segment(rel)
                current = None
            elif elapsed + self._frame_ns >= due and (not self._keyframe_asked or elapsed >= due):
                # Ask so the next frame is a keyframe; keep asking while it is overdue, since a
                # hardware encoder may take a few frames to act on the request.
                self._request_keyframe()
                self._keyframe_asked = True
        if current is None:
            self._start_segment(rel, packet.keyframe)
        segment = self._open
        assert segment is not None
        av_packet = av.Packet(packet.data)
        av_packet.stream = segment.video
        av_packet.time_base = _TB
        av_packet.pts = av_packet.dts = self._pts(rel)
        av_packet.is_keyframe = packet.keyframe
        self._mux(segment, av_packet)
        segment.video_frames += 1
        segment.last_ns = rel

    def push_audio(self, block: AudioBlock) -> None:
        with self._lock:
            if self._audio_t0_samples is None:
                offset_ns = block.first_sample_ns - self._t0
                self._audio_t0_samples = offset_ns * self._sample_rate // 1_000_000_000
            for packet in self._audio.encode(block.samples):
                self._guarded(functools.partial(self._mux_audio, packet))

    def _mux_audio(self, packet: AudioPacket) -> None:
        segment = self._open
        if segment is None:
            self._held_audio.append(packet)
            return
        assert self._audio_t0_samples is not None
        samples = self._audio_t0_samples + packet.pts
        av_packet = av.Packet(packet.data)
        av_packet.stream = segment.audio
        av_packet.time_base = _TB
        av_packet.pts = av_packet.dts = samples * TS_HZ // self._sample_rate + PTS_OFFSET
        self._mux(segment, av_packet)
        segment.audio_samples += packet.duration

    @staticmethod
    def _mux(segment: _OpenSegment, packet: av.Packet[Any]) -> None:
        try:
            segment.container.mux(packet)
        except (OSError, av.FFmpegError) as err:
            raise StorageFault(f"write to {segment.part_path} failed: {err}") from err

    def close(self) -> None:
        """Flush the audio encoder and close the last segment; call after the camera has stopped."""
        with self._lock:
            for packet in self._audio.flush():
                self._guarded(functools.partial(self._mux_audio, packet))
            if self._open is not None:
                end = self._open.last_ns + self._frame_ns
                self._guarded(lambda: self._finish_segment(end))
