from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from evidence.errors import ConfigError
from firmware_py import config as config_mod
from firmware_py.cli import main
from firmware_py.errors import ServiceError


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
        ({"session": {"segment_seconds": 0}}, "session.segment_seconds: must be at least 0.5"),
        ({"hal": {"backend": "arduino"}}, "hal.backend: 'arduino' is not one of"),
        ({"hal": {"pins": {"start": True}}}, "hal.pins.start: expected a whole number"),
        ({"session": {"continue_on": ["camera", "vibes"]}},
         "session.continue_on[1]: 'vibes' is not a pre-flight check"),
        ({"session": {"officers": [{"name": "张三"}]}}, "session.officers[0]"),
        ({"session": {"officers": []}}, "session.officers: at least one officer"),
        ({"device": {"id": "room/1"}}, "device.id: 'room/1' must be 1-64 letters"),
        ({"mqtt": {"topic_prefix": "a/b"}}, "mqtt.topic_prefix: 'a/b' must be one topic level"),
        ({"device": {"timezone": "Mars/Olympus"}}, "device.timezone: 'Mars/Olympus' is not a known time zone"),
        ({"video": {"width": 641}}, "video.width: must be even"),
        ({"mqtt": {"port": 70000}}, "mqtt.port: must be at least 1 and at most 65535"),
        # Numbers must be finite and in range (TOML has nan and inf): each once let the service start and then
        # killed the session thread at START, or was accepted silently.
        ({"session": {"segment_seconds": float("nan")}}, "session.segment_seconds: must be a finite number"),
        ({"session": {"segment_seconds": float("inf")}}, "session.segment_seconds: must be a finite number"),
        ({"session": {"stop_hold_seconds": float("inf")}}, "session.stop_hold_seconds: must be a finite number"),
        ({"video": {"bitrate": -5}}, "video.bitrate: must be at least"),
        ({"mqtt": {"resend_seconds": float("nan")}}, "mqtt.resend_seconds: must be a finite number"),
        ({"mqtt": {"retry_max_seconds": float("nan")}}, "mqtt.retry_max_seconds: must be a finite number"),
        ({"mqtt": {"keepalive": -1}}, "mqtt.keepalive: must be at least 1"),
        ({"mqtt": {"host": ""}}, "mqtt.host: must not be empty"),
        ({"upload": {"deadline_hours": float("inf")}}, "upload.deadline_hours: must be a finite number"),
        ({"upload": {"warn_hours": [30.0]}}, "upload.warn_hours[0]: 30 must be below deadline_hours"),
        ({"hal": {"pins": {"start": -1}}}, "hal.pins.start: must be at least 0"),
        ({"hal": {"pins": {"start": 5, "stop": 5}}}, "hal.pins.stop: GPIO 5 is already the start pin"),
        ({"hal": {"pins": {"tally": 17}}}, "hal.pins.tally: GPIO 17 is already the start pin"),
        ({"device": {"state_dir": ""}}, "device.state_dir: expected a path"),
        ({"notice": {"words_per_minute": 0}}, "notice.words_per_minute: must be at least 80"),
        ({"session": {"notice_again": "yes"}}, "session.notice_again: expected true or false"),
        ({"session": {"cannot_continue_after_seconds": float("nan")}},
         "session.cannot_continue_after_seconds: must be a finite number"),
        ({"session": {"input_timeout_seconds": -1}}, "session.input_timeout_seconds: must be at least 0.2"),
        ({"spool": {"keep_receipted_days": float("nan")}}, "spool.keep_receipted_days: must be a finite number"),
        ({"spool": {"keep_receipted_days": -1}}, "spool.keep_receipted_days: must be at least 0"),
        ({"spool": {"free_space_floor_sessions": 1000}},
         "spool.free_space_floor_sessions: must be at least 0 and at most 100"),
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


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: p.write_bytes(b'[device]\nroom = "\xb2\xe2"\n'), "not UTF-8 text"),
    (lambda p: p.mkdir(), "is a folder, not a configuration file"),
    (lambda p: None, "no such configuration file"),
])
def test_an_unreadable_config_file_is_a_clear_error(tmp_path: Path, make: Callable[[Path], object],
                                                    message: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "recorder.toml"
    make(path)
    assert main(["run", "--config", str(path), "--check-config"]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err and "Traceback" not in err


def test_a_config_file_the_user_cannot_read_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "recorder.toml"
    path.write_text("")
    path.chmod(0)
    if os.access(path, os.R_OK):
        pytest.skip("root reads any file")
    with pytest.raises(ConfigError, match="not readable by this user"):
        config_mod.load(path)


def test_broken_toml_is_reported_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[device\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config_mod.load(path)


def _secure(tmp_path: Path) -> dict[str, dict[str, object]]:
    from provisioning.central_key import create_central_key, create_signing_key

    tls = {}
    for name in ("ca_file", "cert_file", "key_file"):
        (tmp_path / name).write_text("-----BEGIN-----\n")
        tls[name] = str(tmp_path / name)
    return {"device": {"central_public_key": create_central_key(tmp_path / "c.pem"),
                       "central_signing_key": create_signing_key(tmp_path / "s.pem")},
            "hal": {"backend": "pi"}, "mqtt": {"tls": tls}}


def test_each_weakness_is_named_and_a_room_box_refuses_to_start_with_any__NO_LEAK(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from firmware_py.service import Service
    from firmware_py.weaknesses import weaknesses

    weak = tmp_path / "weak.toml"
    weak.write_text('[device]\nstate_dir = "%s"\n[hal]\nbackend = "pi"\n' % (tmp_path / "state"))
    assert main(["run", "--config", str(weak), "--check-config"]) == 2
    err = capsys.readouterr().err
    for field in ("mqtt.tls: plain MQTT", "device.central_public_key: recordings are stored UNENCRYPTED",
                  "device.central_signing_key: receipts are trusted WITHOUT", "device.lab_setup = true"):
        assert field in err, err
    # The service itself refuses, before it touches any hardware.
    with pytest.raises(ServiceError, match="refusing to record in a real room"):
        Service(config_mod.load(weak))

    lab = tmp_path / "lab.toml"
    lab.write_text(weak.read_text().replace("[hal]", "lab_setup = true\n[hal]"))
    assert main(["run", "--config", str(lab), "--check-config"]) == 0
    out = capsys.readouterr().out
    assert out.count("WEAK ") == 3 and "(lab set-up)" in out

    secure = config_mod.from_dict(_secure(tmp_path))
    assert weaknesses(secure, on_raspberry_pi=True) == []
    auto = config_mod.replace(secure, hal=config_mod.HalConfig(backend="auto"))
    assert [w.field for w in weaknesses(auto, on_raspberry_pi=True)] == ["hal.backend"]
    assert weaknesses(auto, on_raspberry_pi=False) == []


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"room": {"sensor": "camera"}}, "room.sensor: 'camera' is not one of 'none', 'door', 'presence'"),
        ({"room": {"sensor": "door", "sensor_pin": 17}}, "room.sensor_pin: GPIO 17 is already the hal.pins.start"),
        ({"room": {"sensor": "presence", "sensor_pin": 9}, "hal": {"pins": {"tally": 9}}},
         "room.sensor_pin: GPIO 9 is already the hal.pins.tally pin"),
        ({"room": {"sensor_pin": 28}}, "room.sensor_pin: must be at least 0 and at most 27"),
        ({"room": {"remind_after_minutes": float("nan")}}, "room.remind_after_minutes: must be a finite number"),
        ({"room": {"alert_after_minutes": -1}}, "room.alert_after_minutes: must be at least 0.01"),
        ({"room": {"overrun_minutes": 0}}, "room.overrun_minutes: must be at least 0.01"),
        ({"room": {"booking_lead_minutes": float("inf")}}, "room.booking_lead_minutes: must be a finite number"),
        ({"room": {"booking_lead_minutes": -5}}, "room.booking_lead_minutes: must be at least 0"),
        ({"room": {"remind_after": 5}}, "room.remind_after: unknown key"),
    ],
)
def test_bad_room_settings_name_the_field__ROOM(data: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(field)):
        config_mod.from_dict(data)


def test_room_settings_take_fractions_of_a_minute_and_an_unused_pin_may_clash__ROOM() -> None:
    room = config_mod.from_dict({"room": {"sensor": "door", "remind_after_minutes": 0.02}}).room
    assert (room.sensor, room.sensor_pin, room.remind_after_minutes, room.booking_lead_minutes) == \
        ("door", 6, 0.02, 15.0)
    # Without a sensor its pin is wired to nothing, so it cannot clash.
    assert config_mod.from_dict({"room": {"sensor_pin": 17}}).room.sensor == "none"
