"""The Raspberry Pi camera through picamera2: libcamera captures, we stamp each frame in place, picamera2
encodes it to H.264 (libx264 on a Pi 5, the V4L2 hardware encoder on a Pi 4) and hands us the packets.

picamera2 is imported when a PiCamera is built, never at module import: it needs libcamera, which only
Raspberry Pi OS provides (from apt), so this module must stay importable everywhere else.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType
from typing import Any

from hal.camera.base import Camera, EncodedVideo, FrameStamper, VideoFormat, VideoSink
from hal.errors import DeviceUnavailable, HalError

log = logging.getLogger(__name__)

# Every picamera2 name PiCamera relies on, as module -> names within it, checked against picamera2 0.3.38.
# The test stand-in provides exactly these names, and on a Pi the test checks them against the installed
# picamera2, so this list, the stand-in and the real library cannot drift apart unnoticed.
PICAMERA2_API_USED: dict[str, tuple[str, ...]] = {
    "picamera2": (
        "Picamera2",
        "Picamera2.create_video_configuration",
        "Picamera2.configure",
        "Picamera2.camera_configuration",
        "Picamera2.start_recording",
        "Picamera2.stop_recording",
        "Picamera2.close",
        "CompletedRequest.get_metadata",
        "MappedArray",
        "MappedArray.array",
    ),
    "picamera2.encoders": ("H264Encoder", "H264Encoder.force_key_frame"),
    "picamera2.outputs": ("Output", "Output.outputframe"),
}
# picamera2 sets these in __init__, so they exist on instances only.
PICAMERA2_INSTANCE_ATTRIBUTES_USED: tuple[str, ...] = ("Picamera2.pre_callback", "H264Encoder.firsttimestamp")
# The encoder keyword arguments we pass; both the Pi 5 (LibavH264Encoder) and the Pi 4 (V4L2 H264Encoder)
# accept them.
H264ENCODER_ARGUMENTS_USED: tuple[str, ...] = ("bitrate", "repeat", "iperiod", "framerate")

# Despite the name, picamera2's RGB888 is B, G, R in memory (libcamera names formats by 32-bit word order);
# we ask for it because it is the 3-byte format both encoders take without a conversion.
PIXEL_FORMAT = "RGB888"
STREAM = "main"
# libcamera's SensorTimestamp: when the first row was exposed, in ns. The Pi pipeline takes it from the V4L2
# buffer timestamp, which is CLOCK_MONOTONIC, the clock time.monotonic_ns() reads (libcamera bug 254: its
# documentation says CLOCK_BOOTTIME, which differs from it only across a suspend that a Pi never does).
SENSOR_TIMESTAMP = "SensorTimestamp"
KEYFRAME_SECONDS = 10

_INSTALL = (
    "install python3-picamera2 from Raspberry Pi OS's apt (sudo apt install python3-picamera2); libcamera "
    "is not on PyPI, so a virtualenv needs --system-site-packages to see it"
)


def _import_picamera2() -> tuple[ModuleType, ModuleType, ModuleType]:
    try:
        return (
            importlib.import_module("picamera2"),
            importlib.import_module("picamera2.encoders"),
            importlib.import_module("picamera2.outputs"),
        )
    except ImportError as err:
        raise DeviceUnavailable(f"camera: picamera2 cannot be imported ({err}): {_INSTALL}") from err


def _sink_output(base: type[Any], encoder: Any, sink: VideoSink) -> Any:
    """An instance of a picamera2 Output subclass (the encoder accepts nothing else) that feeds `sink`."""

    class SinkOutput(base):  # type: ignore[misc]  # base is picamera2's Output, untyped and imported late
        def outputframe(
            self,
            frame: bytes,
            keyframe: bool = True,
            timestamp: int | None = None,
            packet: Any = None,
            audio: bool = False,
        ) -> None:
            if audio:
                return
            assert timestamp is not None, "picamera2 always passes a timestamp for video"
            # picamera2 hands out µs since the first encoded frame; adding that frame's SensorTimestamp back
            # puts the packet on the monotonic clock the rest of the recorder uses.
            sink(EncodedVideo(bytes(frame), (encoder.firsttimestamp + timestamp) * 1000, bool(keyframe)))

    return SinkOutput()


class PiCamera(Camera):
    def __init__(self, fmt: VideoFormat, camera_num: int = 0) -> None:
        super().__init__(fmt)
        self._picamera2, self._encoders, self._outputs = _import_picamera2()
        self._camera_num = camera_num
        self._camera: Any = None
        self._encoder: Any = None
        self._frames = 0
        self._warned_no_keyframe = False

    def start(self, stamper: FrameStamper, sink: VideoSink) -> None:
        fmt = self.format
        try:
            camera = self._picamera2.Picamera2(self._camera_num)
        except RuntimeError as err:
            raise DeviceUnavailable(
                f"camera {self._camera_num}: not found or busy ({err}); check the ribbon cable and that no "
                "other program holds the camera (rpicam-hello --list-cameras lists what libcamera sees)"
            ) from err
        try:
            camera.configure(
                camera.create_video_configuration(
                    main={"size": (fmt.width, fmt.height), "format": PIXEL_FORMAT},
                    controls={"FrameRate": fmt.fps},
                )
            )
            size = tuple(camera.camera_configuration()[STREAM]["size"])
            if size != (fmt.width, fmt.height):
                raise HalError(
                    f"camera: asked for {fmt.width}x{fmt.height} but libcamera gives {size[0]}x{size[1]}; "
                    "configure a video size this sensor supports"
                )
            self._frames = 0
            camera.pre_callback = lambda request: self._stamp(request, stamper)
            # repeat=True puts SPS/PPS before every keyframe, so each segment decodes on its own.
            encoder = self._encoders.H264Encoder(
                bitrate=fmt.bitrate, repeat=True, iperiod=fmt.fps * KEYFRAME_SECONDS, framerate=fmt.fps
            )
            camera.start_recording(encoder, _sink_output(self._outputs.Output, encoder, sink))
        except RuntimeError as err:
            camera.close()
            raise HalError(f"camera: cannot start recording at {fmt}: {err}") from err
        except BaseException:
            camera.close()
            raise
        self._camera, self._encoder = camera, encoder

    def _stamp(self, request: Any, stamper: FrameStamper) -> None:
        sensor_ns = int(request.get_metadata()[SENSOR_TIMESTAMP])
        with self._picamera2.MappedArray(request, STREAM) as mapped:
            # The buffer is BGR (see PIXEL_FORMAT); reversing the last axis is a view, so the stamper draws
            # RGB straight into the buffer the encoder reads.
            stamper(mapped.array[..., ::-1], sensor_ns)
        self._frames += 1

    def request_keyframe(self) -> None:
        if self._encoder is None:
            return
        force_key_frame = getattr(self._encoder, "force_key_frame", None)
        if force_key_frame is not None:
            force_key_frame()
        elif not self._warned_no_keyframe:
            # Only picamera2 >= 0.3.32 can force one (apt may ship older); segments then end on the periodic
            # keyframe instead, up to KEYFRAME_SECONDS late.
            log.warning("camera: this picamera2 cannot force a keyframe; upgrade to picamera2 >= 0.3.32")
            self._warned_no_keyframe = True

    def stop(self) -> None:
        camera, self._camera, self._encoder = self._camera, None, None
        if camera is None:
            return
        try:
            # Stops the camera, then the encoder, which flushes its last packets to the sink before returning.
            camera.stop_recording()
        finally:
            camera.close()

    def frames_seen(self) -> int:
        return self._frames
