"""Software H.264 encoding with libx264 through PyAV (what picamera2 itself does on a Pi 5)."""

from __future__ import annotations

import fractions
from typing import Any

import av

from hal.camera.base import EncodedVideo, RgbFrame, VideoFormat
from hal.errors import DeviceUnavailable

_NS = fractions.Fraction(1, 1_000_000_000)


class X264Encoder:
    """Encodes RGB frames to Annex-B H.264 with SPS/PPS on every keyframe.

    No global header is requested, so libx264 repeats the parameter sets at each IDR and every segment
    that begins on a keyframe decodes on its own. zerolatency keeps one frame in, one frame out.
    """

    def __init__(self, fmt: VideoFormat) -> None:
        try:
            ctx = av.CodecContext.create("libx264", "w")
        except av.FFmpegError as err:
            raise DeviceUnavailable("libx264 is missing from PyAV's FFmpeg; reinstall the 'av' package") from err
        ctx.width = fmt.width
        ctx.height = fmt.height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = _NS
        ctx.framerate = fractions.Fraction(fmt.fps, 1)
        ctx.bit_rate = fmt.bitrate
        ctx.gop_size = fmt.fps * 10
        ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "forced-idr": "1"}
        ctx.open()
        self._ctx = ctx
        self._force_key = False

    def request_keyframe(self) -> None:
        self._force_key = True

    def encode(self, rgb: RgbFrame, pts_ns: int) -> list[EncodedVideo]:
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        frame.pts = pts_ns
        frame.time_base = _NS
        if self._force_key:
            frame.pict_type = av.video.frame.PictureType.I
            self._force_key = False
        return [self._wrap(p) for p in self._ctx.encode(frame)]

    def flush(self) -> list[EncodedVideo]:
        return [self._wrap(p) for p in self._ctx.encode(None)]

    @staticmethod
    def _wrap(packet: av.Packet[Any]) -> EncodedVideo:
        assert packet.pts is not None
        return EncodedVideo(bytes(packet), int(packet.pts), bool(packet.is_keyframe))
