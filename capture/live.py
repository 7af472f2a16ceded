"""Camera and microphone running for one session attempt.

They start at pre-flight, so the checks look at the very pipeline that will record; what they produce
is only counted until a recording is attached. From then on every frame goes to the recording,
beginning with a keyframe requested at attach time.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from capture.errors import InputFault
from hal.audio.base import AudioBlock, AudioSink, Microphone
from hal.camera.base import Camera, EncodedVideo, FrameStamper, VideoSink


class LiveInputs:
    def __init__(self, camera: Camera, microphone: Microphone) -> None:
        self.camera = camera
        self.microphone = microphone
        self._lock = threading.Lock()
        self._video: VideoSink | None = None
        self._audio: AudioSink | None = None
        self._await_key = False
        self._running = False
        self.recording_started = threading.Event()
        """Set when the first frame of the recording (a keyframe) has gone to the attached sink."""
        self.frames = 0
        self.audio_blocks = 0
        self.audio_peak = 0
        now = time.monotonic_ns()
        self.last_frame_ns = now
        self.last_audio_ns = now
        self.last_sound_ns = now
        """Monotonic times of the last video frame, audio block and block that was not digital silence."""

    def start(self, stamper: FrameStamper) -> None:
        now = time.monotonic_ns()
        self.last_frame_ns = self.last_audio_ns = self.last_sound_ns = now
        self.recording_started.clear()
        self.microphone.start(self._on_audio)
        self.camera.start(stamper, self._on_video)
        self._running = True

    def attach(self, video: VideoSink, audio: AudioSink) -> None:
        with self._lock:
            self._video, self._audio, self._await_key = video, audio, True
            self.recording_started.clear()
        self.camera.request_keyframe()

    @property
    def attached(self) -> bool:
        return self._video is not None

    def live_since(self, since_ns: int) -> bool:
        """Both inputs delivered since `since_ns` (monotonic), and the microphone heard more than silence."""
        return self.last_frame_ns >= since_ns and self.last_sound_ns >= since_ns

    def stalled(self, timeout_s: float) -> InputFault | None:
        """The input that has gone quiet for longer than `timeout_s`, as the fault it is; None if both live.
        Digital silence counts: a working microphone always hears the room."""
        now = time.monotonic_ns()
        limit = int(timeout_s * 1e9)
        if now - self.last_frame_ns > limit:
            return InputFault("camera", f"the camera delivered no frame for {(now - self.last_frame_ns) / 1e9:.1f} s")
        if now - self.last_audio_ns > limit:
            return InputFault("microphone",
                              f"the microphone delivered no sound for {(now - self.last_audio_ns) / 1e9:.1f} s")
        if now - self.last_sound_ns > limit:
            return InputFault("microphone", "the microphone hears only digital silence "
                              f"(for {(now - self.last_sound_ns) / 1e9:.1f} s)")
        return None

    def stop(self) -> None:
        """Stop both devices; the camera's last frames still reach the attached recording."""
        if self._running:
            self.camera.stop()
            self.microphone.stop()
            self._running = False
        with self._lock:
            self._video = self._audio = None

    def _on_video(self, packet: EncodedVideo) -> None:
        with self._lock:
            self.frames += 1
            self.last_frame_ns = time.monotonic_ns()
            sink = self._video
            if sink is None:
                return
            if self._await_key:
                if not packet.keyframe:
                    return  # a pre-flight frame still in the encoder: not part of the session
                self._await_key = False
        sink(packet)
        self.recording_started.set()

    def _on_audio(self, block: AudioBlock) -> None:
        peak = int(np.abs(block.samples.astype(np.int32)).max(initial=0))
        with self._lock:
            self.audio_blocks += 1
            self.last_audio_ns = time.monotonic_ns()
            if peak > 0:
                self.last_sound_ns = self.last_audio_ns
            self.audio_peak = max(self.audio_peak, peak)
            sink = self._audio if not self._await_key else None
        if sink is not None:
            sink(block)

