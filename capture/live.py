"""Camera and microphone running for one session attempt.

They start at pre-flight, so the checks look at the very pipeline that will record; what they produce
is only counted until a recording is attached. From then on every frame goes to the recording,
beginning with a keyframe requested at attach time.
"""

from __future__ import annotations

import threading

import numpy as np

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

    def start(self, stamper: FrameStamper) -> None:
        self.microphone.start(self._on_audio)
        self.camera.start(stamper, self._on_video)
        self._running = True

    def attach(self, video: VideoSink, audio: AudioSink) -> None:
        with self._lock:
            self._video, self._audio, self._await_key = video, audio, True
            self.recording_started.clear()
        self.camera.request_keyframe()

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
        with self._lock:
            self.audio_blocks += 1
            self.audio_peak = max(self.audio_peak, int(np.abs(block.samples.astype(np.int32)).max(initial=0)))
            sink = self._audio if not self._await_key else None
        if sink is not None:
            sink(block)

