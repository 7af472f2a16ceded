"""PiMicrophone and PiSpeaker against a real PulseAudio null sink (conftest.pulse_room), no mocks: the speaker
plays into the room and the microphone records the room's monitor.

hal.audio.pi imports sounddevice only when a device is built, inside the tests, so PortAudio starts after
pulse_room has pointed the environment at the private server.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from hal.audio.base import AudioBlock, Pcm
from hal.audio.pi import PiMicrophone, PiSpeaker
from hal.errors import HalError

pytestmark = pytest.mark.usefixtures("pulse_room")

SR = 48_000
DEVICE = "pulse"  # PulseAudio's ALSA device, named so that no test can reach a real sound card
ONSET_TOLERANCE_NS = 100_000_000
NS = 1_000_000_000


def tone(hz: float, seconds: float, amplitude: int = 8000) -> Pcm:
    t = np.arange(int(SR * seconds)) / SR
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


class Heard:
    def __init__(self, stall_at_block: int | None = None, stall_s: float = 0.0) -> None:
        self.blocks: list[AudioBlock] = []
        self._stall_at = stall_at_block
        self._stall_s = stall_s

    def sink(self, block: AudioBlock) -> None:
        self.blocks.append(block)
        if len(self.blocks) == self._stall_at:
            time.sleep(self._stall_s)  # as a consumer stuck on a disk flush would

    def wait_for_blocks(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.blocks) < count:
            assert time.monotonic() < deadline, f"the microphone delivered {len(self.blocks)} blocks"
            time.sleep(0.01)

    def samples(self) -> Pcm:
        return np.concatenate([b.samples for b in self.blocks])

    def time_of(self, index: int) -> int:
        """Monotonic capture time of the index-th sample heard, from its block's first_sample_ns."""
        start = 0
        for block in self.blocks:
            if index < start + len(block.samples):
                return block.first_sample_ns + (index - start) * NS // SR
            start += len(block.samples)
        raise IndexError(index)

    def assert_continuous_until(self, stopped_ns: int) -> None:
        """Each block starts where the one before ended, and the last ends just before the stop."""
        for before, after in zip(self.blocks, self.blocks[1:], strict=False):
            gap_ns = after.first_sample_ns - (before.first_sample_ns + len(before.samples) * NS // SR)
            # Negative when the anchor tightens because a callback came sooner than any before (by more when
            # the machine is busy); positive would be a gap, which the timeline never opens.
            assert -20_000_000 < gap_ns <= 1, gap_ns
        last = self.blocks[-1]
        assert 0 <= stopped_ns - (last.first_sample_ns + len(last.samples) * NS // SR) < 150_000_000


def play_and_hear(heard: Heard, after_blocks: int) -> tuple[int, int]:
    """Record the room and play a 1 kHz tone into it once `after_blocks` blocks have come; returns when the
    speaker reported its first sample, and how many times it did."""
    microphone = PiMicrophone(SR, device=DEVICE)
    speaker = PiSpeaker(SR, device=DEVICE)
    first_sample_ns: list[int] = []
    microphone.start(heard.sink)
    try:
        # The null sink's monitor delivers its first audio a second or two after a recorder connects.
        heard.wait_for_blocks(after_blocks, timeout=10.0)
        speaker.play(tone(1000, 0.5), on_first_sample=lambda: first_sample_ns.append(time.monotonic_ns()))
        time.sleep(0.3)
    finally:
        microphone.stop()
    heard.assert_continuous_until(time.monotonic_ns())
    return first_sample_ns[0], len(first_sample_ns)


def onset(heard: Heard) -> int:
    loud = np.flatnonzero(np.abs(heard.samples()) > 2000)
    assert loud.size > 0.3 * SR, "the tone did not reach the microphone"  # |sin| > 1/4 for 84% of it
    return int(loud[0])


def test_the_microphone_hears_the_speaker_at_the_time_it_played() -> None:
    heard = Heard()
    played_ns, calls = play_and_hear(heard, after_blocks=10)
    assert calls == 1
    start = onset(heard)
    window = heard.samples()[start : start + SR // 4].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(window * np.hanning(len(window))))
    peak_hz = np.fft.rfftfreq(len(window), 1 / SR)[np.argmax(spectrum)]
    assert abs(peak_hz - 1000) < 10, peak_hz
    assert abs(heard.time_of(start) - played_ns) < ONSET_TOLERANCE_NS
    assert all(b.samples.dtype == np.int16 and b.samples.ndim == 1 for b in heard.blocks)


def test_a_stalled_sink_delays_delivery_but_loses_nothing(caplog: pytest.LogCaptureFixture) -> None:
    heard = Heard(stall_at_block=5, stall_s=2.0)
    played_ns, _ = play_and_hear(heard, after_blocks=5 + 10)
    assert abs(heard.time_of(onset(heard)) - played_ns) < ONSET_TOLERANCE_NS
    assert "went missing" not in caplog.text


def test_no_block_arrives_after_stop() -> None:
    heard = Heard()
    microphone = PiMicrophone(SR, device=DEVICE)
    microphone.start(heard.sink)
    try:
        heard.wait_for_blocks(10, timeout=10.0)
    finally:
        microphone.stop()
    count = len(heard.blocks)
    time.sleep(0.1)
    assert len(heard.blocks) == count


def test_check_plays_silence() -> None:
    PiSpeaker(SR, device=DEVICE).check()


def test_play_returns_when_the_sound_has_been_played() -> None:
    started = time.monotonic()
    PiSpeaker(SR, device=DEVICE).play(tone(440, 0.4))
    assert time.monotonic() - started >= 0.35


@pytest.mark.parametrize("device", ["no-such-speaker", 999])
def test_an_unknown_speaker_is_named_in_the_error(device: str | int) -> None:
    with pytest.raises(HalError, match=f"speaker '?{device}"):
        PiSpeaker(SR, device=device).check()


def test_an_unknown_microphone_is_named_in_the_error() -> None:
    with pytest.raises(HalError, match=r"microphone 'no-such-microphone'.*input devices here: .*pulse"):
        PiMicrophone(SR, device="no-such-microphone").start(lambda block: None)
