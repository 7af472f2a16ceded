"""Bringing up a room (issue 9: technicians bring up a room in minutes).

provision_s: a token issued at central → `recorder enroll` on the box (a process of its own: keys made,
claim over HTTPS, configuration written) → `recorder run` started on that configuration (the simulated
hardware, everything else as enrolled: mutual TLS, sealed segments, signed receipts, the default notice)
→ a test session recorded (START, RECORD_S seconds, STOP held) → every entry of it receipted by central
(the command exits 0 only then). On loopback, against a Mosquitto with the dynamic-security plugin to which
enrollment added the device. Target <= 60 s of machine time. Each part is reported too; the median of
TRIALS rooms (each a new device id and token), with the worst alongside.

It leaves out what only a real Pi costs: apt and pip in install.sh (minutes; a local wheelhouse helps), the
camera's start, and the technician walking to the buttons.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from firmware_py import rig as rig_mod
from provisioning.enrollment import Room

TRIALS = 3
RECORD_S = 3.0


def _room(trial: int) -> Room:
    return Room(f"BENCH-R{trial:02d}", "示例执法单位", f"询问室{trial}", "示例市示例路1号", "Asia/Shanghai", ())


def _trial(central: rig_mod.DeployedCentral, box: Path, trial: int) -> tuple[float, float, float]:
    command = [sys.executable, "-m", "firmware_py.cli"]
    config = box / "recorder.toml"
    scenario = box / "test-session.txt"
    box.mkdir(parents=True)
    scenario.write_text(f"0.5 press start\n1 wait recording\n{RECORD_S} hold stop 2.5\n{RECORD_S} wait idle\n1 end\n")
    started = time.monotonic()
    token = central.enrollment.issue_token(_room(trial), "bench").token
    subprocess.run([*command, "enroll", central.url, str(token), "--config", str(config), "--state-dir",
                    str(box / "state")], check=True, capture_output=True, timeout=60)
    enrolled = time.monotonic()
    result = subprocess.run([*command, "run", "--config", str(config), "--hal", "sim", "--scenario", str(scenario),
                             "--drain-seconds", "60"], capture_output=True, timeout=180)
    if result.returncode != 0:
        raise RuntimeError(f"the enrolled box's test session was not receipted: {result.stderr.decode()[-2000:]}")
    done = time.monotonic()
    return done - started, enrolled - started, done - enrolled


def run(workdir: Path) -> dict[str, object]:
    central = rig_mod.start_deployed_central(workdir / "central")
    try:
        trials = [_trial(central, workdir / f"box-{n}", n) for n in range(TRIALS)]
    finally:
        central.close()
    total, enroll, session = (sorted(column) for column in zip(*trials, strict=True))
    return {
        "provision_s": round(statistics.median(total), 2),
        "provision_worst_s": round(total[-1], 2),
        "provision_enroll_s": round(statistics.median(enroll), 2),
        "provision_first_session_s": round(statistics.median(session), 2),
        "provision_test_recording_s": RECORD_S,
    }
