"""A stand-in for picamera2: the one library the tests fake, because libcamera (and a camera) cannot run on a
build machine, so PiCamera could not be exercised anywhere but on a Pi.

It provides exactly the names hal.camera.pi.PICAMERA2_API_USED lists (test_pi_camera checks both ways) and
behaves as picamera2 0.3.38 does wherever PiCamera can see it, encoding real H.264 with the libx264 that
picamera2 itself uses on a Pi 5:

* frames come from a thread paced by the monotonic clock, SensorTimestamp being that time in ns;
* the buffer of an RGB888 stream is B, G, R in memory, as in picamera2;
* per frame, Picamera2.pre_callback(request) runs first, then the encoder encodes what it left in the buffer;
* the encoder hands out timestamps in µs since its first frame, whose own time it keeps in firsttimestamp,
  and calls Output.outputframe(frame, keyframe, timestamp, packet, audio) with positional arguments
  (packet is None here: the real one is PyAV's packet, which PiCamera does not read);
* stop_recording stops the camera, then flushes the encoder, before it returns.

Anything PiCamera does not ask for raises NotImplementedError rather than being silently approximated.
"""

from __future__ import annotations

import sys
import threading
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from hal.camera.base import VideoFormat
from hal.camera.sim import colour_bars
from hal.camera.x264 import X264Encoder
from hal.pacing import ticks


class CompletedRequest:
    def __init__(self, buffer: np.ndarray, sensor_timestamp_ns: int) -> None:
        self._buffer = buffer
        self._metadata = {"SensorTimestamp": sensor_timestamp_ns}

    def get_metadata(self) -> dict[str, Any]:
        return dict(self._metadata)


class MappedArray:
    def __init__(
        self, request: CompletedRequest, stream: str, reshape: bool = True, write: bool = True
    ) -> None:
        if stream != "main" or not reshape or not write:
            raise NotImplementedError(f"the stand-in maps only the main stream, reshaped, writable: {stream}")
        self._request = request
        self._array: np.ndarray | None = None

    def __enter__(self) -> MappedArray:
        self._array = self._request._buffer
        return self

    def __exit__(self, *exc: object) -> None:
        self._array = None

    @property
    def array(self) -> np.ndarray | None:
        return self._array


class Output:
    def __init__(self, pts: Any = None) -> None:
        self._pts = pts

    def outputframe(
        self, frame: bytes, keyframe: bool = True, timestamp: int | None = None, packet: Any = None,
        audio: bool = False,
    ) -> None:
        """Does nothing, as picamera2's base Output does."""


class H264Encoder:
    """picamera2.encoders.H264Encoder as on a Pi 5 (LibavH264Encoder), with its signature and defaults."""

    def __init__(
        self, bitrate: int | None = None, repeat: bool = True, iperiod: int = 30, framerate: float = 30,
        qp: int | None = None, profile: str | None = None,
    ) -> None:
        if bitrate is None or not repeat or qp is not None or profile is not None:
            raise NotImplementedError("the stand-in encodes at a set bitrate with repeated SPS/PPS only")
        if iperiod != framerate * 10:
            raise NotImplementedError("X264Encoder puts a keyframe every 10 s of frames, nothing else")
        self._bitrate = bitrate
        self._framerate = int(framerate)
        self._key_frames_requested = 0
        self._key_frames_generated = 0
        self._x264: X264Encoder | None = None
        self._output: Output | None = None
        self.firsttimestamp: int | None = None

    def force_key_frame(self) -> None:
        self._key_frames_requested += 1

    def _start(self, size: tuple[int, int], output: Output) -> None:
        self._x264 = X264Encoder(VideoFormat(size[0], size[1], self._framerate, self._bitrate))
        self._output = output
        self.firsttimestamp = None

    def _encode(self, request: CompletedRequest) -> None:
        assert self._x264 is not None
        timestamp_us = int(request.get_metadata()["SensorTimestamp"] / 1000)
        if self.firsttimestamp is None:
            self.firsttimestamp = timestamp_us
        if self._key_frames_requested > self._key_frames_generated:
            self._key_frames_generated += 1
            self._x264.request_keyframe()
        with MappedArray(request, "main") as mapped:
            assert mapped.array is not None
            rgb = np.ascontiguousarray(mapped.array[..., ::-1])  # the libav encoder reads RGB888 as bgr24
        self._emit(self._x264.encode(rgb, (timestamp_us - self.firsttimestamp) * 1000))

    def _stop(self) -> None:
        assert self._x264 is not None
        self._emit(self._x264.flush())
        self._x264 = None

    def _emit(self, packets: list[Any]) -> None:
        assert self._output is not None
        for packet in packets:
            self._output.outputframe(packet.data, packet.keyframe, packet.pts_ns // 1000, None, False)


class Picamera2:
    _cameras_connected = 1
    _max_size = (4608, 2592)  # a Camera Module 3's sensor

    def __init__(self, camera_num: int = 0) -> None:
        if camera_num >= self._cameras_connected:
            raise RuntimeError(
                f'No camera number {camera_num} found - use "rpicam-hello --list-cameras" to check connected '
                "cameras"
            )
        self.pre_callback: Any = None
        self._config: dict[str, Any] = {}
        self._encoder: H264Encoder | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def create_video_configuration(
        self, main: dict[str, Any] | None = None, controls: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return {
            "use_case": "video",
            "main": {"format": "XBGR8888", "size": (1280, 720)} | (main or {}),
            "controls": dict(controls or {}),
            "encode": "main",
        }

    def configure(self, camera_config: dict[str, Any]) -> None:
        config = dict(camera_config)
        main = dict(config["main"])
        if main["format"] != "RGB888" or set(config["controls"]) != {"FrameRate"}:
            raise NotImplementedError(f"the stand-in captures RGB888 at a set FrameRate only: {config}")
        # libcamera adjusts a size the sensor cannot give, and picamera2 reports what it chose.
        main["size"] = tuple(min(a, b) for a, b in zip(main["size"], self._max_size, strict=True))
        config["main"] = main
        self._config = config

    def camera_configuration(self) -> dict[str, Any]:
        return self._config

    def start_recording(self, encoder: H264Encoder, output: Output) -> None:
        if not self._config:
            raise RuntimeError("Camera has not been configured")
        if not isinstance(output, Output):
            raise RuntimeError("Must pass Output")
        encoder._start(self._config["main"]["size"], output)
        self._encoder = encoder
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="standin-picamera2", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self._encoder is not None
        width, height = self._config["main"]["size"]
        fps = self._config["controls"]["FrameRate"]
        bgr = np.ascontiguousarray(colour_bars(VideoFormat(width, height, fps, 0))[..., ::-1])
        for n, tick_ns in enumerate(ticks(1_000_000_000 // fps, self._stop)):
            buffer = bgr.copy()
            buffer[height // 2 :, (n * 4) % width :][:16, :16] = 255  # motion, so not every frame is alike
            request = CompletedRequest(buffer, tick_ns)
            if self.pre_callback is not None:
                self.pre_callback(request)
            self._encoder._encode(request)

    def stop_recording(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._encoder is not None:
            self._encoder._stop()
            self._encoder = None

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._config = {}


def modules() -> dict[str, ModuleType]:
    """The stand-in as the modules `import picamera2` and friends would give."""
    package = ModuleType("picamera2")
    package.Picamera2 = Picamera2  # type: ignore[attr-defined]
    package.CompletedRequest = CompletedRequest  # type: ignore[attr-defined]
    package.MappedArray = MappedArray  # type: ignore[attr-defined]
    encoders = ModuleType("picamera2.encoders")
    encoders.H264Encoder = H264Encoder  # type: ignore[attr-defined]
    outputs = ModuleType("picamera2.outputs")
    outputs.Output = Output  # type: ignore[attr-defined]
    package.encoders = encoders  # type: ignore[attr-defined]
    package.outputs = outputs  # type: ignore[attr-defined]
    return {"picamera2": package, "picamera2.encoders": encoders, "picamera2.outputs": outputs}


def install(monkeypatch: pytest.MonkeyPatch) -> dict[str, ModuleType]:
    installed = modules()
    for name, module in installed.items():
        monkeypatch.setitem(sys.modules, name, module)
    return installed
