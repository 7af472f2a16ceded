"""kill -9 of the service at random moments while recording: at most the open segment's unwritten tail
is lost, every session verifies, and the break is recorded as an interruption in its chain."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from capture import layout
from capture.ledger import entry_hash
from capture.verify import verify_session
from mqtt.broker import LocalBroker
from mqtt.receiver import Receiver
from mqtt.store import FileStore
from provisioning.identity import DeviceIdentity
from tests.media import entries

TRIALS = 30
SEGMENT_SECONDS = 2.0


def _config(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "recorder.toml"
    path.write_text(
        f'[device]\nstate_dir = "{tmp_path / "device"}"\n'
        f'[session]\nsegment_seconds = {SEGMENT_SECONDS}\nmax_minutes = 5\n'
        '[notice]\nen = ""\nwords_per_minute = 400\n'
        '[video]\nwidth = 320\nheight = 240\nfps = 10\nbitrate = 300000\n'
        f'[mqtt]\nport = {port}\n',
        encoding="utf-8",
    )
    return path


def _wait_for_new_recording(status: Path, previous: str | None, proc: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the service exited on its own"
        try:
            now = json.loads(status.read_text())
        except (OSError, json.JSONDecodeError):
            now = {}
        if now.get("state") in ("notice", "recording") and now.get("session") not in (None, previous):
            return str(now["session"])
        time.sleep(0.02)
    raise AssertionError("the service did not start recording")


def test_kill9_at_random_points_loses_at_most_the_open_segment__CONTINUOUS(tmp_path: Path,
                                                                          broker: LocalBroker) -> None:
    config = _config(tmp_path, broker.port)
    store = FileStore(tmp_path / "central")
    store.enroll("SIM-0001", DeviceIdentity.load_or_create(tmp_path / "device" / "keys").public_key_b64)
    receiver = Receiver(store, "127.0.0.1", broker.port, "recorders", "crash-receiver")
    receiver.start()
    record = tmp_path / "record.txt"
    record.write_text("0.1 press start\n0.2 wait recording\n3600 end\n")
    status = tmp_path / "device" / "status.json"
    command = [sys.executable, "-m", "firmware_py.cli", "run", "--config", str(config), "--hal", "sim"]
    rng = random.Random(20261122)
    killed_at: dict[str, int] = {}
    session: str | None = None
    for _ in range(TRIALS):
        proc = subprocess.Popen([*command, "--scenario", str(record)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        session = _wait_for_new_recording(status, session, proc)
        time.sleep(rng.uniform(0.0, 2.5 * SEGMENT_SECONDS))
        killed_at[session] = time.monotonic_ns()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    # One more start: it recovers the last killed session, delivers what is left, and ends.
    idle = tmp_path / "idle.txt"
    idle.write_text("0 end\n")
    try:
        assert subprocess.run([*command, "--scenario", str(idle), "--drain-seconds", "60"], capture_output=True,
                              check=False).returncode == 0
    finally:
        receiver.stop()

    spool = tmp_path / "device" / "spool"
    assert sorted(p.name for p in spool.iterdir() if layout.SESSION_ID.match(p.name)) == sorted(killed_at)
    worst = 0.0
    for name, kill_ns in killed_at.items():
        session_dir = spool / name
        report = verify_session(session_dir, decode=True)
        assert report.ok, (name, report.findings)
        log = entries(session_dir)
        kinds = [e["kind"] for e in log]
        assert kinds[-2:] == ["interruption", "close"], name
        segments = [e["body"] for e in log if e["kind"] == "segment"]
        assert segments, f"{name}: nothing recorded at all"
        media_end_ns = log[0]["mono_ns"] + segments[-1]["end_ns"]
        worst = max(worst, (kill_ns - media_end_ns) / 1e9)
        assert not list((session_dir / "media").glob("*.part")), "a cut-off segment was left unsealed"
    assert worst <= SEGMENT_SECONDS, f"lost {worst:.2f} s of recording at a kill"
    # Uploads killed mid-way resumed: central holds exactly what the device holds.
    assert _holdings(spool) == _holdings(tmp_path / "central" / "sessions" / "SIM-0001")


def _holdings(root: Path) -> set[tuple[str, int, str]]:
    return {(e["session"], e["seq"], entry_hash(e)) for d in root.iterdir() for e in entries(d)}
