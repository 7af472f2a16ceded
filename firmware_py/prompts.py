"""Spoken prompts, rendered by espeak-ng once and cached as 16-bit PCM at the speaker's sample rate.

A prompt that cannot be rendered is a pre-flight failure: the notice is never replaced by silence.
"""

from __future__ import annotations

import hashlib
import io
import logging
import shutil
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evidence.durable import atomic_write
from evidence.errors import StorageFault
from firmware_py.config import NoticeConfig
from firmware_py.errors import ServiceError
from hal.audio.base import Pcm

log = logging.getLogger(__name__)


class PromptError(ServiceError):
    """A prompt could not be rendered or loaded."""


@dataclass(frozen=True)
class Prompt:
    key: str
    text: str
    voice: str


# What the device says when a pre-flight check fails; Chinese first, as the officers hear it.
FAILURE_WORDS = {
    "storage": "存储空间不足，无法开始录像",
    "camera": "摄像机故障，无法开始录像",
    "microphone": "麦克风故障，无法开始录像",
    "speaker": "扬声器故障",
    "clock": "时钟未同步，本次录像标记为时钟未同步",
    "power": "电源电压不足",
    "prompts": "语音提示不可用",
}


def notice_prompts(notice: NoticeConfig) -> list[Prompt]:
    prompts = [Prompt("notice_zh", notice.zh, notice.voice_zh)]
    if notice.en:
        prompts.append(Prompt("notice_en", notice.en, notice.voice_en))
    return prompts


def failure_prompt(check: str, voice: str) -> Prompt:
    return Prompt(f"failure_{check}", FAILURE_WORDS[check], voice)


def _resample(samples: Pcm, src_rate: int, dst_rate: int) -> Pcm:
    if src_rate == dst_rate:
        return samples
    n_out = int(len(samples) * dst_rate / src_rate)
    positions = np.arange(n_out) * (src_rate / dst_rate)
    resampled: Pcm = np.interp(positions, np.arange(len(samples)), samples).astype(np.int16)
    return resampled


class PromptCache:
    def __init__(self, cache_dir: Path, sample_rate: int, words_per_minute: int) -> None:
        self._dir = cache_dir
        self._rate = sample_rate
        self._wpm = words_per_minute
        self._loaded: dict[str, Pcm] = {}

    def _path(self, prompt: Prompt) -> Path:
        ident = f"{prompt.voice}|{self._wpm}|{self._rate}|{prompt.text}".encode()
        return self._dir / f"{prompt.key}-{hashlib.sha256(ident).hexdigest()[:16]}.pcm"

    def _render(self, prompt: Prompt) -> Pcm:
        espeak = shutil.which("espeak-ng")
        if espeak is None:
            raise PromptError("espeak-ng is not installed: install the espeak-ng package (make demo/test do this)")
        result = subprocess.run(
            [espeak, "-v", prompt.voice, "-s", str(self._wpm), "--stdout", prompt.text],
            capture_output=True, check=False, timeout=60,
        )
        if result.returncode != 0 or not result.stdout:
            reason = result.stderr.decode(errors="replace").strip() or f"exit status {result.returncode}"
            raise PromptError(f"espeak-ng could not render prompt {prompt.key!r} (voice {prompt.voice}): {reason}")
        with wave.open(io.BytesIO(result.stdout)) as wav:
            rate = wav.getframerate()
            raw: Pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.int16)
        return _resample(raw, rate, self._rate)

    def render(self, prompt: Prompt) -> Pcm:
        """The prompt's samples, rendered now and kept nowhere: for words that change each time."""
        pcm = self._render(prompt)
        if len(pcm) == 0:
            raise PromptError(f"prompt {prompt.key!r} rendered to no sound")
        return pcm

    def load(self, prompt: Prompt) -> Pcm:
        """The prompt's samples, rendering and caching them on first use."""
        if prompt.key in self._loaded:
            return self._loaded[prompt.key]
        path = self._path(prompt)
        if path.exists():
            pcm = np.frombuffer(path.read_bytes(), dtype="<i2").astype(np.int16)
        else:
            pcm = self._render(prompt)
            try:
                self._dir.mkdir(parents=True, exist_ok=True)
                atomic_write(path, pcm.astype("<i2").tobytes())
            except (OSError, StorageFault) as err:
                # A full disk must not silence the device: it says the prompt now and renders it again later.
                log.warning("prompt %s not cached: %s", prompt.key, err)
        if len(pcm) == 0:
            raise PromptError(f"prompt {prompt.key!r} rendered to no sound")
        self._loaded[prompt.key] = pcm
        return pcm
