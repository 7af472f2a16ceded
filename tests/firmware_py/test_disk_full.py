"""A full disk while recording (FAULT, INTERRUPT): recording breaks off, the fault is spoken and shown, and
when the disk stays full the device says recording cannot continue; everything written before it survives;
after space is freed a restart closes the session with the break recorded, and the whole session verifies."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evidence.verify import verify_session
from firmware_py.service import Service
from firmware_py.state_machine import State
from hal.buttons.base import ButtonName
from hal.tally.base import TallyPattern
from mqtt.broker import free_port
from tests.conftest import fast_configs, make_rig, mounted_tmpfs
from tests.media import entries


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "disk", "24m") as mount:
        yield mount


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with filler.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError as err:
            assert err.errno == errno.ENOSPC
    return filler


def test_full_disk_raises_a_fault_and_loses_nothing_written__FAULT(small_disk: Path, tmp_path: Path) -> None:
    sections: dict[str, dict[str, Any]] = {"device": {"state_dir": str(small_disk / "device")},
                                          "session": {"max_minutes": 1, "cannot_continue_after_seconds": 3.0,
                                                      # The close failed on the full disk: the next start
                                                      # closes the session rather than taking it up again.
                                                      "resume_within_minutes": 0}}
    rig = make_rig(tmp_path, free_port(), with_receiver=False, **sections)
    try:
        rig.tap(ButtonName.START)
        rig.wait_state(State.RECORDING)
        time.sleep(1.5)
        filler = fill(small_disk)
        rig.wait_state(State.INTERRUPTED, timeout=20)
        assert rig.service.hal.tally.pattern is TallyPattern.FAULT
        rig.wait_state(State.FAULT, timeout=20)
        fault = rig.service.controller.last_fault or ""
        assert "cannot continue" in fault, fault
        # `recorder status` tells the technician, though the disk has no room for a new status file.
        config = tmp_path / "recorder.toml"
        config.write_text(f'[device]\nstate_dir = "{small_disk / "device"}"\n')
        status = subprocess.run([sys.executable, "-m", "firmware_py.cli", "status", "--config", str(config), "--json"],
                                capture_output=True, text=True, check=False)
        assert status.returncode == 1, status.stderr  # in fault: someone must look
        report = json.loads(status.stdout)
        assert report["state"] == "fault"
        assert "cannot continue" in report["last_fault"]
    finally:
        rig.close()
    filler.unlink()
    # The next start finds the session as the fault left it, seals what is there and closes it.
    service = Service(fast_configs(tmp_path, free_port(), **sections)[0])
    try:
        [session] = [p for p in service.config.spool_dir.iterdir() if p.is_dir()]
        log = entries(session)
        assert [e["kind"] for e in log][-1] == "close"
        assert sum(1 for e in log if e["kind"] == "segment") >= 1, "the segments before the fault are gone"
        assert verify_session(session).ok, verify_session(session).findings
    finally:
        service.hal.close()
