from __future__ import annotations

from pathlib import Path

import pytest

from firmware_py import config as config_mod
from firmware_py.cli import main
from firmware_py.errors import ConfigError


def test_empty_config_is_valid_for_the_simulator() -> None:
    cfg = config_mod.from_dict({})
    assert cfg.session.segment_seconds == 2.0
    assert cfg.session.stop_hold_seconds == 2.0
    assert cfg.notice.zh == config_mod.NOTICE_ZH


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"device": {"colour": "red"}}, "device.colour: unknown key"),
        ({"sesion": {}}, "sesion: unknown key"),
        ({"session": {"segment_seconds": "two"}}, "session.segment_seconds: expected a number"),
        ({"session": {"segment_seconds": 0}}, "session.segment_seconds: must be greater than zero"),
        ({"hal": {"backend": "arduino"}}, "hal.backend: 'arduino' is not one of"),
        ({"hal": {"pins": {"start": True}}}, "hal.pins.start: expected a whole number"),
        ({"session": {"continue_on": ["camera", "vibes"]}},
         "session.continue_on[1]: 'vibes' is not a pre-flight check"),
        ({"session": {"officers": [{"name": "张三"}]}}, "session.officers[0]"),
        ({"session": {"officers": []}}, "session.officers: at least one officer"),
        ({"device": {"id": "room/1"}}, "device.id: 'room/1' must be 1-64 letters"),
        ({"mqtt": {"topic_prefix": "a/b"}}, "mqtt.topic_prefix: 'a/b' must be one topic level"),
        ({"device": {"timezone": "Mars/Olympus"}}, "device.timezone: 'Mars/Olympus' is not a known time zone"),
        ({"video": {"width": 641}}, "video.width/video.height: must be even"),
        ({"mqtt": {"port": 70000}}, "mqtt.port: must be 1..65535"),
    ],
)
def test_bad_config_names_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_mod.from_dict(data)
    assert field in str(err.value)


def test_toml_file_loads_officers_and_case(tmp_path: Path) -> None:
    path = tmp_path / "recorder.toml"
    path.write_text(
        '[device]\nid = "GD-0042"\nroom = "听证室二"\n'
        '[session]\ncase = "某某案"\nparties = ["王五"]\n'
        '[[session.officers]]\nname = "赵六"\ncertificate = "44000000009"\n',
        encoding="utf-8",
    )
    cfg = config_mod.load(path)
    assert cfg.device.id == "GD-0042"
    assert cfg.session.officers == (config_mod.Officer("赵六", "44000000009"),)
    assert cfg.session.parties == ("王五",)


def test_check_config_exits_nonzero_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[device]\nid = "GD-0001"\n')
    assert main(["run", "--config", str(good), "--check-config"]) == 0
    assert "configuration OK" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text('[mqtt]\nhots = "central"\n')
    assert main(["run", "--config", str(bad), "--check-config"]) == 2
    err = capsys.readouterr().err
    assert "mqtt.hots: unknown key" in err and str(bad) in err


def test_broken_toml_is_reported_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[device\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config_mod.load(path)
