"""The integrity sweep (NO-EDIT): every stored session judged again by the rule book `recorder verify` uses,
on demand (`recorder central sweep`) and on a schedule (`recorder central serve`, every
`sweep.interval_hours`), so a byte changed, a file removed or an entry put in at central is found and
raised, not only when someone next opens the session.

What each sweep found is kept in `sweep.json` beside the store (per session: its state, entries and bytes
as last judged, and the problem), so a session that was whole and no longer is stands out even if the change
looks like an incomplete upload (a removed `close`), and a session whose entries shrank is broken whatever
its files now say. The web application shows every broken session on every page until a sweep finds it
whole again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from central import retention
from central.errors import CentralError
from central.register import RegisterBroken, Registers
from central.store import CentralStore
from evidence.durable import atomic_write
from evidence.rules import Problem
from evidence.supervisor import Beat, Supervisor
from evidence.verify import verify_session

log = logging.getLogger(__name__)

SWEEP_FILE = "sweep.json"
OK, RECEIVING, BROKEN = "ok", "receiving", "broken"


@dataclass(frozen=True)
class Judged:
    state: str
    """OK (whole and closed), RECEIVING (whole so far, its close not here yet) or BROKEN."""
    entries: int
    media_bytes: int
    problem: str
    at: str

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SweepResult:
    sessions: int
    media_bytes: int
    seconds: float
    broken: list[tuple[str, str, str]]
    """Every session found broken: (device, session, what is wrong)."""
    newly_broken: list[tuple[str, str, str]]
    """Of those, the ones the sweep before found whole (or had not seen broken)."""


def judged_before(store: CentralStore) -> dict[str, Judged]:
    """The last sweep's findings, by "<device>/<session>"; empty before the first sweep."""
    path = store.state_file(SWEEP_FILE)
    try:
        kept = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise CentralError(f"{path}: the last sweep's findings cannot be read ({err}); move the file aside and "
                           "run `recorder central sweep` again") from err
    return {key: Judged(**value) for key, value in kept.items()}


def _broken(found: dict[str, Judged]) -> list[tuple[str, str, str]]:
    out = []
    for key, judged in sorted(found.items()):
        if judged.state == BROKEN:
            device, session = key.split("/", 1)
            out.append((device, session, judged.problem))
    return out


def broken_sessions(store: CentralStore) -> list[tuple[str, str, str]]:
    """The sessions the last sweep found broken: (device, session, what is wrong)."""
    return _broken(judged_before(store))


def _tombstone(registers: Registers | None, device: str, session: str,
               counted: int) -> tuple[dict[str, tuple[str, int]], str]:
    """The segment files the session's register says were removed after expiry, and what is wrong with the
    register itself ("" if nothing): it does not check, or it holds fewer records than the audit's copies of
    them count (`counted`: a tail cut off, or the file gone). Without central's key the register cannot be
    trusted: nothing counts as removed, and a removed session shows as broken."""
    if registers is None:
        return {}, ""
    if not registers.store.register_file(device, session, create=False).exists():
        return {}, f"its register is gone (the audit holds copies of {counted} records)" if counted else ""
    try:
        records = registers.records(device, session, checked=True)
    except RegisterBroken as err:
        return {}, str(err)
    if len(records) < counted:
        return {}, (f"its register holds {len(records)} records where the audit holds copies of {counted}: "
                    "records were cut from its end")
    removal = retention.disposition(records).removal
    if removal is None:
        return {}, ""
    return {f["file"]: (f["sha256"], f["bytes"]) for f in removal.detail["files"]}, ""


def _judge(store: CentralStore, device: str, session: str, before: Judged | None, now: str,
           registers: Registers | None, counted: int) -> Judged:
    files = store.session_files(device, session)
    removed, register_problem = _tombstone(registers, device, session, counted)
    report = verify_session(files, store.session_key(device, session), removed=removed)
    # The verifier stops at the first break, so count the entries stored, not the ones it got through.
    entries = len(files.entry_seqs())
    if report.ok:
        state, problem = OK, ""
    elif all(f.problem is Problem.TRUNCATED for f in report.findings) and (before is None or before.state != OK):
        # Not closed yet, and never seen closed: still being received (the deadline report watches that).
        state, problem = RECEIVING, ""
    else:
        state, problem = BROKEN, "; ".join(f"{f.problem.name.lower()} at {f.where}: {f.detail}"
                                           for f in report.findings) or "no longer closed"
    if register_problem:
        state, problem = BROKEN, register_problem + (f"; {problem}" if problem else "")
    if before is not None and entries < before.entries:
        state = BROKEN
        problem = (f"{before.entries - entries} of its {before.entries} entries are gone"
                   + (f"; {problem}" if problem else ""))
    return Judged(state, entries, report.media_bytes, problem, now)


def sweep(store: CentralStore, beat: Beat | None = None, registers: Registers | None = None,
          marks: retention.Retention | None = None) -> SweepResult:
    """Judge every stored session again, keep the findings, and log each session newly found broken. `beat`
    is called after each session (a supervised thread's sign of life). With `registers` (central's signing
    key) each session's register is checked and its tombstone honoured; with `marks`, the retention class
    a device's MARK asked for is written to the register if it is not there yet."""
    t0 = time.monotonic()
    before = judged_before(store)
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    found: dict[str, Judged] = {}
    counted = registers.counts_in_audit() if registers is not None else {}
    for device, session in store.sessions():
        key = f"{device}/{session}"
        found[key] = _judge(store, device, session, before.get(key), now, registers, counted.get(key, 0))
        if marks is not None and found[key].state != BROKEN:
            marks.sync_marks(device, session)
        if beat is not None:
            beat()
    for key, gone in before.items():
        if key not in found:
            # A session central once held is never removed by anything at central: its folder going is a break.
            found[key] = Judged(BROKEN, 0, 0, f"the session's folder is gone (it held {gone.entries} entries)", now)
    atomic_write(store.state_file(SWEEP_FILE), json.dumps({k: v.as_json() for k, v in sorted(found.items())},
                                                          ensure_ascii=False, indent=1).encode(), mode=0o600)
    broken = _broken(found)
    newly = [b for b in broken if (kept := before.get(f"{b[0]}/{b[1]}")) is None or kept.state != BROKEN]
    for device, session, problem in newly:
        log.error("integrity sweep: %s/%s is no longer as it was stored: %s", device, session, problem)
    return SweepResult(len(found), sum(j.media_bytes for j in found.values()), time.monotonic() - t0,
                       broken, newly)


class ScheduledSweep:
    """`sweep` on a supervised thread of its own, every `every_s` seconds (the first one after a minute, so a
    starting receiver is not slowed)."""

    def __init__(self, store: CentralStore, every_s: float, first_after_s: float = 60.0,
                 registers: Registers | None = None, marks: retention.Retention | None = None) -> None:
        self.store = store
        self.registers = registers
        self.marks = marks
        self.every_s = every_s
        self.first_after_s = first_after_s
        self._stopping = threading.Event()
        self._supervisor = Supervisor()
        self.done = 0

    def start(self) -> None:
        self._supervisor.spawn("integrity-sweep", self._run, silence_s=max(600.0, self.every_s + 600.0))

    def _run(self, beat: Beat) -> None:
        wait = self.first_after_s
        while not self._stopping.wait(wait):
            beat()
            result = sweep(self.store, beat, self.registers, self.marks)
            self.done += 1
            log.info("integrity sweep: %d sessions, %.1f MB in %.1f s; %d broken", result.sessions,
                     result.media_bytes / 1e6, result.seconds, len(result.broken))
            wait = self.every_s

    def stop(self) -> None:
        self._stopping.set()
        self._supervisor.stop()
