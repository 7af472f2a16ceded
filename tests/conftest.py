"""Shared fixtures: a real Mosquitto on a free loopback port, and a recorder rig on simulated hardware
with the reference receiver, configured for speed (short notice, short segments, short STOP hold)."""

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

from firmware_py import config as config_mod
from firmware_py.central import build_receiver, central_key_sections
from firmware_py.service import Service, wait_for_state
from firmware_py.state_machine import State
from hal.buttons.base import ButtonName
from mqtt.broker import LocalBroker
from mqtt.receiver import Receiver
from mqtt.store import FileStore


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


def fast_config(workdir: Path, port: int, **sections: dict[str, Any]) -> config_mod.Config:
    """Fast settings, and segments sealed to a central key pair made in `workdir` (as deployed)."""
    keys = central_key_sections(workdir / "central-key.pem")
    data: dict[str, Any] = {
        "device": {"state_dir": str(workdir / "device"), **keys["device"]},
        "hal": {"backend": "sim"},
        "session": {"segment_seconds": 1.0, "stop_hold_seconds": 0.5, "max_minutes": 10},
        "notice": {"en": "", "words_per_minute": 320},
        "video": {"width": 320, "height": 240, "fps": 10, "bitrate": 300_000},
        "mqtt": {"host": "127.0.0.1", "port": port, "retry_max_seconds": 2},
        "receiver": {"store_dir": str(workdir / "central"), **keys["receiver"]},
    }
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return config_mod.from_dict(data)


@dataclass
class Rig:
    config: config_mod.Config
    service: Service
    store: FileStore
    receiver: Receiver | None

    def pin(self, button: ButtonName) -> int:
        return int(getattr(self.config.hal.pins, button.value))

    def tap(self, button: ButtonName, seconds: float = 0.05) -> None:
        assert self.service.hal.sim is not None
        self.service.hal.sim.pins.tap(self.pin(button), seconds)

    def wait_state(self, state: State, timeout: float = 30.0) -> None:
        assert wait_for_state(self.service, state, timeout), (
            f"device never reached {state.value}; it is {self.service.controller.machine.state.value}, "
            f"last fault {self.service.controller.last_fault}"
        )

    def record(self, seconds: float, during: Callable[[], None] | None = None) -> str:
        """One whole session: START, notice, `seconds` of recording (with `during` called), STOP held."""
        self.tap(ButtonName.START)
        self.wait_state(State.RECORDING)
        if during is not None:
            during()
        time.sleep(seconds)
        self.tap(ButtonName.STOP, self.config.session.stop_hold_seconds + 0.3)
        self.wait_state(State.IDLE)
        return self.service.controller.timings.sessions_closed[-1]

    def central_dir(self, session: str) -> Path:
        """Central's copy of the session, once the receiver has done its follow-up work (working copies,
        index), which comes after the receipts."""
        if self.receiver is not None:
            assert self.receiver.settle(60), "the receiver did not finish its working copies"
        return self.store.session_dir(self.config.device.id, session)


def make_rig(workdir: Path, port: int, with_receiver: bool = True, **sections: dict[str, Any]) -> Rig:
    cfg = fast_config(workdir, port, **sections)
    store = FileStore(cfg.receiver.store_dir)
    receiver = None
    if with_receiver:
        receiver = build_receiver(cfg, store)
        receiver.start()
        assert receiver.connected.wait(10), "receiver could not reach the test broker"
    service = Service(cfg)
    store.enroll(cfg.device.id, service.identity.public_key_b64)
    service.start()
    return Rig(cfg, service, store, receiver)


def close_rig(rig: Rig) -> None:
    rig.service.stop()
    if rig.receiver is not None:
        rig.receiver.stop()


@pytest.fixture
def rig(tmp_path: Path, broker: LocalBroker) -> Iterator[Rig]:
    r = make_rig(tmp_path, broker.port)
    yield r
    close_rig(r)


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
        r = make_rig(workdir, b.port)
        def mark_after_a_second() -> None:
            time.sleep(1.0)
            r.tap(ButtonName.MARK)

        try:
            session = r.record(3.0, during=mark_after_a_second)
            assert r.service.spool.wait_drained(60), "central did not receipt the session"
            yield RecordedSession(r, session, r.config.spool_dir / session, r.central_dir(session))
        finally:
            close_rig(r)
