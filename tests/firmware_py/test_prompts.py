"""Prompts are spoken by a real TTS, cached, and never replaced by silence."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from firmware_py.config import NoticeConfig
from firmware_py.prompts import PromptCache, PromptError, failure_prompt, notice_prompts
from firmware_py.words import Words


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


def test_the_booking_is_named_after_the_notice_and_in_the_closing_statement__RECORD_FIELDS() -> None:
    words = Words(NoticeConfig())
    assert [(p.key, p.text) for p in words.matter("询问", "张某涉嫌盗窃案")] == [
        ("notice_matter_zh", "本次执法事项：询问，张某涉嫌盗窃案。")]
    assert [p.text for p in words.matter("听证", " ")] == ["本次执法事项：听证。"]
    assert words.matter("", "") == []  # a booking that names nothing adds nothing
    at = dt.datetime(2026, 11, 30, 10, 5, 9)
    zh, en = words.ended(at, "询问", "张某涉嫌盗窃案")
    assert zh.text == "本次执法事项：询问，张某涉嫌盗窃案。本次录音录像于10时05分09秒结束。"
    assert en.text == "This recording ends at 10:05:09."  # an English voice cannot read the booking's words
    assert words.ended(at)[0].text == "本次录音录像于10时05分09秒结束。"  # without a booking, as before


def test_the_room_prompts_are_said_in_each_language_on__NO_RECORD() -> None:
    assert [p.key for p in Words(NoticeConfig()).reminder()] == ["reminder_zh", "reminder_en"]
    assert [p.key for p in Words(NoticeConfig(en="")).overrun()] == ["overrun_zh"]
    assert "按开始键" in Words(NoticeConfig()).reminder()[0].text
    assert "按住停止键" in Words(NoticeConfig()).overrun()[0].text
