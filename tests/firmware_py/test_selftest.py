"""`recorder selftest`: a technician walks through every part of the box; failures are named with their
remedy, and central keeps the device's latest report (DEVICE-CHECK)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from evidence.supervisor import Supervisor
from firmware_py import rig as rig_mod
from firmware_py.cli import main
from firmware_py.config import Config
from firmware_py.enroll import enroll
from firmware_py.prompts import PromptCache
from firmware_py.selftest import SelfTest, Timing
from firmware_py.service import hal_settings
from hal.factory import Hal, build_hal
from mqtt import protocol
from provisioning.enrollment import Room
from provisioning.identity import DeviceIdentity

ROOM = Room("GZ-TH-R09", "城关派出所", "询问室九", "城关路1号", "Asia/Shanghai", ())


class Technician:
    """Reads what the self-test prints and answers with the box's buttons, as a person would."""

    def __init__(self, hal: Hal, config: Config, answers: dict[str, str | None]) -> None:
        self._hal = hal
        self._pins = {"START": config.hal.pins.start, "STOP": config.hal.pins.stop, "MARK": config.hal.pins.mark}
        self._answers = answers
        self.lines: list[str] = []

    def hear(self, line: str) -> None:
        self.lines.append(line)
        for prompt, button in self._answers.items():
            if prompt in line and button is not None:
                threading.Thread(target=self._press, args=(button,)).start()

    def _press(self, button: str) -> None:
        assert self._hal.sim is not None
        self._hal.sim.pins.tap(self._pins[button], 1.0 if button == "STOP" else 0.1)


ALL_RIGHT: dict[str, str | None] = {"press START": "START", "press STOP": "STOP", "press MARK": "MARK",
                                    "steady?": "START", "slow blink?": "START", "fast blink?": "START"}


@pytest.fixture
def central(tmp_path: Path) -> Iterator[rig_mod.DeployedCentral]:
    deployed = rig_mod.start_deployed_central(tmp_path / "site")
    yield deployed
    deployed.close()


@pytest.fixture(scope="module")
def prompt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One prompt cache for the module: each test says the same sentences, rendered once."""
    return tmp_path_factory.mktemp("prompts")


def _run(config: Config, answers: dict[str, str | None], prompts: Path, broken: tuple[str, ...] = (),
         answer_s: float = 4.0) -> tuple[list[protocol.SelfTestCheck], Technician]:
    supervisor = Supervisor()
    hal = build_hal(hal_settings(config, "sim"), supervisor.spawn)
    try:
        assert hal.sim is not None
        for device in broken:
            hal.sim.fault(device, True)
        technician = Technician(hal, config, answers)
        test = SelfTest(config, hal, PromptCache(prompts, config.audio.sample_rate, 320),
                        DeviceIdentity.load_or_create(config.keys_dir), out=technician.hear,
                        timing=Timing(answer_s=answer_s, camera_s=1.5, network_s=10.0))
        return test.run(), technician
    finally:
        hal.close()
        supervisor.stop()


def test_an_enrolled_box_passes_every_step_and_central_keeps_its_report__DEVICE_CHECK(
        tmp_path: Path, central: rig_mod.DeployedCentral, capsys: pytest.CaptureFixture[str],
        prompt_dir: Path) -> None:
    path = tmp_path / "box.toml"
    enroll(central.url, str(central.enrollment.issue_token(ROOM, "技术员 王工").token), path, tmp_path / "box")
    # The room's default picture size: the stamp's characters are large enough to read after encoding (the
    # tests' usual 320 x 240 is not, and the self-test says so).
    config = rig_mod.enrolled_config(path, {"video": {"width": 640, "height": 360, "bitrate": 800_000}})
    checks, technician = _run(config, ALL_RIGHT, prompt_dir)
    assert [c.name for c in checks if not c.ok] == []
    assert {c.name for c in checks} >= {"button start", "button stop", "button mark", "tally steady", "audio",
                                        "camera exposure", "camera not frozen", "camera stamp", "storage speed",
                                        "clock", "power", "broker", "central"}
    assert any("press START" in line for line in technician.lines)
    kept = central.store.latest_selftest(ROOM.device)
    assert kept is not None
    report = protocol.decode_selftest(kept)
    assert report.passed and report.signed_by(central.store.device_key(ROOM.device) or "")
    # The fleet view shows it, with the certificate's expiry from the enrollment record.
    capsys.readouterr()
    assert main(["central", "devices", "--store", str(central.store.root), "--json"]) == 0
    row = next(r for r in json.loads(capsys.readouterr().out) if r["device"] == ROOM.device)
    assert row["selftest"]["passed"] and row["selftest"]["failed"] == []
    assert row["certificate_expires"] > "2027"
    # Nothing was recorded: a self-test is no evidence session.
    assert not [p for p in config.spool_dir.iterdir() if not p.name.startswith(".")]


def test_each_failure_is_named_with_its_remedy__DEVICE_CHECK(tmp_path: Path, prompt_dir: Path) -> None:
    config = rig_mod.configs(tmp_path, "127.0.0.1", 1, rig_mod.fast())[0]  # plain MQTT, nothing listening
    answers = {**ALL_RIGHT, "press STOP": None, "slow blink?": "MARK"}
    checks, _ = _run(config, answers, prompt_dir, broken=("microphone", "camera"), answer_s=2.0)
    failed = {c.name: c for c in checks if not c.ok}
    assert set(failed) == {"button stop", "tally slow blink", "audio", "camera", "broker", "central"}, failed
    assert "GPIO27" in failed["button stop"].remedy
    assert "the technician saw something else" in failed["tally slow blink"].detail
    assert "plain MQTT" in failed["broker"].detail and "recorder enroll" in failed["broker"].remedy
    assert all(c.remedy for c in failed.values())


def test_the_command_refuses_while_the_service_holds_the_hardware(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "status.json").write_text(json.dumps({"pid": 1, "state": "idle"}))
    path = tmp_path / "recorder.toml"
    path.write_text(f'[device]\nstate_dir = "{state}"\n[hal]\nbackend = "sim"\n')
    assert main(["selftest", "--config", str(path)]) == 2
    assert "stop it first (sudo systemctl stop recorder)" in capsys.readouterr().err
