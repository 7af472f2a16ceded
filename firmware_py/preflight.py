"""Pre-flight checks before every session (DEVICE-CHECK): storage, camera, microphone, speaker, clock,
power and prompts. Each returns a result; the controller decides, by configuration, which failures
may let the session go on."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from capture.live import LiveInputs
from firmware_py.prompts import Prompt, PromptCache, PromptError
from hal.audio.base import Pcm
from hal.errors import HalError
from hal.factory import Hal

AUDIO_OVERHEAD_BPS = 64_000
"""AAC at 48 kbit/s plus MPEG-TS and ledger overhead, per second of recording."""


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


def _wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


def bytes_needed(video_bitrate: int, minutes: int) -> int:
    return int((video_bitrate + AUDIO_OVERHEAD_BPS) / 8 * minutes * 60 * 1.2)


def recording_hours(free_bytes: int, video_bitrate: int) -> float:
    """How many hours of recording `free_bytes` hold at `video_bitrate` (with the same margin as a session's
    reservation)."""
    return free_bytes / bytes_needed(video_bitrate, 60)


class Preflight:
    def __init__(self, hal: Hal, prompts: PromptCache, needed_prompts: list[Prompt], video_bitrate: int,
                 max_minutes: int, device_timeout: float = 2.0) -> None:
        self._hal = hal
        self._prompts = prompts
        self._needed = needed_prompts
        self._bitrate = video_bitrate
        self._minutes = max_minutes
        self.device_timeout = device_timeout
        self.rendered: dict[str, Pcm] = {}
        """The last run's `fresh` prompts, rendered, by key."""

    def run(self, inputs: LiveInputs, fresh: Sequence[Prompt] = ()) -> list[CheckResult]:
        """Run every check against inputs that have just been started; `fresh` are this session's own prompts
        (words that change, such as its booking's matter), rendered now into `rendered`."""
        return [
            self._storage(),
            self._prompts_ready(fresh),
            self._speaker(),
            self._clock(),
            self._power(),
            self._camera(inputs),
            self._microphone(inputs),
        ]

    def _storage(self) -> CheckResult:
        need = bytes_needed(self._bitrate, self._minutes)
        try:
            self._hal.storage.check_writable()
            free = self._hal.storage.free_bytes()
        except HalError as err:
            return CheckResult("storage", False, str(err))
        if free < need:
            return CheckResult("storage", False,
                               f"{free / 1e6:.0f} MB free (about {recording_hours(free, self._bitrate):.1f} h of "
                               f"recording), {need / 1e6:.0f} MB needed for {self._minutes} minutes")
        return CheckResult("storage", True, f"{free / 1e9:.1f} GB free, room for about "
                                            f"{recording_hours(free, self._bitrate):.1f} h of recording")

    def _prompts_ready(self, fresh: Sequence[Prompt]) -> CheckResult:
        self.rendered = {}
        try:
            for prompt in self._needed:
                self._prompts.load(prompt)
            for prompt in fresh:
                self.rendered[prompt.key] = self._prompts.render(prompt)
        except PromptError as err:
            return CheckResult("prompts", False, str(err))
        return CheckResult("prompts", True, f"{len(self._needed) + len(fresh)} prompts ready")

    def _speaker(self) -> CheckResult:
        try:
            self._hal.speaker.check()
        except HalError as err:
            return CheckResult("speaker", False, str(err))
        return CheckResult("speaker", True, "output device plays")

    def _clock(self) -> CheckResult:
        if self._hal.clock.is_synchronised():
            return CheckResult("clock", True, "synchronised")
        return CheckResult("clock", False, "wall clock is not synchronised (no NTP yet)")

    def _power(self) -> CheckResult:
        state = self._hal.power.state()
        if state.under_voltage:
            return CheckResult("power", False, "supply is under-voltage")
        if state.battery_percent is not None and state.battery_percent < 20:
            return CheckResult("power", False, f"battery at {state.battery_percent:.0f} %")
        return CheckResult("power", True, "ok")

    def _camera(self, inputs: LiveInputs) -> CheckResult:
        if _wait_for(lambda: inputs.frames > 0, self.device_timeout):
            return CheckResult("camera", True, "frames arrive")
        return CheckResult("camera", False, f"no frame within {self.device_timeout:.1f} s")

    def _microphone(self, inputs: LiveInputs) -> CheckResult:
        if _wait_for(lambda: inputs.audio_peak > 0, self.device_timeout):
            return CheckResult("microphone", True, f"peak level {inputs.audio_peak}")
        if inputs.audio_blocks:
            return CheckResult("microphone", False, "only digital silence: the microphone hears nothing")
        return CheckResult("microphone", False, f"no audio within {self.device_timeout:.1f} s")
