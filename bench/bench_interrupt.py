"""Interruptions (issue 8: a session that survives interruptions).

- resume_after_restart_s: the service restarted after kill -9 (the `recorder run` process started) to the
  first frame of the resumed run, read from the ledger's `resumed_wall`; target <= 3 s. It includes the
  process's own start (Python, PyAV, numpy, the prompts) and crash recovery.
- fault_to_resume_s: a camera fault clears (the simulated camera delivers frames again) to the first frame
  of the resumed run; target <= 1.5 s. The device retries every `session.resume_retry_seconds` (0.5 s).
- interruption_gap_after_restart_s, interruption_gap_fault_s: the break as the ledger records it
  (`resumed_ns - began_ns` of the `interruption` entry). After a restart it includes the time the service
  was down; after a camera fault, the `session.input_timeout_seconds` (1 s) it takes to tell a stalled camera
  from a slow frame, and the fault itself (FAULT_S).
Each figure is the median of its trials, with the worst alongside.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from capture.ledger import read_entries
from firmware_py import rig as rig_mod
from firmware_py.crash_trials import kill9_and_resume
from firmware_py.state_machine import State
from hal.buttons.base import ButtonName
from mqtt.broker import LocalBroker

RESTARTS = 3
FAULTS = 5
FAULT_S = 1.0


def _restarts(workdir: Path, port: int) -> tuple[list[float], list[float]]:
    to_frame: list[float] = []
    gaps: list[float] = []
    for trial in range(RESTARTS):
        outcome = kill9_and_resume(workdir / f"restart-{trial}", port)
        to_frame.append(outcome.restart_to_first_frame_s)
        gaps.append(outcome.gap_s)
    return to_frame, gaps


def _faults(workdir: Path, port: int) -> tuple[list[float], list[float]]:
    rig = rig_mod.make_rig(*rig_mod.configs(workdir / "faults", "127.0.0.1", port, rig_mod.fast()))
    to_frame: list[float] = []
    try:
        sim = rig.service.hal.sim
        assert sim is not None
        controller = rig.service.controller
        rig.tap(ButtonName.START)
        rig.wait_state(State.RECORDING)
        for _ in range(FAULTS):
            sim.fault("camera", True)
            rig.wait_state(State.INTERRUPTED, 10)
            time.sleep(FAULT_S)
            resumed = len(controller.timings.resumed)
            cleared = time.monotonic_ns()
            sim.fault("camera", False)
            rig.wait_state(State.EXPLAINING, 10)
            to_frame.append((controller.timings.resumed[resumed] - cleared) / 1e9)
            rig.wait_state(State.RECORDING, 60)
        rig.tap(ButtonName.STOP, rig.config.session.stop_hold_seconds + 0.3)
        rig.wait_state(State.IDLE, 60)
        session = controller.timings.sessions_closed[-1]
        gaps = [(gap.resumed_ns - gap.began_ns) / 1e9 for e in read_entries(rig.config.spool_dir / session)
                if (gap := e.interruption) is not None and gap.resumed_ns is not None and gap.began_ns is not None]
    finally:
        rig.close()
    return to_frame, gaps


def run(workdir: Path) -> dict[str, object]:
    with LocalBroker(workdir / "broker") as broker:
        restart, restart_gaps = _restarts(workdir, broker.port)
        fault, fault_gaps = _faults(workdir, broker.port)
    return {
        "resume_after_restart_s": round(statistics.median(restart), 3),
        "resume_after_restart_worst_s": round(max(restart), 3),
        "interruption_gap_after_restart_s": round(statistics.median(restart_gaps), 3),
        "fault_to_resume_s": round(statistics.median(fault), 3),
        "fault_to_resume_worst_s": round(max(fault), 3),
        "interruption_gap_fault_s": round(statistics.median(fault_gaps), 3),
        "interruption_fault_trials": len(fault),
        "interruption_restart_trials": len(restart),
    }
