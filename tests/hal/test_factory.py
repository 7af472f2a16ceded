"""The backend factory: an explicit choice is obeyed; `auto` falls back to the simulator loudly."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from hal.factory import resolve_backend


def test_explicit_backend_is_used_as_is(tmp_path: Path) -> None:
    assert resolve_backend("sim", tmp_path / "absent") == "sim"
    assert resolve_backend("pi", tmp_path / "absent") == "pi"


def test_auto_off_a_pi_falls_back_to_sim_and_says_why(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "model"
    model.write_text("QEMU Virtual Machine\x00")
    with caplog.at_level(logging.WARNING):
        assert resolve_backend("auto", model) == "sim"
    assert "not a Raspberry Pi" in caplog.text and "QEMU Virtual Machine" in caplog.text
    assert "SIMULATED" in capsys.readouterr().err


def test_auto_on_a_pi_without_picamera2_names_the_package(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = tmp_path / "model"
    model.write_text("Raspberry Pi 5 Model B Rev 1.0\x00")
    with caplog.at_level(logging.WARNING):
        assert resolve_backend("auto", model) == "sim"
    assert "python3-picamera2" in caplog.text


def test_importing_the_hal_touches_no_hardware() -> None:
    import subprocess
    import sys

    # A fresh interpreter importing every HAL module must not open a device or read the environment
    # for a backend: importing must succeed even with sounddevice's PortAudio hidden.
    code = (
        "import sys; sys.modules['sounddevice'] = None\n"
        "import hal.factory, hal.camera.pi, hal.audio.pi, hal.camera.sim, hal.audio.sim, hal.tally.base\n"
        "import hal.sensor.pi, hal.sensor.sim\n"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.stdout.strip() == "ok", out.stderr
