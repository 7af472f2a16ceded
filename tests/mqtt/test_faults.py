"""Fault tests (issue: "Fault tests, each ending with central's set of (device, session, sequence, hash) equal
to the device's"): the broker killed mid-upload, the receiver killed mid-write, a long outage, central's disk
full. (The device killed mid-upload is tests/capture/kill9.py.)

Every test ends the same way (`_assert_central_matches`): each ledger entry in the device's spool has
central's receipt, central holds exactly the same (device, session, seq, entry hash) set, and every
session central holds verifies offline with the device key it was enrolled with and central's private
key (so each sealed segment is decrypted and checked against its seal).

The rigs are real services on simulated hardware with 1-second segments and a one-word notice; the
uploader resends an unreceipted entry after RESEND_S seconds instead of the product's 15, so that each
test waits seconds rather than several resend periods (the resend path is the same code either way).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from central.build import build_receiver
from central.store import FileStore
from evidence import layout
from evidence.entry import entry_hash
from evidence.hashing import sha256_file
from evidence.verify import verify_session
from firmware_py.rig import Rig
from firmware_py.state_machine import State
from hal.buttons.base import ButtonName
from mqtt.broker import LocalBroker, free_port
from provisioning.central_key import load_central_key
from tests.conftest import make_rig, mounted_tmpfs
from tests.media import entries

RESEND_S = 3.0
UPLOAD_WINDOW = 16
"""Entries the uploader has in flight at once (its default)."""
NOTICE = {"zh": "开始录音", "en": ""}
"""A one-word notice: about half a second instead of six, with the same notice path."""

Holding = tuple[str, str, int, str]


# ---- helpers ---------------------------------------------------------------------------------------

def _rig(workdir: Path, port: int, with_receiver: bool = True, **sections: dict[str, Any]) -> Rig:
    """tests.conftest.make_rig with a one-word notice and the resend period shortened to RESEND_S."""
    mqtt = {"resend_seconds": RESEND_S, **sections.pop("mqtt", {})}
    return make_rig(workdir, port, with_receiver, notice=NOTICE, mqtt=mqtt, **sections)


def _wait(condition: Callable[[], bool], timeout: float, poll: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll)
    return condition()


def _sessions(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and layout.SESSION_ID.match(p.name)) if root.is_dir() else []


def _holdings(root: Path) -> set[Holding]:
    """(device, session, seq, entry hash) of every ledger entry in the sessions under `root`."""
    return {(e["device"], e["session"], e["seq"], entry_hash(e)) for d in _sessions(root) for e in entries(d)}


def _central_root(rig: Rig, store_root: Path | None = None) -> Path:
    return (store_root or rig.store.root) / "sessions" / rig.config.device.id


def _receipted(session_dir: Path) -> set[int]:
    return {int(p.stem) for p in (session_dir / layout.RECEIPTS).glob("*.json") if p.stem.isdigit()}


def _assert_central_matches(rig: Rig, store_root: Path | None = None) -> None:
    """The end of every test: everything receipted, the same holdings on both sides, central's copy verifies."""
    spool = rig.config.spool_dir
    for session_dir in _sessions(spool):
        missing = set(layout.entry_seqs(session_dir)) - _receipted(session_dir)
        assert not missing, f"{session_dir.name}: entries {sorted(missing)} have no receipt"
    device, central = _holdings(spool), _holdings(_central_root(rig, store_root))
    assert device, "the device recorded nothing"
    assert central == device, (f"only on the device: {sorted(device - central)[:5]}; "
                               f"only at central: {sorted(central - device)[:5]}")
    key = load_central_key(Path(rig.central.receiver.private_key_file or ""))
    for session_dir in _sessions(_central_root(rig, store_root)):
        report = verify_session(session_dir, trusted_key_b64=rig.service.identity.public_key_b64, central_key=key)
        assert report.ok and report.anchored, f"{session_dir}: {report.findings}"


def _stray_files(session_root: Path) -> list[str]:
    """Leftovers of an interrupted write in central's sessions/: temporary files and unsealed parts."""
    return sorted(str(p.relative_to(session_root)) for p in session_root.rglob("*")
                  if p.is_file() and (p.name.startswith(".") or p.suffix in (".tmp", ".part")))


def _missing_working_copies(session_root: Path) -> list[str]:
    """Segments stored without their decrypted working copy in plain/."""
    return sorted(f"{d.name}/{e['body']['file']}" for d in _sessions(session_root) for e in entries(d)
                  if e["kind"] == "segment" and not (d / "plain" / e["body"]["file"]).is_file())


def _staging_leftovers(store_root: Path) -> list[str]:
    staging = store_root / ".staging"
    return sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())


def _receipt_times(session_dir: Path) -> dict[int, int]:
    """seq -> when the device wrote central's receipt (file time, ns): the arrival of the receipt."""
    return {int(p.stem): p.stat().st_mtime_ns for p in (session_dir / layout.RECEIPTS).glob("*.json")
            if p.stem.isdigit()}


# ---- 1. broker killed mid-upload -------------------------------------------------------------------

def test_broker_killed_mid_upload_and_restarted_while_recording__UPLOAD_24H__FAULT(tmp_path: Path) -> None:
    broker = LocalBroker(tmp_path / "broker")
    broker.start()
    rig = _rig(tmp_path, broker.port)
    rng = random.Random(1)
    outages: list[tuple[int, float]] = []

    def kill_the_broker_three_times() -> None:
        for _ in range(3):
            time.sleep(rng.uniform(0.3, 1.2))
            # Mid-upload: the device is connected and holds entries it has sent (or is sending) that
            # central has not receipted yet.
            assert _wait(lambda: rig.service.uploader.connected and rig.service.spool.backlog().entries > 0,
                         5, poll=0.001), "never caught the device mid-upload"
            in_flight = rig.service.spool.backlog().entries
            broker.kill()
            down = rng.uniform(0.5, 2.0)
            time.sleep(down)  # recording goes on into the spool
            broker.start()
            outages.append((in_flight, down))
            assert _wait(lambda: rig.service.uploader.connected, 10), "the device did not reconnect"

    try:
        rig.record(1.0, during=kill_the_broker_three_times)
        assert len(outages) == 3 and all(n > 0 for n, _ in outages)
        assert rig.service.spool.wait_drained(30), f"not drained: {rig.service.spool.backlog()}"
        assert rig.receiver is not None
        assert not rig.receiver.refused, rig.receiver.refused
        _assert_central_matches(rig)
    finally:
        rig.close()
        broker.stop()


# ---- 2. receiver killed mid-write ------------------------------------------------------------------

def _receiver_config(workdir: Path, rig: Rig, port: int) -> Path:
    path = workdir / "receiver.toml"
    r = rig.central.receiver
    path.write_text(f'[mqtt]\nport = {port}\n'
                    f'[receiver]\nstore_dir = "{r.store_dir}"\nclient_id = "receiver-1"\n'
                    f'private_key_file = "{r.private_key_file}"\nsigning_key_file = "{r.signing_key_file}"\n',
                    encoding="utf-8")
    return path


class _ReceiverProcess:
    """`recorder central serve` as a process of its own, so that it can be killed with SIGKILL."""

    def __init__(self, config: Path, logs: Path) -> None:
        self._command = [sys.executable, "-m", "firmware_py.cli", "central", "serve", "--config", str(config)]
        self._logs = logs
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.starts += 1
        with (self._logs / f"receiver-{self.starts}.log").open("wb") as log:
            self.proc = subprocess.Popen(self._command, stdout=subprocess.DEVNULL, stderr=log)

    def kill(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, "the receiver exited on its own"
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _staged(staging: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in staging.rglob("*") if p.is_file()} if staging.is_dir() else {}


def _staging_changed(staging: Path) -> Callable[[], bool]:
    """True once a chunk lands in staging: a staging file appears or is written again."""
    seen = _staged(staging)
    return lambda: any(seen.get(p) != t for p, t in _staged(staging).items())


def test_receiver_killed_mid_write_and_restarted__UPLOAD_24H__FAULT(tmp_path: Path, broker: LocalBroker) -> None:
    rig = _rig(tmp_path, broker.port, with_receiver=False)
    receiver = _ReceiverProcess(_receiver_config(tmp_path, rig, broker.port), tmp_path)
    staging = rig.store.root / ".staging"
    entries_dir = _central_root(rig)
    rng = random.Random(2)
    kills: list[str] = []

    def stored_entries() -> int:
        return sum(len(layout.entry_seqs(d)) for d in _sessions(entries_dir))

    def more_stored() -> Callable[[], bool]:
        before = stored_entries()
        return lambda: stored_entries() > before

    def kill_the_receiver_five_times() -> None:
        for n in range(5):
            # Let the new receiver process start, connect and store something of the upload first.
            assert _wait(more_stored(), 15), "the receiver stored nothing after a restart"
            if n % 2 == 0:
                # Aimed: the moment a segment's chunks land in staging, before the entry commits it.
                caught = _wait(_staging_changed(staging), 5, poll=0.0005)
                receiver.kill()
                kills.append("while staging a segment" if caught else "at a random moment (no segment staged)")
            else:
                time.sleep(rng.uniform(0.0, 1.0))
                receiver.kill()
                kills.append("at a random moment")
            receiver.start()

    receiver.start()
    try:
        rig.record(1.0, during=kill_the_receiver_five_times)
        assert len(kills) == 5 and "while staging a segment" in kills, kills
        assert rig.service.spool.wait_drained(30), f"not drained: {rig.service.spool.backlog()}"
    finally:
        receiver.stop()
        rig.close()
    _assert_central_matches(rig)
    sessions = rig.store.root / "sessions"
    assert not _stray_files(sessions), f"partial files left in central's sessions/: {_stray_files(sessions)}"
    if leftovers := _staging_leftovers(rig.store.root):
        warnings.warn(f"receiver kill -9 left {len(leftovers)} file(s) under .staging/: {leftovers}", stacklevel=1)
    if missing := _missing_working_copies(sessions):
        warnings.warn(f"receiver kill -9 left segments without a working copy in plain/: {missing}", stacklevel=1)


def test_receiver_killed_between_storing_a_segment_and_its_entry__UPLOAD_24H__FAULT(
        tmp_path: Path, broker: LocalBroker) -> None:
    rig = _rig(tmp_path, broker.port, with_receiver=False)
    try:
        session = rig.record(1.0)
        spool_dir = rig.config.spool_dir / session
        log = entries(spool_dir)
        cut = next(e["seq"] for e in log if e["kind"] == "segment")
        # What a kill -9 (or a full disk) inside FileStore.commit leaves: the entries before `cut` stored, the
        # segment that entry `cut` seals already renamed into media/, the entry itself not yet written. The
        # restarted receiver must still store the resent entry (it skips resent chunks of a stored segment).
        central = rig.central_dir(session)
        for sub in (layout.ENTRIES, layout.MEDIA):
            (central / sub).mkdir(parents=True)
        for e in log[:cut]:
            shutil.copy2(layout.entry_path(spool_dir, e["seq"]), layout.entry_path(central, e["seq"]))
        media = log[cut]["body"]["file"]
        shutil.copy2(layout.media_path(spool_dir, media), layout.media_path(central, media))
        receiver = build_receiver(rig.central, rig.store)
        receiver.start()
        try:
            assert receiver.connected.wait(10)
            drained = rig.service.spool.wait_drained(2 * RESEND_S)
        finally:
            receiver.stop()
        assert drained, f"entry {cut} was never stored: {rig.service.spool.backlog()}"
        _assert_central_matches(rig)
    finally:
        rig.close()


# ---- 4. long outage: the backlog drains behind the live session ------------------------------------

def test_backlog_after_a_long_outage_drains_behind_the_live_session__UPLOAD_24H__REALTIME(tmp_path: Path) -> None:
    port = free_port()
    rig = _rig(tmp_path, port, with_receiver=False)
    broker = LocalBroker(tmp_path / "broker", port=port)
    try:
        backlog = rig.record(20.0)  # the broker is down: all of it stays in the spool
        held = len(layout.entry_seqs(rig.config.spool_dir / backlog))
        assert rig.service.spool.backlog().entries == held > 20

        # A new session starts while the backlog is still waiting; then the link comes back.
        rig.tap(ButtonName.START)
        rig.wait_state(State.NOTICE)
        live = rig.service.controller.session_id
        assert live is not None and live != backlog
        link_up_ns = time.time_ns()
        broker.start()
        receiver = build_receiver(rig.central, rig.store)
        receiver.start()
        try:
            assert receiver.connected.wait(10)
            rig.wait_state(State.RECORDING)
            time.sleep(2.0)
            rig.tap(ButtonName.STOP, rig.config.session.stop_hold_seconds + 0.3)
            rig.wait_state(State.IDLE)
            assert rig.service.spool.wait_drained(30), f"not drained: {rig.service.spool.backlog()}"
        finally:
            receiver.stop()
        _assert_central_matches(rig)

        live_dir, backlog_dir = rig.config.spool_dir / live, rig.config.spool_dir / backlog
        waiting = [s for s in layout.entry_seqs(live_dir)
                   if layout.entry_path(live_dir, s).stat().st_mtime_ns < link_up_ns]
        assert waiting, "the live session had nothing waiting when the link came back"
        live_times, backlog_times = _receipt_times(live_dir), _receipt_times(backlog_dir)
        last_live = max(live_times[s] for s in waiting)
        # The live session's waiting entries are receipted before the older backlog finishes: the uploader
        # fills its window with the session being recorded first, and the backlog gets only the room left.
        assert last_live < max(backlog_times.values())
        # Ahead of them, at most the backlog entries that shared the first window (none, unless that window
        # reached the receiver while it was still subscribing and part of it had to be resent).
        ahead = sorted(s for s, t in backlog_times.items() if t < last_live)
        assert len(ahead) <= max(0, UPLOAD_WINDOW - len(waiting)), f"backlog entries {ahead} went first"
    finally:
        rig.close()
        broker.stop()


# ---- 5. central's disk full ------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 640 KiB filesystem (tmpfs) at tmp_path/central, the rigs' store folder."""
    with mounted_tmpfs(tmp_path / "central", "640k") as mount:
        yield mount


def _receipted_but_not_stored(rig: Rig, store_root: Path) -> list[str]:
    """Entries the device holds a receipt for that central does not hold intact (entry and its media)."""
    wrong = []
    for session_dir in _sessions(rig.config.spool_dir):
        central = _central_root(rig, store_root) / session_dir.name
        for seq in _receipted(session_dir):
            data = layout.entry_path(session_dir, seq).read_bytes()
            stored = layout.entry_path(central, seq)
            if not stored.is_file() or stored.read_bytes() != data:
                wrong.append(f"{session_dir.name}/{seq}")
                continue
            body = next(e["body"] for e in entries(session_dir) if e["seq"] == seq)
            if "sha256" in body and sha256_file(layout.media_path(central, body["file"])) != (body["sha256"],
                                                                                              body["bytes"]):
                wrong.append(f"{session_dir.name}/{seq} (media)")
    return wrong


def test_central_disk_full_no_receipt_without_storage_then_drains__UPLOAD_24H__FAULT(
        tmp_path: Path, broker: LocalBroker, small_disk: Path) -> None:
    rig = _rig(tmp_path, broker.port)
    full = rig.receiver
    assert full is not None and rig.store.root == small_disk

    def storage_errors() -> int:
        assert full is not None
        return sum(r.startswith("storage:") for r in full.refused)

    try:
        session = rig.record(6.0)
        spool_dir = rig.config.spool_dir / session
        assert _wait(lambda: storage_errors() > 0, 10), "the disk never filled"
        # Central stored what fitted and receipted only that; the device keeps everything and resends.
        failures = storage_errors()
        assert _wait(lambda: storage_errors() > failures, 3 * RESEND_S), "the device stopped trying"
        pending = rig.service.spool.backlog().entries
        assert pending > 0, "everything fitted: the disk was not full"
        assert len(_receipted(spool_dir)) + pending == len(layout.entry_seqs(spool_dir))
        assert not _receipted_but_not_stored(rig, small_disk)
        assert verify_session(spool_dir).ok, "the device lost or changed a file"

        # Space is freed: central's store moves, as it is, to a bigger disk and the receiver starts there.
        full.stop()
        bigger = tmp_path / "central-bigger"
        shutil.copytree(small_disk, bigger, symlinks=True)
        subprocess.run(["umount", str(small_disk)], check=True)
        rig.store = FileStore(bigger)
        rig.receiver = build_receiver(rig.central, rig.store)
        rig.receiver.start()
        assert rig.receiver.connected.wait(10)
        assert rig.service.spool.wait_drained(4 * RESEND_S), f"not drained: {rig.service.spool.backlog()}"
        _assert_central_matches(rig, bigger)
        if missing := _missing_working_copies(bigger / "sessions"):
            warnings.warn(f"segments stored while the disk was full have no working copy: {missing}", stacklevel=1)
    finally:
        rig.close()
