"""The `recorder` command as a technician types it, in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from capture.verify import verify_session
from mqtt.broker import LocalBroker
from mqtt.store import FileStore

SUBCOMMANDS = ("run", "demo", "receiver", "verify", "status", "identity", "certs", "broker-config")


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


def test_demo_runs_a_whole_session_to_a_verified_central_copy__UPLOAD_24H(tmp_path: Path) -> None:
    result = recorder("demo", "--seconds", "2", "--workdir", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verified   OK" in result.stdout
    sessions = list((tmp_path / "central" / "sessions").glob("*/*"))
    assert len(sessions) == 1
    assert verify_session(sessions[0], decode=True).ok


def write_config(tmp_path: Path, port: int) -> Path:
    config = tmp_path / "recorder.toml"
    config.write_text(
        f'[device]\nid = "GD-0007"\nstate_dir = "{tmp_path / "device"}"\n'
        '[session]\nsegment_seconds = 1.0\nstop_hold_seconds = 0.5\nmax_minutes = 5\n'
        '[notice]\nen = ""\nwords_per_minute = 320\n'
        '[video]\nwidth = 320\nheight = 240\nfps = 10\n'
        f'[mqtt]\nport = {port}\n'
        f'[receiver]\nstore_dir = "{tmp_path / "central"}"\n',
        encoding="utf-8",
    )
    return config


def test_run_with_a_scenario_records_and_status_reports__UPLOAD_24H(tmp_path: Path, broker: LocalBroker) -> None:
    config = write_config(tmp_path, broker.port)
    scenario = tmp_path / "session.txt"
    scenario.write_text("0.3 press start\n0.4 wait recording\n1 press mark\n2 hold stop 1\n4 end\n")
    receiver = subprocess.Popen([sys.executable, "-m", "firmware_py.cli", "receiver", "--config", str(config)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # The device makes its key on first use; `recorder identity` prints it for enrollment at central.
        identity = json.loads(recorder("identity", "--config", str(config), "--json").stdout)
        enroll = recorder("receiver", "--config", str(config), "--enroll", "GD-0007", identity["public_key"])
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
    assert status.returncode == 0
    report = json.loads(status.stdout)
    assert report["device"] == "GD-0007" and report["backlog_entries"] == 0
    assert report["state"] == "not running"  # the service has exited; its last status file says "stopped"


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
