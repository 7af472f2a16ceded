"""After an abrupt stop (power cut, kill -9, crash): close every session that was left open.

A session is open when its last ledger entry is not "close". Recovery seals whatever media the dead
process left behind — a segment file cut off mid-write (".part": MPEG-TS plays up to its last whole
packet) or one committed but not yet sealed — as segments marked `recovered`, then records the break
as an "interruption" entry (FORMAT §4.5) and closes the session with its totals. Nothing is deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from capture.ledger import Ledger, Signer, WallClock, read_entries
from capture.leftovers import seal_leftovers
from capture.recording import close_session, wall_at
from evidence import layout
from evidence.entry import CLOSE, EVENT, INTERRUPTION, Entry, Opening
from evidence.errors import MalformedEntry
from evidence.rules import SessionRules

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recovered:
    """An open session recovery closed."""

    session: str
    segments: list[str]
    """The leftover files it sealed."""
    last_entry_time: str
    why: str
    """Why it was closed rather than resumed."""
    opening: Opening
    cause: str
    interrupted_at: str
    """Wall-clock time recording broke off (the break's `began_wall`)."""


@dataclass(frozen=True)
class Resumable:
    """The open session the device takes up again (FORMAT §4.5): read back, nothing written to it yet."""

    session_dir: Path
    entries: list[Entry]
    cause: str
    detail: str


@dataclass(frozen=True)
class Recovery:
    closed: list[Recovered]
    resumable: Resumable | None


def break_cause(entries: list[Entry], hung: str | None = None) -> tuple[str, str]:
    """Why the service stopped recording a session it left open: the reason code and a sentence. `hung`: the
    service's watchdog had found a thread hung and stopped answering systemd, which restarted it."""
    if hung is not None:
        return "watchdog", f"the device stopped responding and was restarted by its watchdog ({hung})"
    for entry in reversed(entries):
        if entry.kind == INTERRUPTION:
            break
        if entry.kind == EVENT and entry.body.get("name") == "service_stopping":
            return "service_restart", "the recording service was stopped or restarted while the session was open"
    return "abrupt_stop", "the device stopped abruptly (power cut, crash or kill) while the session was open"


def open_entries(session_dir: Path) -> list[Entry] | None:
    """The entries of a session left open, or None if it is closed, empty or cannot be taken up (an unreadable
    or missing entry, left exactly as it is for `recorder verify` to name)."""
    try:
        entries = read_entries(session_dir)
    except (MalformedEntry, OSError) as err:
        # One bad file must not stop the device.
        log.error("recovery: session %s has an unreadable entry, left untouched: %s", session_dir.name, err)
        return None
    if not entries or entries[-1].kind == CLOSE:
        return None
    if [e.seq for e in entries] != list(range(len(entries))) or entries[0].opening is None:
        log.error("recovery: session %s lacks an entry (or its opening), left untouched for `recorder verify` to "
                  "name", session_dir.name)
        return None
    return entries


def close_open(session_dir: Path, entries: list[Entry], signer: Signer, clock: WallClock,
               on_entry: Callable[[Entry], None], hung: str | None = None) -> tuple[list[str], str, str]:
    """Seal what the session left, record the break as not resumed, and close it: the leftovers sealed, the
    break's cause and when it began (wall clock)."""
    timeline = SessionRules()
    for entry in entries:
        timeline.apply(entry)
    ledger = Ledger.resume(session_dir, entries, signer, clock)
    ledger.subscribe(on_entry)
    segments = [e.segment for e in entries if e.segment is not None]
    covered = timeline.covered_to
    opening = entries[0].opening
    assert opening is not None
    recovered = seal_leftovers(session_dir, ledger, segments, opening, clock, covered)
    began = segments[-1].end if recovered else covered
    cause, detail = break_cause(entries, hung)
    if not timeline.halted:
        ledger.append("interruption", {
            "cause": cause, "detail": detail, "began_ns": began, "began_wall": wall_at(entries, began),
            "resumed_ns": None, "recovered_segments": timeline.recovered + recovered,
        })
    close_session(ledger, "interrupted (recovered after restart)", "not_resumed", segments)
    return recovered, cause, wall_at(entries, began)


def recover_spool(spool_root: Path, signer: Signer, clock: WallClock, on_entry: Callable[[Entry], None],
                  may_resume: Callable[[list[Entry]], str | None] | None = None, hung: str | None = None,
                  ) -> Recovery:
    """Every session the last run of the service left open: the newest is offered to `may_resume` (None: take
    it up again; else why not), every other one is closed (FORMAT §4.5 crash recovery)."""
    found = []
    for session_dir in sorted(p for p in spool_root.iterdir() if p.is_dir() and layout.SESSION_ID.match(p.name)):
        entries = open_entries(session_dir)
        if entries is not None:
            found.append((session_dir, entries))
    resumable = None
    closed = []
    for i, (session_dir, entries) in enumerate(found):
        why = "a later session was left open too" if i < len(found) - 1 else \
            (may_resume(entries) if may_resume is not None else "resuming is off")
        if why is None:
            cause, detail = break_cause(entries, hung)
            resumable = Resumable(session_dir, entries, cause, detail)
            log.warning("session %s was interrupted (last entry %s, %s); taking it up again",
                        session_dir.name, entries[-1].time, cause)
            continue
        sealed, cause, began_wall = close_open(session_dir, entries, signer, clock, on_entry, hung)
        log.warning("session %s was interrupted (last entry %s); not resumed: %s; sealed %d leftover segment(s) "
                    "and closed it", session_dir.name, entries[-1].time, why, len(sealed))
        opening = entries[0].opening
        assert opening is not None
        closed.append(Recovered(session_dir.name, sealed, entries[-1].time, why, opening, cause, began_wall))
    return Recovery(closed, resumable)
