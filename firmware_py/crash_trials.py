"""kill -9 trials against the real service (`recorder run` in a subprocess), for the crash test and the
soak benchmark: record, kill at a random moment, restart (which recovers the killed session), repeat.
Part of the product, like the rig, so a technician can soak a box the same way."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from capture.ledger import read_entries
from capture.probe import decodes, probe_media
from central.receiver import Receiver
from central.store import FileStore
from evidence import layout
from evidence.encryption import open_sealed
from evidence.entry import Segment, parse_entry
from evidence.verify import verify_session
from provisioning.central_key import create_central_key, create_signing_key, load_central_key, load_signing_key
from provisioning.identity import DeviceIdentity

SEGMENT_SECONDS = 2.0


def _config(tmp_path: Path, port: int, resume_within_minutes: int = 0) -> Path:
    public = create_central_key(tmp_path / "central-key.pem")
    signing = create_signing_key(tmp_path / "central-signing-key.pem")
    path = tmp_path / "recorder.toml"
    path.write_text(
        f'[device]\nstate_dir = "{tmp_path / "device"}"\n'
        f'central_public_key = "{public}"\ncentral_signing_key = "{signing}"\n'
        f'[session]\nsegment_seconds = {SEGMENT_SECONDS}\nmax_minutes = 5\n'
        f'resume_within_minutes = {resume_within_minutes}\nexplanation_seconds = 2.0\nmenu_seconds = 1.5\n'
        '[notice]\nen = ""\nwords_per_minute = 400\n'
        '[video]\nwidth = 320\nheight = 240\nfps = 10\nbitrate = 300000\n'
        f'[mqtt]\nport = {port}\n',
        encoding="utf-8",
    )
    return path


def _wait_for_new_recording(status: Path, previous: str | None, proc: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited on its own (status {proc.returncode})")
        try:
            now = json.loads(status.read_text())
        except (OSError, json.JSONDecodeError):
            now = {}
        if now.get("state") in ("notice", "recording") and now.get("session") not in (None, previous):
            return str(now["session"])
        time.sleep(0.02)
    raise RuntimeError("the service did not start recording within 30 s")


@dataclass
class Kill9Outcome:
    sessions: int
    worst_lost_s: float
    """Longest stretch between the end of the recovered recording and the kill, over all trials."""
    problems: list[str]
    central_matches_device: bool


def run_kill9(workdir: Path, port: int, trials: int, seed: int = 20261122) -> Kill9Outcome:
    """Each start records a new session: resuming after a restart is off, so recovery closes the killed one."""
    config = _config(workdir, port)
    store = FileStore(workdir / "central")
    store.enroll("SIM-0001", DeviceIdentity.load_or_create(workdir / "device" / "keys").public_key_b64)
    receiver = Receiver(store, "127.0.0.1", port, "recorders", "crash-receiver")
    receiver.sign = load_signing_key(workdir / "central-signing-key.pem").sign
    receiver.start()
    record = workdir / "record.txt"
    record.write_text("0.1 press start\n0.2 wait recording\n3600 end\n")
    status = workdir / "device" / "status.json"
    command = [sys.executable, "-m", "firmware_py.cli", "run", "--config", str(config), "--hal", "sim"]
    rng = random.Random(seed)
    killed_at: dict[str, int] = {}
    session: str | None = None
    try:
        for _ in range(trials):
            proc = subprocess.Popen([*command, "--scenario", str(record)], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            session = _wait_for_new_recording(status, session, proc)
            time.sleep(rng.uniform(0.0, 2.5 * SEGMENT_SECONDS))
            killed_at[session] = time.monotonic_ns()
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        # One more start: it recovers the last killed session, delivers what is left, and ends.
        idle = workdir / "idle.txt"
        idle.write_text("0 end\n")
        final = subprocess.run([*command, "--scenario", str(idle), "--drain-seconds", "60"], capture_output=True,
                               check=False)
    finally:
        receiver.stop()
    problems = [] if final.returncode == 0 else [f"the recovering start exited {final.returncode}"]
    spool = workdir / "device" / "spool"
    central = load_central_key(workdir / "central-key.pem")
    found = sorted(p.name for p in spool.iterdir() if layout.SESSION_ID.match(p.name))
    if found != sorted(killed_at):
        problems.append(f"spool holds sessions {found}, killed {sorted(killed_at)}")
    worst = 0.0
    for name, kill_ns in killed_at.items():
        session_dir = spool / name
        report = verify_session(session_dir, decode=decodes, central_key=central)
        log = read_entries(session_dir)
        segments = [e.segment for e in log if e.segment is not None]
        if not report.ok:
            problems.append(f"{name}: {report.findings[0]}")
        elif [e.kind for e in log][-2:] != ["interruption", "close"]:
            problems.append(f"{name}: the break is not recorded as an interruption")
        elif not segments:
            problems.append(f"{name}: nothing recorded at all")
        elif list((session_dir / "media").glob("*.part")):
            problems.append(f"{name}: a cut-off segment was left unsealed")
        else:
            media_end_ns = log[0].body["media_t0_mono_ns"] + _recorded_until(session_dir, segments, central)
            worst = max(worst, (kill_ns - media_end_ns) / 1e9)
    matches = _holdings(spool) == _held_by(store)
    return Kill9Outcome(len(killed_at), worst, problems, matches)


def _recorded_until(session_dir: Path, segments: list[Segment], central: X25519PrivateKey) -> int:
    """Media time (ns) the session's recording reaches. Recovered segments are sealed, so the device could not
    say where they end: central reads each in turn. A kill just after a segment switch leaves two of them,
    the last possibly empty, so the end is carried over from the one before."""
    end_ns = 0
    for segment in segments:
        if segment.end_ns is not None:
            end_ns = segment.end_ns
            continue
        opened = open_sealed(layout.media_path(session_dir, segment.file).read_bytes(), central)
        end_ns = int(probe_media(io.BytesIO(opened.plaintext), end_ns, 100_000_000, 16000)["end_ns"])
    return end_ns


def _held_by(store: FileStore) -> set[tuple[str, int, str]]:
    """Central's entries, as the store gives them."""
    held = set()
    for device, session in store.sessions():
        for seq in store.session_files(device, session).entry_seqs():
            data = store.get_entry(device, session, seq)
            if data is not None:
                entry = parse_entry(data)
                held.add((entry.session, entry.seq, entry.hash))
    return held


def _holdings(root: Path) -> set[tuple[str, int, str]]:
    return {(e.session, e.seq, e.hash) for d in root.iterdir() for e in read_entries(d)}


@dataclass
class ResumeOutcome:
    session: str
    restart_to_first_frame_s: float
    """From launching the restarted service to the first frame of the resumed run (its `resumed_wall`)."""
    gap_s: float
    """The break as the ledger has it: `resumed_ns − began_ns`."""
    central_dir: Path
    returncodes: tuple[int, int]
    """The killed run's (-9) and the resuming run's, which ends the session with STOP and drains to central."""
    log_tail: str
    """The end of the resuming run's log."""


def kill9_and_resume(workdir: Path, port: int, record_s: float = 3.0) -> ResumeOutcome:
    """Record, kill -9 the service, and start it again: it takes the session up again (INTERRUPT). The second
    run waits through the question, the explanation and the menu, then holds STOP and drains to central."""
    config = _config(workdir, port, resume_within_minutes=30)
    store = FileStore(workdir / "central")
    store.enroll("SIM-0001", DeviceIdentity.load_or_create(workdir / "device" / "keys").public_key_b64)
    receiver = Receiver(store, "127.0.0.1", port, "recorders", "resume-receiver")
    receiver.central_key = load_central_key(workdir / "central-key.pem")
    receiver.sign = load_signing_key(workdir / "central-signing-key.pem").sign
    receiver.start()
    record, after = workdir / "record.txt", workdir / "after.txt"
    record.write_text(f"0.1 press start\n0.2 wait recording\n{record_s:g} kill\n")
    after.write_text("0 wait explaining\n0 wait recording\n0.5 hold stop 2.5\n3 end\n")
    command = [sys.executable, "-m", "firmware_py.cli", "run", "--config", str(config), "--hal", "sim"]
    try:
        first = subprocess.Popen([*command, "--scenario", str(record)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        session = _wait_for_new_recording(workdir / "device" / "status.json", None, first)
        try:
            first.wait(60 + record_s)  # the scenario's `kill`: the service ends itself as a power cut would
        except subprocess.TimeoutExpired:
            first.kill()
            first.wait()
            raise RuntimeError("the scenario's kill step never ended the service") from None
        restarted = time.time()
        second = subprocess.run([*command, "--scenario", str(after), "--drain-seconds", "60"], capture_output=True,
                                check=False, timeout=300)
        if not receiver.settle(60):
            raise RuntimeError("central did not finish the working copies")
    finally:
        receiver.stop()
    log = read_entries(workdir / "device" / "spool" / session)
    gaps = [e for e in log if e.interruption is not None]
    if not gaps or gaps[0].interruption is None or gaps[0].interruption.resumed_ns is None:
        raise RuntimeError(f"the session was not resumed: {second.stderr.decode(errors='replace')[-2000:]}")
    gap = gaps[0].interruption
    assert gap.began_ns is not None and gap.resumed_ns is not None
    first_frame = dt.datetime.fromisoformat(str(gaps[0].body["resumed_wall"])).timestamp()
    return ResumeOutcome(session, first_frame - restarted, (gap.resumed_ns - gap.began_ns) / 1e9,
                         store.session_dir("SIM-0001", session), (first.returncode, second.returncode),
                         second.stderr.decode(errors="replace")[-3000:])
