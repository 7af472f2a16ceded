"""The `recorder` command as a technician types it, in a fresh process."""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from capture.probe import decodes
from central.store import FileStore
from evidence.verify import verify_session
from firmware_py.cli import build_parser
from mqtt.broker import LocalBroker, free_port

SUBCOMMANDS = ("run", "demo", "verify", "status", "identity", "central")
CENTRAL_ACTIONS = ("serve", "enroll", "sessions", "late", "reindex", "key", "certs", "broker-config")


def recorder(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firmware_py.cli", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_help_lists_every_subcommand_and_each_has_its_own_help() -> None:
    top = recorder("--help")
    assert top.returncode == 0
    for name in SUBCOMMANDS:
        assert name in top.stdout
        sub = recorder(name, "--help")
        assert sub.returncode == 0 and "usage: recorder " + name in sub.stdout
    central = recorder("central", "--help").stdout
    for action in CENTRAL_ACTIONS:
        assert action in central
        sub = recorder("central", action, "--help")
        assert sub.returncode == 0 and f"usage: recorder central {action}" in sub.stdout


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _parsers(sub)
    return found


def test_every_option_of_every_command_says_what_it_is_for() -> None:
    undocumented = [f"{p.prog} {'/'.join(a.option_strings) or a.dest}" for p in _parsers(build_parser())
                    for a in p._actions if not a.help and not isinstance(a, argparse._SubParsersAction)]
    assert not undocumented


def test_version_and_verbose_after_the_subcommand() -> None:
    version = recorder("--version")
    assert version.returncode == 0 and version.stdout.startswith("recorder ")
    assert build_parser().parse_args(["verify", "x", "-v"]).verbose is True
    assert build_parser().parse_args(["-v", "verify", "x"]).verbose is True
    assert build_parser().parse_args(["verify", "x"]).verbose is False


@pytest.mark.parametrize("seconds", ["-1", "nan", "inf", "0", "1e308"])
def test_demo_refuses_impossible_durations(seconds: str) -> None:
    result = recorder("demo", "--seconds", seconds)
    assert result.returncode == 2 and "--seconds" in result.stderr and "Traceback" not in result.stderr


def test_demo_runs_a_whole_session_to_a_verified_central_copy__UPLOAD_24H(tmp_path: Path) -> None:
    result = recorder("demo", "--seconds", "2", "--workdir", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verified   OK" in result.stdout
    # ...the legal office's evidence package of it, checked by its own verifier on a bare Python...
    assert "exported   evidence package" in result.stdout
    assert "checked    by its own verifier on bare Python: RESULT    OK" in result.stdout
    # ...and where to watch it: the web application's configuration and an account made for the demo.
    assert re.search(r"watch      http://127\.0\.0\.1:\d+/s/SIM-0001/\d{8}T\d{6}Z-[0-9a-f]{6}/", result.stdout)
    assert "log in as demo / " in result.stdout and (tmp_path / "central-web.toml").is_file()
    sessions = list((tmp_path / "central" / "sessions").glob("*/*"))
    assert len(sessions) == 1
    assert verify_session(sessions[0], decode=decodes).ok


def write_config(tmp_path: Path, port: int, extra: str = "") -> Path:
    config = tmp_path / "recorder.toml"
    config.write_text(
        f'[device]\nid = "GD-0007"\nstate_dir = "{tmp_path / "device"}"\n'
        '[session]\nsegment_seconds = 1.0\nstop_hold_seconds = 0.5\nmax_minutes = 5\n'
        '[notice]\nen = ""\nwords_per_minute = 320\n'
        '[video]\nwidth = 320\nheight = 240\nfps = 10\n'
        f'[mqtt]\nport = {port}\nretry_max_seconds = 2\n' + extra,
        encoding="utf-8",
    )
    return config


def write_central_config(tmp_path: Path, port: int) -> Path:
    config = tmp_path / "central.toml"
    config.write_text(f'[mqtt]\nport = {port}\n[receiver]\nstore_dir = "{tmp_path / "central"}"\n', encoding="utf-8")
    return config


def test_run_with_a_scenario_records_and_status_reports__UPLOAD_24H(tmp_path: Path, broker: LocalBroker) -> None:
    config = write_config(tmp_path, broker.port)
    central = write_central_config(tmp_path, broker.port)
    scenario = tmp_path / "session.txt"
    scenario.write_text("0.3 press start\n0.4 wait recording\n1 press mark\n2 hold stop 1\n4 end\n")
    receiver = subprocess.Popen([sys.executable, "-m", "firmware_py.cli", "central", "serve", "--config", str(central)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # Read-only commands create nothing: the device has no key until the service or --create makes it.
        missing = recorder("identity", "--config", str(config))
        assert missing.returncode == 2 and "has no signing key yet" in missing.stderr
        assert not (tmp_path / "device").exists()
        assert recorder("status", "--config", str(config)).returncode == 1  # not running
        assert not (tmp_path / "device").exists()
        identity = json.loads(recorder("identity", "--config", str(config), "--json", "--create").stdout)
        enroll = recorder("central", "enroll", "--config", str(central), "GD-0007", identity["public_key"])
        assert enroll.returncode == 0, enroll.stderr
        run = recorder("run", "--config", str(config), "--hal", "sim", "--scenario", str(scenario),
                       "--drain-seconds", "30")
        assert run.returncode == 0, run.stderr
    finally:
        receiver.terminate()
        receiver.wait(10)
    store = FileStore(tmp_path / "central")
    sessions = list((tmp_path / "central" / "sessions" / "GD-0007").iterdir())
    assert len(sessions) == 1
    assert verify_session(sessions[0], trusted_key_b64=store.device_key("GD-0007")).ok
    status = recorder("status", "--config", str(config), "--json")
    assert status.returncode == 1  # the service has exited: someone must look
    report = json.loads(status.stdout)
    assert report["device"] == "GD-0007" and report["backlog_entries"] == 0
    assert report["state"] == "not running"  # its last status file says "stopped"


def test_run_exits_nonzero_while_central_has_not_receipted__UPLOAD_24H(tmp_path: Path) -> None:
    # A device pointed at a port where nothing listens records, keeps everything, and says what is waiting.
    config = write_config(tmp_path, free_port())
    scenario = tmp_path / "session.txt"
    scenario.write_text("0.3 press start\n0.4 wait recording\n1 hold stop 1\n3 end\n")
    run = recorder("run", "--config", str(config), "--hal", "sim", "--scenario", str(scenario),
                   "--drain-seconds", "1")
    assert run.returncode == 1, run.stderr
    assert re.search(r"\d+ entries \([\d.]+ MB\) are still waiting for central's receipt", run.stderr), run.stderr
    assert "Traceback" not in run.stderr


def test_a_scenario_that_ends_in_fault_fails_at_once(tmp_path: Path) -> None:
    # Pre-flight wants room for 24 h at 50 Mbit/s (about 540 GB): it fails, and the device is left in fault.
    config = write_config(tmp_path, free_port())
    text = config.read_text().replace("max_minutes = 5", "max_minutes = 1440").replace(
        "fps = 10\n", "fps = 10\nbitrate = 50000000\n")
    config.write_text(text)
    scenario = tmp_path / "fault.txt"
    scenario.write_text("0.5 press start\n0.6 wait fault\n3 end\n")
    # Within a minute (the timeout): a `wait` or `end` that cannot be met gives up only after two.
    run = recorder("run", "--config", str(config), "--hal", "sim", "--scenario", str(scenario), timeout=60)
    assert run.returncode == 1
    assert "the device ended in fault: storage" in run.stderr


def test_an_interrupted_scenario_exits_nonzero(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_port())
    scenario = tmp_path / "long.txt"
    scenario.write_text("0.3 press start\n0.4 wait recording\n3600 end\n")
    proc = subprocess.Popen([sys.executable, "-m", "firmware_py.cli", "run", "--config", str(config), "--hal", "sim",
                             "--scenario", str(scenario)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    status = tmp_path / "device" / "status.json"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and '"recording"' not in (status.read_text() if status.exists() else ""):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted before the scenario ended" in err


@pytest.mark.parametrize(
    ("scenario", "message"),
    [("1 press start\n2 jump stop\n", "session.txt:2: cannot read '2 jump stop'")],
)
def test_bad_scenario_exits_nonzero_naming_the_line(tmp_path: Path, scenario: str, message: str) -> None:
    config = write_config(tmp_path, 1)
    path = tmp_path / "session.txt"
    path.write_text(scenario)
    run = recorder("run", "--config", str(config), "--hal", "sim", "--scenario", str(path))
    assert run.returncode == 2
    assert message in run.stderr


def test_verify_of_a_folder_without_sessions_says_so(tmp_path: Path) -> None:
    result = recorder("verify", str(tmp_path))
    assert result.returncode == 2
    assert "no session found" in result.stderr


@pytest.mark.parametrize(("setup", "message"), [
    ("state_dir is a file", "is a file, not a folder"),
    ("key is a folder", "cannot read the signing key"),
    ("scenario not UTF-8", "not UTF-8 text"),
    ("scenario time 1e308", "must be between 0 and 86400 seconds"),
    ("scenario is a folder", "cannot read the scenario"),
])
def test_bad_files_are_named_without_a_traceback(tmp_path: Path, setup: str, message: str) -> None:
    state = tmp_path / "device"
    config = write_config(tmp_path, free_port())
    scenario = tmp_path / "session.txt"
    scenario.write_text("0.3 press start\n1 end\n")
    if setup == "state_dir is a file":
        state.write_text("not a folder")
    elif setup == "key is a folder":
        (state / "keys" / "device-ed25519.pem").mkdir(parents=True)
    elif setup == "scenario not UTF-8":
        scenario.write_bytes(b"0.3 press start # \xb2\xe2\n")
    elif setup == "scenario time 1e308":
        scenario.write_text("1e308 press start\n")
    else:
        scenario.unlink()
        scenario.mkdir()
    run = recorder("run", "--config", str(config), "--hal", "sim", "--scenario", str(scenario), "--drain-seconds",
                   "0", timeout=60)
    assert run.returncode == 2, run.stderr
    assert message in run.stderr and "Traceback" not in run.stderr, run.stderr
