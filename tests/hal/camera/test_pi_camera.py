"""PiCamera against the picamera2 stand-in (see picamera2_standin.py for why it is faked), and the stand-in
against the list of picamera2 names PiCamera declares, so the fake cannot quietly grow past the real API."""

from __future__ import annotations

import importlib
import inspect
import sys
import threading
import time
from collections.abc import Iterator
from types import ModuleType

import av
import numpy as np
import pytest

from hal.camera.base import EncodedVideo, RgbFrame, VideoFormat
from hal.camera.pi import (
    H264ENCODER_ARGUMENTS_USED,
    PICAMERA2_API_USED,
    PICAMERA2_INSTANCE_ATTRIBUTES_USED,
    PiCamera,
)
from hal.errors import DeviceUnavailable, HalError
from tests.hal.camera.picamera2_standin import Picamera2, install

FMT = VideoFormat(width=320, height=240, fps=30, bitrate=800_000)
RED = (255, 0, 0)
MARK = 32  # side of the red square the stamper draws in the top-left corner


class Recorder:
    """The stamper and the sink: draws a red square and remembers what it saw."""

    def __init__(self) -> None:
        self.stamped_ns: list[int] = []
        self.packets: list[EncodedVideo] = []
        self.lock = threading.Lock()

    def stamp(self, frame: RgbFrame, pts_ns: int) -> None:
        frame[:MARK, :MARK] = RED
        self.stamped_ns.append(pts_ns)

    def sink(self, packet: EncodedVideo) -> None:
        with self.lock:
            self.packets.append(packet)

    def wait_for(self, count: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.packets) < count:
            assert time.monotonic() < deadline, f"only {len(self.packets)} of {count} packets arrived"
            time.sleep(0.01)


def decode(packets: list[EncodedVideo]) -> list[np.ndarray]:
    """Decode with a fresh decoder, so the first packet must carry everything needed to start."""
    ctx = av.CodecContext.create("h264", "r")
    frames: list[np.ndarray] = []
    for packet in packets:
        frames.extend(f.to_ndarray(format="rgb24") for f in ctx.decode(av.Packet(packet.data)))
    frames.extend(f.to_ndarray(format="rgb24") for f in ctx.decode(None))
    return frames


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch) -> dict[str, ModuleType]:
    return install(monkeypatch)


@pytest.fixture
def recording(standin: dict[str, ModuleType]) -> Iterator[tuple[PiCamera, Recorder]]:
    camera = PiCamera(FMT)
    recorder = Recorder()
    camera.start(recorder.stamp, recorder.sink)
    yield camera, recorder
    camera.stop()


def test_delivers_decodable_h264_with_the_stamp_in_it(recording: tuple[PiCamera, Recorder]) -> None:
    camera, recorder = recording
    recorder.wait_for(6)
    packets = recorder.packets[:6]
    assert packets[0].keyframe
    assert b"\x00\x00\x00\x01\x67" in packets[0].data, "SPS missing from the first keyframe"
    frames = decode(packets)
    assert len(frames) == 6
    for frame in frames:
        assert frame.shape == (FMT.height, FMT.width, 3)
        # The stamper drew RGB red into a BGR buffer; red after decoding proves the channels were swapped.
        r, g, b = frame[4 : MARK - 4, 4 : MARK - 4].reshape(-1, 3).mean(axis=0)
        assert r > 200 and g < 60 and b < 60, (r, g, b)
    assert camera.frames_seen() >= 6


def test_every_frame_is_stamped_and_packets_carry_its_sensor_time(
    recording: tuple[PiCamera, Recorder],
) -> None:
    camera, recorder = recording
    recorder.wait_for(10)
    camera.stop()
    assert camera.frames_seen() == len(recorder.stamped_ns) == len(recorder.packets)
    # picamera2 carries time in µs, so the packet's time is the sensor time cut to the µs.
    assert [p.pts_ns for p in recorder.packets] == [ns // 1000 * 1000 for ns in recorder.stamped_ns]
    assert abs(recorder.packets[-1].pts_ns - time.monotonic_ns()) < 1_000_000_000, "not monotonic-clock time"


def test_request_keyframe_makes_a_keyframe_that_decodes_on_its_own(
    recording: tuple[PiCamera, Recorder],
) -> None:
    camera, recorder = recording
    recorder.wait_for(5)
    assert not any(p.keyframe for p in recorder.packets[1:5])
    asked_at = len(recorder.packets)
    camera.request_keyframe()
    recorder.wait_for(asked_at + 3)
    later = recorder.packets[asked_at:]
    first_key = next(i for i, p in enumerate(later) if p.keyframe)
    assert first_key <= 1, "the keyframe came late"
    assert len(decode(later[first_key : first_key + 2])) == 2


def test_stop_returns_after_the_last_packet(recording: tuple[PiCamera, Recorder]) -> None:
    camera, recorder = recording
    recorder.wait_for(3)
    camera.stop()
    delivered = len(recorder.packets)
    time.sleep(0.2)
    assert len(recorder.packets) == delivered
    assert delivered == camera.frames_seen()


def test_a_missing_camera_is_unavailable(
    standin: dict[str, ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Picamera2, "_cameras_connected", 0)
    with pytest.raises(DeviceUnavailable, match="rpicam-hello --list-cameras"):
        PiCamera(FMT).start(Recorder().stamp, Recorder().sink)


def test_a_size_the_sensor_cannot_give_is_refused(
    standin: dict[str, ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Picamera2, "_max_size", (640, 480))
    camera = PiCamera(VideoFormat(1920, 1080, 30, 4_000_000))
    with pytest.raises(HalError, match="1920x1080 but libcamera gives 640x480"):
        camera.start(Recorder().stamp, Recorder().sink)
    assert camera.frames_seen() == 0


def test_without_picamera2_the_camera_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)  # makes `import picamera2` raise ImportError
    with pytest.raises(DeviceUnavailable, match="python3-picamera2"):
        PiCamera(FMT)


def _public_names(module: ModuleType) -> set[str]:
    names: set[str] = set()
    for name, value in vars(module).items():
        if name.startswith("_") or isinstance(value, ModuleType):
            continue
        names.add(name)
        if isinstance(value, type):
            names |= {f"{name}.{member}" for member in vars(value) if not member.startswith("_")}
    return names


def test_standin_provides_exactly_the_declared_api(standin: dict[str, ModuleType]) -> None:
    assert set(standin) == set(PICAMERA2_API_USED)
    for module_name, names in PICAMERA2_API_USED.items():
        owners = {name.split(".")[0] for name in names}  # a method listed implies its class
        assert _public_names(standin[module_name]) == set(names) | owners, module_name
    instances = {
        "Picamera2": standin["picamera2"].Picamera2(),
        "H264Encoder": standin["picamera2.encoders"].H264Encoder(bitrate=1, iperiod=300),
    }
    public = {f"{cls}.{name}" for cls, obj in instances.items() for name in vars(obj) if name[0] != "_"}
    assert public == set(PICAMERA2_INSTANCE_ATTRIBUTES_USED)


def test_the_real_picamera2_has_the_declared_api() -> None:
    """Runs where picamera2 is installed (on a Pi); checks the same list against the real library."""
    pytest.importorskip("picamera2")
    for module_name, names in PICAMERA2_API_USED.items():
        module = importlib.import_module(module_name)
        for dotted in names:
            owner: object = module
            for part in dotted.split("."):
                assert hasattr(owner, part), f"{module_name}.{dotted} is missing from the installed picamera2"
                owner = getattr(owner, part)
    encoder = importlib.import_module("picamera2.encoders").H264Encoder
    assert set(H264ENCODER_ARGUMENTS_USED) <= set(inspect.signature(encoder).parameters)
    outputframe = inspect.signature(importlib.import_module("picamera2.outputs").Output.outputframe)
    assert list(outputframe.parameters) == ["self", "frame", "keyframe", "timestamp", "packet", "audio"]
