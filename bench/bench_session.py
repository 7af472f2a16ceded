"""Session responsiveness and footprint on the simulator (issue: a whole recorded session).

- button_to_tally_ms: START pressed (pin driven) to the tally light on; target <= 20 ms.
- button_to_notice_ms: START pressed to the first notice sample handed to the speaker; target <= 300 ms.
  Pre-flight (camera, microphone, storage, clock, prompts) runs in between.
- rss_mb_recording: resident memory of the service process (`recorder run`, default 640x360 at 15 fps)
  while recording; target <= 120 MB.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from central.receiver import Receiver
from central.store import FileStore
from firmware_py import rig as rig_mod
from firmware_py.state_machine import State
from hal.buttons.base import ButtonName
from mqtt.broker import LocalBroker
from provisioning.identity import DeviceIdentity

TRIALS = 8


def _latencies(workdir: Path, port: int) -> tuple[list[float], list[float]]:
    rig = rig_mod.make_rig(*rig_mod.configs(workdir / "latency", "127.0.0.1", port,
                                            rig_mod.fast({"notice": {"words_per_minute": 400}})))
    tally: list[float] = []
    notice: list[float] = []
    try:
        assert rig.service.hal.sim is not None
        pins = rig.service.hal.sim.pins
        for _ in range(TRIALS):
            timings = rig.service.controller.timings
            timings.tally_on = timings.notice_first_sample = None
            pressed = time.monotonic_ns()
            pins.press(rig.pin(ButtonName.START))
            rig.wait_state(State.NOTICE)
            pins.release(rig.pin(ButtonName.START))
            deadline = time.monotonic() + 5
            while timings.notice_first_sample is None and time.monotonic() < deadline:
                time.sleep(0.001)
            assert timings.tally_on is not None and timings.notice_first_sample is not None
            tally.append((timings.tally_on - pressed) / 1e6)
            notice.append((timings.notice_first_sample - pressed) / 1e6)
            rig.wait_state(State.RECORDING)
            rig.tap(ButtonName.STOP, rig.config.session.stop_hold_seconds + 0.2)
            rig.wait_state(State.IDLE)
    finally:
        rig.close()
    return tally, notice


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _rss_while_recording(workdir: Path, port: int, seconds: float = 20.0) -> float:
    state = workdir / "rss" / "device"
    config = workdir / "rss.toml"
    config.write_text(f'[device]\nstate_dir = "{state}"\n[notice]\nen = ""\n[mqtt]\nport = {port}\n')
    scenario = workdir / "rss.txt"
    scenario.write_text(f"0.3 press start\n0.4 wait recording\n{seconds} hold stop 2.5\n{seconds + 4} end\n")
    store = FileStore(workdir / "rss" / "central")
    store.enroll("SIM-0001", DeviceIdentity.load_or_create(state / "keys").public_key_b64)
    receiver = Receiver(store, "127.0.0.1", port, "recorders", "bench-receiver")
    receiver.start()
    proc = subprocess.Popen([sys.executable, "-m", "firmware_py.cli", "run", "--config", str(config), "--hal", "sim",
                             "--scenario", str(scenario)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0.0
    try:
        while proc.poll() is None:
            peak = max(peak, _rss_mb(proc.pid))
            time.sleep(0.25)
    finally:
        receiver.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"recorder run exited with {proc.returncode}")
    return peak


def run(workdir: Path) -> dict[str, object]:
    with LocalBroker(workdir / "broker") as broker:
        tally, notice = _latencies(workdir, broker.port)
        rss = _rss_while_recording(workdir, broker.port)
    return {
        "button_to_tally_ms": round(statistics.median(tally), 3),
        "button_to_tally_ms_max": round(max(tally), 3),
        "button_to_notice_ms": round(statistics.median(notice), 1),
        "button_to_notice_ms_max": round(max(notice), 1),
        "rss_mb_recording": round(rss, 1),
        "session_trials": TRIALS,
    }
