"""After an abrupt stop (power cut, kill -9, crash): close every session that was left open.

A session is open when its last ledger entry is not "close". Recovery seals whatever media the dead
process left behind — a segment file cut off mid-write (".part": MPEG-TS plays up to its last whole
packet) or one committed but not yet sealed — as segments marked `recovered`, then records the break
as an "interruption" entry and closes the session with its totals. Nothing is deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from capture.ledger import Ledger, Signer, WallClock, read_entries
from capture.leftovers import seal_leftovers
from capture.recording import close_session
from evidence import layout
from evidence.entry import CLOSE, Entry
from evidence.errors import MalformedEntry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recovered:
    session: str
    segments: list[str]
    last_entry_time: str


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
    ledger = Ledger.resume(session_dir, entries, signer, clock)
    ledger.subscribe(on_entry)
    segments = [e.segment for e in entries if e.segment is not None]
    recovered = seal_leftovers(session_dir, ledger, segments, entries[0].opening, clock)
    ledger.append("interruption", {
        "reason": "abrupt stop: the service was not running when this session should have been closed",
        "last_entry_time": entries[-1].time,
        "recovered_segments": recovered,
    })
    close_session(ledger, "interrupted (recovered after restart)", segments)
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
