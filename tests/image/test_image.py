"""The Raspberry Pi OS image folder: the example configuration, the systemd unit and the installer.

Nothing here needs root or changes the system: the installer is only parsed, linted, asked for --help and
given bad arguments (all of which it answers before doing anything), and its helper functions are sourced
and run on files under tmp_path.
"""

from __future__ import annotations

import configparser
import dataclasses
import re
import shutil
import subprocess
import tomllib
import types
import typing
from pathlib import Path

import pytest

from firmware_py import config as config_mod
from firmware_py.cli import DEFAULT_CONFIG

IMAGE = Path(__file__).resolve().parents[2] / "image"
EXAMPLE = IMAGE / "recorder.toml"
UNIT = IMAGE / "recorder.service"
INSTALL = IMAGE / "install.sh"
README = IMAGE / "README.md"


# ---- the example configuration ---------------------------------------------------------------------------


def test_example_config_loads_validates_and_drives_real_hardware() -> None:
    cfg = config_mod.load(EXAMPLE)
    assert cfg.hal.backend == "pi"
    assert cfg.device.state_dir == config_mod.DeviceConfig().state_dir == Path("/var/lib/recorder")
    assert (cfg.video.width, cfg.video.height, cfg.video.fps) == (1280, 720, 25)
    assert cfg.hal.pins == config_mod.PinsConfig(), "the README's wiring table documents the default pins"
    assert cfg.mqtt.host != "127.0.0.1", "a box sends to central, not to itself"


def _expected_keys(cls: type) -> dict[str, object]:
    """Every key a TOML file may hold for `cls`: nested tables for dataclass fields, lists of tables for
    tuples of dataclasses (like session.officers)."""
    hints = typing.get_type_hints(cls)
    keys: dict[str, object] = {}
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        args = typing.get_args(hint)
        if dataclasses.is_dataclass(hint):
            keys[field.name] = _expected_keys(typing.cast(type, hint))
        elif typing.get_origin(hint) is tuple and args and dataclasses.is_dataclass(args[0]):
            keys[field.name] = [_expected_keys(typing.cast(type, args[0]))]
        elif _optional_table(hint) is not None:
            continue  # off when absent, so shown commented out (the test below)
        else:
            keys[field.name] = None
    return keys


def _missing(expected: dict[str, object], data: dict[str, object], prefix: str = "") -> list[str]:
    missing: list[str] = []
    for key, sub in expected.items():
        name = f"{prefix}{key}"
        if key not in data:
            missing.append(name)
        elif isinstance(sub, dict):
            value = data[key]
            assert isinstance(value, dict), name
            missing += _missing(sub, value, f"{name}.")
        elif isinstance(sub, list):
            items = data[key]
            assert isinstance(items, list) and items, name
            for i, item in enumerate(items):
                missing += _missing(sub[0], item, f"{name}[{i}].")
    return missing


def test_example_config_shows_every_section_and_key() -> None:
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    assert _missing(_expected_keys(config_mod.Config), data) == []


def _optional_table(hint: object) -> type | None:
    """X for a field typed `X | None` with X a table: a table whose absence turns a feature off."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is types.UnionType and len(args) == 1 and dataclasses.is_dataclass(args[0]):
        return typing.cast(type, args[0])
    return None


def _optional_tables(cls: type, prefix: str = "") -> dict[str, type]:
    tables: dict[str, type] = {}
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        if (table := _optional_table(hint)) is not None:
            tables[prefix + field.name] = table
        elif dataclasses.is_dataclass(hint):
            tables.update(_optional_tables(typing.cast(type, hint), f"{prefix}{field.name}."))
    return tables


def test_example_config_shows_optional_tables_commented_out() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    tables = _optional_tables(config_mod.Config)
    assert "mqtt.tls" in tables
    for name, table in tables.items():
        assert re.search(rf"^# \[{re.escape(name)}\]$", text, re.MULTILINE), f"no commented-out [{name}]"
        for field in dataclasses.fields(table):
            assert re.search(rf"^# {field.name} = ", text, re.MULTILINE), f"{name}.{field.name} not shown"


# ---- the systemd unit -------------------------------------------------------------------------------------


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    return parser


def _all_values(key: str) -> list[str]:
    """Every value of a key that systemd lets repeat (configparser keeps only the last)."""
    return [m.group(1).strip() for m in re.finditer(rf"^{key}=(.*)$", UNIT.read_text(), re.MULTILINE)]


def _install_var(name: str) -> str:
    """A variable as install.sh sets it (by sourcing the script, which then runs nothing)."""
    result = subprocess.run(
        ["bash", "-c", 'source "$1" && printf "%s" "${!2}"', "_", str(INSTALL), name],
        capture_output=True, text=True, check=True,
    )
    return result.stdout


def test_unit_parses_as_ini_and_runs_the_recorder_as_its_own_user() -> None:
    unit = _unit()
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    assert service["ExecStart"] == "/opt/recorder/venv/bin/recorder run --config /etc/recorder/recorder.toml"
    pre = service["ExecStartPre"].split()
    assert pre[:2] == ["/opt/recorder/venv/bin/recorder", "run"]
    assert "--check-config" in pre and pre[pre.index("--config") + 1] == "/etc/recorder/recorder.toml"
    assert service["User"] == "recorder"
    assert set(service["SupplementaryGroups"].split()) >= {"video", "audio", "gpio"}
    assert service["Restart"] == "always"
    assert service["RestartSec"].endswith("s") and float(service["RestartSec"][:-1]) <= 5
    assert unit["Unit"]["StartLimitIntervalSec"] == "0", "an unattended box never stops retrying"
    assert service["StateDirectory"] == "recorder"
    assert service["KillSignal"] == "SIGTERM"
    assert service["TimeoutStopSec"].endswith("s") and float(service["TimeoutStopSec"][:-1]) >= 60
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    # A hung service is restarted: the service feeds the watchdog only while its threads are all alive.
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert service["WatchdogSec"].endswith("s") and 10 <= float(service["WatchdogSec"][:-1]) <= 120
    assert service.get("SyslogLevelPrefix", "yes") == "yes"


def test_unit_keeps_the_hardware_reachable() -> None:
    service = _unit()["Service"]
    assert "ProtectClock" not in service, "it blocks adjtimex(), which the clock pre-flight check reads"
    assert service.get("PrivateDevices", "no") == "no"
    assert "DevicePolicy" not in service and "DeviceAllow" not in service
    assert service.get("MemoryDenyWriteExecute", "no") == "no", "sounddevice's callbacks are cffi closures"
    environment = " ".join(_all_values("Environment"))
    assert "LG_WD=/run/recorder" in environment and service["RuntimeDirectory"] == "recorder"
    assert "GPIOZERO_PIN_FACTORY=lgpio" in environment
    assert service["ProtectSystem"] == "strict" and service["NoNewPrivileges"] == "yes"


def test_unit_agrees_with_the_project_and_the_installer() -> None:
    unit = _unit()
    service = unit["Service"]
    assert f"--config {DEFAULT_CONFIG}" in service["ExecStart"]
    assert Path("/var/lib") / service["StateDirectory"] == config_mod.DeviceConfig().state_dir
    assert unit["Unit"]["RequiresMountsFor"] == str(config_mod.DeviceConfig().state_dir)
    assert service["ExecStart"].split()[0] == _install_var("VENV") + "/bin/recorder"
    assert _install_var("CONF") == str(DEFAULT_CONFIG)
    assert _install_var("STATE") == str(config_mod.DeviceConfig().state_dir)
    documentation = unit["Unit"]["Documentation"].removeprefix("file:")
    assert Path(documentation) == Path(_install_var("PREFIX")) / "image" / README.name


def _unit_with_real_binaries(tmp_path: Path) -> Path:
    true = shutil.which("true")
    assert true is not None
    copy = tmp_path / UNIT.name  # the same name: verify checks the name against the unit type
    copy.write_text(UNIT.read_text().replace("/opt/recorder/venv/bin/recorder", true))
    return copy


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (apt install systemd); the INI checks above still ran")
    copy = _unit_with_real_binaries(tmp_path)
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy)],
                            capture_output=True, text=True, timeout=60)
    # verify exits 0 on unknown keys and bad values ("..., ignoring."), so any line about the file fails too.
    complaints = [line for line in (result.stdout + result.stderr).splitlines()
                  if str(copy) in line or line.startswith(f"{UNIT.name}:")]
    assert result.returncode == 0 and complaints == [], result.stdout + result.stderr


def test_systemd_analyze_rates_the_sandbox_ok(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (apt install systemd)")
    copy = _unit_with_real_binaries(tmp_path)
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(copy)],
                            capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    if match is None:
        pytest.skip(f"this systemd-analyze cannot rate a unit file offline: {result.stderr.strip()[:200]}")
    assert float(match.group(1)) <= 4.0, result.stdout


# ---- the installer ----------------------------------------------------------------------------------------


def test_install_script_is_executable_bash_that_parses() -> None:
    assert INSTALL.stat().st_mode & 0o111, "the README runs it as ./image/install.sh"
    assert INSTALL.read_text().startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in INSTALL.read_text()
    result = subprocess.run(["bash", "-n", str(INSTALL)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_install_script_passes_shellcheck() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt install shellcheck); bash -n still checked the syntax")
    result = subprocess.run(["shellcheck", "--shell=bash", str(INSTALL)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def _run_install(*args: str) -> subprocess.CompletedProcess[str]:
    # Only --help and argument errors: install.sh answers both before it checks for root or changes anything.
    return subprocess.run(["bash", str(INSTALL), *args], capture_output=True, text=True, timeout=30)


def test_install_help_lists_the_options() -> None:
    result = _run_install("--help")
    assert result.returncode == 0
    for option in ("--config", "--spool-device", "--format-spool", "--mic", "--speaker", "--ntp", "--no-overlay",
                   "--overlay on|off", "--status", "--enrollment", "--enroll URL TOKEN"):
        assert option in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--colour"], "unknown option --colour"),
        (["--overlay", "sideways"], "--overlay takes on or off"),
        (["--mic"], "--mic needs a value"),
        (["--spool-device", "/dev/sdz1", "--format-spool", "/dev/sdz"], "not both"),
        (["--enroll", "https://central:8443"], "--enroll needs the address and the token"),
    ],
)
def test_install_rejects_bad_arguments_before_doing_anything(args: list[str], message: str) -> None:
    result = _run_install(*args)
    assert result.returncode == 2
    assert message in result.stderr


def _call(function: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run one of install.sh's helper functions (sourcing the script defines them and runs nothing)."""
    return subprocess.run(["bash", "-c", 'source "$1" && shift && "$@"', "_", str(INSTALL), function, *args],
                          capture_output=True, text=True, timeout=30)


def test_a_second_run_over_the_same_checkout_knows_the_program_is_installed(tmp_path: Path) -> None:
    # install.sh reinstalls the program (and so restarts the service) only when this digest changes.
    tree = tmp_path / "checkout"
    (tree / "firmware_py").mkdir(parents=True)
    (tree / "firmware_py" / "cli.py").write_text("print('v1')\n")
    (tree / ".git").mkdir()
    (tree / ".git" / "HEAD").write_text("ref: a\n")
    first = _call("source_digest", str(tree)).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    (tree / ".git" / "HEAD").write_text("ref: b\n")  # what is not installed does not count
    (tree / "firmware_py" / "__pycache__").mkdir()
    (tree / "firmware_py" / "__pycache__" / "cli.pyc").write_bytes(b"x")
    assert _call("source_digest", str(tree)).stdout.strip() == first
    (tree / "firmware_py" / "cli.py").write_text("print('v2')\n")
    assert _call("source_digest", str(tree)).stdout.strip() != first


RPI_CMDLINE = ("console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 fsck.repair=yes "
               "rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot")


@pytest.mark.parametrize(
    ("before", "state"),
    [
        (RPI_CMDLINE, "off"),
        (f"overlayroot=tmpfs {RPI_CMDLINE}", "all-mounts"),  # what raspi-config nonint enable_overlayfs writes
        (f"overlayroot=tmpfs:recurse=0 {RPI_CMDLINE}", "on"),
        (f"{RPI_CMDLINE} overlayroot=tmpfs:swap=1", "all-mounts"),
    ],
)
def test_cmdline_overlay_is_limited_to_the_root_and_can_be_undone(tmp_path: Path, before: str, state: str) -> None:
    cmdline = tmp_path / "cmdline.txt"
    cmdline.write_text(before + "\n")
    assert _call("cmdline_overlay_state", str(cmdline)).stdout.strip() == state

    assert _call("cmdline_overlay_on", str(cmdline)).returncode == 0
    assert cmdline.read_text() == f"overlayroot=tmpfs:recurse=0 {RPI_CMDLINE}\n"
    assert _call("cmdline_overlay_state", str(cmdline)).stdout.strip() == "on"
    assert _call("cmdline_overlay_on", str(cmdline)).returncode == 0  # twice: still one token
    assert cmdline.read_text() == f"overlayroot=tmpfs:recurse=0 {RPI_CMDLINE}\n"

    assert _call("cmdline_overlay_off", str(cmdline)).returncode == 0
    assert cmdline.read_text() == RPI_CMDLINE + "\n"
    assert _call("cmdline_overlay_state", str(cmdline)).stdout.strip() == "off"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmdline.txt"]


def _fake_card(asound: Path, number: int, card_id: str, pcms: list[str], usb: bool) -> None:
    card = asound / f"card{number}"
    card.mkdir(parents=True)
    (card / "id").write_text(card_id + "\n")
    for pcm in pcms:
        (card / pcm).mkdir()
    if usb:
        (card / "usbid").write_text("0d8c:0014\n")


def test_usb_microphone_and_speaker_are_found_by_card_id(tmp_path: Path) -> None:
    asound = tmp_path / "asound"
    _fake_card(asound, 0, "vc4hdmi0", ["pcm0p"], usb=False)
    _fake_card(asound, 1, "Headphones", ["pcm0p"], usb=False)
    _fake_card(asound, 2, "Microphone", ["pcm0c"], usb=True)
    _fake_card(asound, 3, "UACDemoV10", ["pcm0p"], usb=True)
    assert _call("find_usb_card", "c", str(asound)).stdout.strip() == "Microphone"
    assert _call("find_usb_card", "p", str(asound)).stdout.strip() == "UACDemoV10"
    empty = tmp_path / "none"
    empty.mkdir()
    assert _call("find_usb_card", "c", str(empty)).returncode != 0


def test_asound_conf_makes_the_usb_cards_the_default_device() -> None:
    result = _call("asound_conf", "Microphone", "UACDemoV10")
    assert result.returncode == 0
    text = result.stdout
    assert text.startswith(_install_var("ASOUND_MARK"))
    assert re.search(r"pcm\.!default \{\s*type asym", text)
    assert 'slave.pcm "hw:CARD=Microphone,DEV=0"' in text
    assert 'slave.pcm "hw:CARD=UACDemoV10,DEV=0"' in text
    assert text.count("{") == text.count("}")
    assert _call("valid_card_id", "UACDemoV10").returncode == 0
    assert _call("valid_card_id", 'x" } pcm.evil {').returncode != 0


def test_overlay_is_refused_when_the_spool_is_not_a_disk_of_its_own(tmp_path: Path) -> None:
    if shutil.which("findmnt") is None:
        pytest.skip("findmnt (util-linux) is not installed")
    folder = _call("spool_mount_problem", str(tmp_path)).stdout
    assert "is not a mount point" in folder
    root = _call("spool_mount_problem", "/").stdout
    assert "root filesystem" in root
    missing = _call("spool_mount_problem", str(tmp_path / "absent")).stdout
    assert missing.strip() != ""


def test_installer_installs_the_files_that_exist_here() -> None:
    script = INSTALL.read_text()
    for name in re.findall(r'"\$SRC/image/([\w.]+)"', script):
        assert (IMAGE / name).is_file(), name
    packages = subprocess.run(["bash", "-c", 'source "$1" && printf "%s\\n" "${APT_PACKAGES[@]}"', "_", str(INSTALL)],
                              capture_output=True, text=True, check=True).stdout.split()
    assert {"python3-picamera2", "python3-libcamera", "python3-venv", "espeak-ng", "libportaudio2",
            "fonts-wqy-microhei", "ffmpeg"} <= set(packages)
    assert "--system-site-packages" in script and '"${build}[pi]"' in script
    assert "raspi-config nonint enable_overlayfs" in script


# ---- the guide --------------------------------------------------------------------------------------------


def test_readme_wiring_uses_the_default_pins() -> None:
    text = README.read_text(encoding="utf-8")
    pins = config_mod.PinsConfig()
    for name in ("start", "stop", "mark", "tally"):
        label = "tally LED" if name == "tally" else f"{name.upper()} button"
        row = next(line for line in text.splitlines() if line.startswith(f"| {label} |"))
        assert f"| GPIO{getattr(pins, name)} |" in row, row


def test_readme_names_the_commands_a_technician_runs() -> None:
    text = README.read_text(encoding="utf-8")
    for command in ("install.sh", "recorder run --config /etc/recorder/recorder.toml --check-config",
                    "systemctl status recorder", "journalctl -u recorder", "recorder status",
                    "raspi-config nonint enable_overlayfs", "--overlay off", "recorder enroll https://",
                    "recorder central token --device", "install.sh --format-spool /dev/sda --yes",
                    "recorder central revoke", "recorder central approve-key"):
        assert command in text, command
