"""Prompts are spoken by a real TTS, cached, and never replaced by silence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from firmware_py.config import NoticeConfig
from firmware_py.prompts import PromptCache, PromptError, failure_prompt, notice_prompts


def test_notice_is_rendered_by_espeak_and_cached__NOTICE(tmp_path: Path) -> None:
    cache = PromptCache(tmp_path, 16000, 170)
    zh, en = notice_prompts(NoticeConfig())
    pcm = cache.load(zh)
    assert len(pcm) > 16000 * 3, "the standard wording takes several seconds to say"
    assert np.sqrt(np.mean(pcm.astype(np.float64) ** 2)) > 500, "the prompt is (nearly) silent"
    assert en.text.startswith("To protect your lawful rights")
    files = list(tmp_path.glob("notice_zh-*.pcm"))
    assert len(files) == 1
    again = PromptCache(tmp_path, 16000, 170).load(zh)
    assert np.array_equal(again, pcm)


def test_english_notice_is_optional__NOTICE() -> None:
    assert [p.key for p in notice_prompts(NoticeConfig(en=""))] == ["notice_zh"]


def test_missing_tts_is_an_error_not_silence__NOTICE(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(PromptError, match="espeak-ng is not installed"):
        PromptCache(tmp_path / "cache", 16000, 170).load(failure_prompt("camera", "cmn"))


def test_missing_tts_fails_preflight_and_blocks_the_session__DEVICE_CHECK(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mqtt.broker import free_port
    from tests.conftest import make_rig

    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    rig = make_rig(tmp_path, free_port(), with_receiver=False)
    try:
        from firmware_py.state_machine import State
        from hal.buttons.base import ButtonName

        rig.tap(ButtonName.START)
        rig.wait_state(State.FAULT)
        failed = {r.name for r in rig.service.controller.last_preflight if not r.ok}
        assert "prompts" in failed
        assert not list(rig.config.spool_dir.glob("*/entries"))
    finally:
        rig.close()
