"""Every long-lived thread of the device service runs under the supervisor: an unexpected exception in any of
them is a fault said everywhere (error log, the open session's ledger, the tally, the status) and the thread
runs again; a hung thread stops the systemd watchdog being fed (FAULT)."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from evidence.verify import verify_session
from firmware_py.rig import Rig
from firmware_py.service import Service
from firmware_py.state_machine import State
from firmware_py.systemd import Notifier
from hal.buttons.base import ButtonName
from hal.tally.base import TallyPattern
from mqtt.broker import LocalBroker
from tests.conftest import fast_configs, make_rig, wait_until
from tests.media import events


def _once(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> threading.Event:
    """Make `owner.name` raise once, the next time it is called; the event is set when it has."""
    real = getattr(owner, name)
    fired = threading.Event()

    def failing(*args: Any, **kwargs: Any) -> Any:
        if not fired.is_set():
            fired.set()
            raise RuntimeError(f"injected into {name}")
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, failing)
    return fired


def _room(rig: Rig) -> object:
    assert rig.service.hal.sim is not None
    return rig.service.hal.sim.room


def _sealer(rig: Rig) -> object:
    recording = rig.service.controller._recording
    assert recording is not None
    run = recording._run
    assert run is not None
    return run.sealer


INJECT: dict[str, Callable[[Rig, pytest.MonkeyPatch], threading.Event]] = {
    "session": lambda rig, mp: _once(mp, rig.service.controller, "_tick"),
    "sealer": lambda rig, mp: _once(mp, _sealer(rig), "seal"),
    "uploader": lambda rig, mp: _once(mp, rig.service.uploader, "_next_batch"),
    "uploader-receipts": lambda rig, mp: _once(mp, rig.service.spool, "receipts"),
    "deadlines": lambda rig, mp: _once(mp, rig.service, "_check_deadlines"),
    "watchdog": lambda rig, mp: _once(mp, rig.service.notifier, "watchdog"),
    "sim-camera": lambda rig, mp: _once(mp, rig.service.hal.camera, "_frame"),
    "sim-room": lambda rig, mp: _once(mp, _room(rig), "_speaker_block"),
}


@pytest.fixture
def shown(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> list[TallyPattern]:
    """Every pattern the tally is asked to show from now on."""
    patterns: list[TallyPattern] = []
    tally = rig.service.hal.tally
    real = tally.show

    def show(pattern: TallyPattern) -> None:
        patterns.append(pattern)
        real(pattern)

    monkeypatch.setattr(tally, "show", show)
    return patterns


@pytest.mark.parametrize("thread", list(INJECT))
def test_an_exception_in_any_thread_is_a_reported_fault_and_the_thread_runs_again__FAULT(
        thread: str, rig: Rig, shown: list[TallyPattern], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="evidence.supervisor")
    rig.tap(ButtonName.START)
    rig.wait_state(State.RECORDING)
    fired = INJECT[thread](rig, monkeypatch)
    assert fired.wait(15), f"the {thread} thread never ran the injected code"
    controller = rig.service.controller
    assert wait_until(lambda: (controller.last_fault or "").startswith(f"thread {thread}:"))
    assert any(f"thread {thread} failed" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    assert wait_until(lambda: TallyPattern.FAULT in shown)
    status = json.loads((rig.config.device.state_dir / "status.json").read_text())
    assert status["last_fault"].startswith(f"thread {thread}:")
    # The session went on through the fault, and the restarted thread does its work again.
    assert controller.machine.state is State.RECORDING
    session = controller.session_id
    assert session is not None
    rig.tap(ButtonName.STOP, rig.config.session.stop_hold_seconds + 0.3)
    rig.wait_state(State.IDLE)
    assert rig.service.spool.wait_drained(60), f"not all receipted after the {thread} thread failed"
    faults = [e["body"] for e in events(rig.central_dir(session), "fault")]
    assert {"name": "fault", "reason": f"RuntimeError: injected into {_injected_name(thread)}",
            "thread": thread} in faults
    assert verify_session(rig.central_dir(session), rig.service.identity.public_key_b64).ok
    assert not rig.service.supervisor.problems()


def _injected_name(thread: str) -> str:
    return {"session": "_tick", "sealer": "seal", "uploader": "_next_batch", "uploader-receipts": "receipts",
            "deadlines": "_check_deadlines", "watchdog": "watchdog", "sim-camera": "_frame",
            "sim-room": "_speaker_block"}[thread]


class NotifySocket:
    """systemd's side of sd_notify: a datagram socket the service reports to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def since(self, t: float, prefix: str) -> list[str]:
        return [m for when, m in list(self.messages) if when >= t and m.startswith(prefix)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()


@pytest.fixture
def notified(tmp_path: Path, broker: LocalBroker) -> Iterator[tuple[Service, NotifySocket]]:
    systemd = NotifySocket(tmp_path / "notify")
    device, _ = fast_configs(tmp_path, broker.port)
    service = Service(device, notifier=Notifier(str(systemd.path), watchdog_usec=1_000_000))
    service.start()
    try:
        yield service, systemd
    finally:
        service.stop()
        systemd.close()


def test_the_watchdog_is_fed_only_while_no_thread_hangs__FAULT(notified: tuple[Service, NotifySocket],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    service, systemd = notified
    assert wait_until(lambda: bool(systemd.since(0, "READY=1")))
    assert wait_until(lambda: len(systemd.since(0, "WATCHDOG=1")) >= 3), systemd.messages
    # The deadline watcher hangs: it blocks for good in the middle of its round.
    release = threading.Event()
    monkeypatch.setattr(service, "_check_deadlines", release.wait)
    for thread in service.supervisor.threads():
        if thread.name == "deadlines":
            thread.silence_s = 1.0
    try:
        assert wait_until(lambda: "hung" in (service.controller.last_fault or ""), 20), service.controller.last_fault
        assert service.controller.last_fault is not None and service.controller.last_fault.startswith(
            "thread deadlines:")
        hung_at = time.monotonic()
        # Each watchdog round (every 0.5 s) that finds the hang says so instead of feeding the watchdog.
        assert wait_until(lambda: len([m for m in systemd.since(hung_at, "STATUS=") if "deadlines" in m]) >= 4)
        statuses = [when for when, m in list(systemd.messages) if when >= hung_at and m.startswith("STATUS=")]
        assert not [m for when, m in list(systemd.messages)
                    if statuses[0] <= when <= statuses[-1] and m == "WATCHDOG=1"]
    finally:
        release.set()


def test_log_lines_reach_the_journal_with_their_level(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    log = tmp_path / "stderr"
    with log.open("wb") as stderr:
        st = os.fstat(stderr.fileno())
        code = ("import logging; from firmware_py.cli import configure_logging; configure_logging(False); "
                "logging.getLogger('capture.spool').error('disk full'); logging.getLogger('x').info('up')")
        subprocess.run([sys.executable, "-c", code], stderr=stderr, check=True,
                       env={**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    assert log.read_text().splitlines() == ["<3>capture.spool: disk full", "<6>x: up"]


def test_a_fault_during_start_lets_start_try_again__FAULT(tmp_path: Path, broker: LocalBroker,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # An unexpected error while a session starts once left the device in pre-flight for good.
    rig = make_rig(tmp_path, broker.port)
    try:
        _once(monkeypatch, rig.service.controller, "session_meta")
        rig.tap(ButtonName.START)
        rig.wait_state(State.FAULT)
        assert (rig.service.controller.last_fault or "").startswith("thread session:")
        session = rig.record(0.5)
        assert rig.service.spool.wait_drained(60)
        assert verify_session(rig.central_dir(session)).ok
    finally:
        rig.close()


def test_a_thread_that_fails_is_reported_once_per_failure_and_restarted() -> None:
    from evidence.supervisor import Supervisor

    reported: list[tuple[str, str]] = []
    supervisor = Supervisor(lambda name, reason: reported.append((name, reason)))
    runs: list[int] = []

    def body(beat: Callable[[], None]) -> None:
        runs.append(1)
        if len(runs) < 3:
            raise ValueError(f"run {len(runs)}")

    thread = supervisor.spawn("flaky", body)
    assert wait_until(lambda: thread.ended, 10)
    assert reported == [("flaky", "ValueError: run 1"), ("flaky", "ValueError: run 2")]
    assert not supervisor.problems()
    once = supervisor.spawn("once", lambda beat: (_ for _ in ()).throw(OSError("gone")), restart=False)
    assert wait_until(lambda: once.dead, 10)
    # Reported once, then no longer watched: a failure already dealt with does not hold back the watchdog.
    assert reported[-1] == ("once", "OSError: gone")
    assert not supervisor.problems()

