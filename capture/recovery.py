"""After an abrupt stop (power cut, kill -9, crash): close every session that was left open.

A session is open when its last ledger entry is not "close". Recovery seals whatever media the dead
process left behind — a segment file cut off mid-write (".part": MPEG-TS plays up to its last whole
packet) or one committed but not yet sealed — as segments marked `recovered`, then records the break
as an "interruption" entry (FORMAT §4.5) and closes the session with its totals. Nothing is deleted.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from capture.ledger import Ledger, Signer, WallClock, read_entries
from capture.leftovers import seal_leftovers
from capture.recording import close_session
from evidence import layout
from evidence.entry import CLOSE, EVENT, Entry
from evidence.errors import MalformedEntry
from evidence.rules import SessionRules

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recovered:
    session: str
    segments: list[str]
    last_entry_time: str


def break_cause(entries: list[Entry]) -> tuple[str, str]:
    """Why the service stopped recording a session it left open: the reason code and a sentence."""
    last = entries[-1]
    if last.kind == EVENT and last.body.get("name") == "service_stopping":
        return "service_restart", "the recording service was stopped or restarted while the session was open"
    return "abrupt_stop", "the device stopped abruptly (power cut, crash or kill) while the session was open"


def wall_at(entries: list[Entry], media_ns: int) -> str:
    """The wall-clock time of a media time, as the session's own segments map one onto the other: from the
    last segment that says (`end_wall`), else from the session's opening."""
    base: dt.datetime | None = None
    for entry in reversed(entries):
        segment, end_wall = entry.segment, entry.body.get("end_wall")
        if segment is not None and segment.end_ns is not None and isinstance(end_wall, str):
            try:
                base = dt.datetime.fromisoformat(end_wall) - dt.timedelta(microseconds=segment.end_ns // 1000)
            except ValueError:
                continue
            break
    if base is None:
        base = dt.datetime.fromisoformat(entries[0].time)
    return (base + dt.timedelta(microseconds=media_ns // 1000)).isoformat(timespec="milliseconds")


def recover_session(session_dir: Path, signer: Signer, clock: WallClock,
                    on_entry: Callable[[Entry], None]) -> Recovered | None:
    try:
        entries = read_entries(session_dir)
    except (MalformedEntry, OSError) as err:
        # Leave it exactly as it is for `recorder verify` to name; one bad file must not stop the device.
        log.error("recovery: session %s has an unreadable entry, left untouched: %s", session_dir.name, err)
        return None
    if not entries or entries[-1].kind == CLOSE:
        return None
    if [e.seq for e in entries] != list(range(len(entries))) or entries[0].opening is None:
        log.error("recovery: session %s lacks an entry (or its opening), left untouched for `recorder verify` to "
                  "name", session_dir.name)
        return None
    timeline = SessionRules()
    for entry in entries:
        timeline.apply(entry)
    ledger = Ledger.resume(session_dir, entries, signer, clock)
    ledger.subscribe(on_entry)
    segments = [e.segment for e in entries if e.segment is not None]
    covered = timeline.last_end if timeline.last_end is not None else (timeline.timeline_end or 0)
    recovered = seal_leftovers(session_dir, ledger, segments, entries[0].opening, clock, covered)
    if not timeline.halted:
        began = segments[-1].end if recovered else covered
        cause, detail = break_cause(entries)
        ledger.append("interruption", {
            "cause": cause, "detail": detail, "began_ns": began, "began_wall": wall_at(entries, began),
            "resumed_ns": None, "recovered_segments": timeline.recovered + recovered,
        })
    close_session(ledger, "interrupted (recovered after restart)", "not_resumed", segments)
    return Recovered(session_dir.name, recovered, entries[-1].time)


def recover_spool(spool_root: Path, signer: Signer, clock: WallClock,
                  on_entry: Callable[[Entry], None]) -> list[Recovered]:
    done = []
    for session_dir in sorted(p for p in spool_root.iterdir() if p.is_dir() and layout.SESSION_ID.match(p.name)):
        result = recover_session(session_dir, signer, clock, on_entry)
        if result is not None:
            log.warning("session %s was interrupted (last entry %s); sealed %d leftover segment(s) and closed it",
                        result.session, result.last_entry_time, len(result.segments))
            done.append(result)
    return done
