"""Shared fixtures: a real Mosquitto on a free loopback port, and the product's rig (firmware_py/rig.py) on
simulated hardware with the reference receiver, configured for speed (short notice, short segments, short
STOP hold)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from central import config as central_config
from firmware_py import config as config_mod
from firmware_py import rig as rig_mod
from firmware_py.rig import Rig
from hal.buttons.base import ButtonName
from hal.clock.sim import SimClock
from mqtt.broker import LocalBroker


@contextlib.contextmanager
def mounted_tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A real small filesystem at `mount` (for full-disk tests); skips the test where it cannot be had."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        if os.path.ismount(mount):
            subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalBroker]:
    with LocalBroker(tmp_path / "broker") as b:
        yield b


def fast_configs(workdir: Path, port: int, central: dict[str, dict[str, Any]] | None = None,
                 **sections: dict[str, Any]) -> tuple[config_mod.Config, central_config.CentralConfig]:
    """The rig's fast settings with `sections` on top, for a device and central in `workdir`."""
    return rig_mod.configs(workdir, "127.0.0.1", port, rig_mod.fast(sections), central)


def make_rig(workdir: Path, port: int, with_receiver: bool = True, central: dict[str, dict[str, Any]] | None = None,
             **sections: dict[str, Any]) -> Rig:
    return rig_mod.make_rig(*fast_configs(workdir, port, central, **sections), with_receiver)


@pytest.fixture
def rig(tmp_path: Path, broker: LocalBroker) -> Iterator[Rig]:
    r = make_rig(tmp_path, broker.port)
    yield r
    r.close()


@dataclass
class RecordedSession:
    rig: Rig
    session: str
    spool_dir: Path
    central_dir: Path


@pytest.fixture(scope="session")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordedSession]:
    """One whole session recorded and uploaded once, shared by the tests that only read it."""
    workdir = tmp_path_factory.mktemp("recorded")
    with LocalBroker(workdir / "broker") as b:
        r = make_rig(workdir, b.port, notice={"closing_statement": True})
        def mark_after_a_second() -> None:
            time.sleep(1.0)
            r.tap(ButtonName.MARK)

        try:
            session = r.record(3.0, during=mark_after_a_second)
            assert r.service.spool.wait_drained(60), "central did not receipt the session"
            yield RecordedSession(r, session, r.config.spool_dir / session, r.central_dir(session))
        finally:
            r.close()


LONG_AGO_DAYS = 210
"""Seven months: past the everyday retention's six."""


@pytest.fixture(scope="session")
def recorded_long_ago(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordedSession]:
    """One whole session whose device clock ran LONG_AGO_DAYS behind: its signed times are seven months old,
    as a session recorded then would be (retention counts from the later of them and central's storage,
    which a test sets with the entry files' times)."""
    workdir = tmp_path_factory.mktemp("recorded-long-ago")
    with LocalBroker(workdir / "broker") as b:
        r = make_rig(workdir, b.port)
        try:
            clock = r.service.hal.clock
            assert isinstance(clock, SimClock)
            clock.step(-LONG_AGO_DAYS * 86400)
            session = r.record(1.0)
            assert r.service.spool.wait_drained(60), "central did not receipt the session"
            yield RecordedSession(r, session, r.config.spool_dir / session, r.central_dir(session))
        finally:
            r.close()


def wait_until(condition: Callable[[], object], timeout: float = 15.0) -> bool:
    """Whether `condition` came true within `timeout` seconds (asked every 20 ms)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
