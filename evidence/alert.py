"""The alert a device sends central when recording cannot go on (INTERRUPT; PROTOCOL §4.5, FORMAT §11).

The law asks that the head of the unit be told at once when recording cannot continue, and that two or more
officers explain in writing afterwards. The alert carries every fact that written explanation (情况说明)
needs, signed by the device key like a ledger entry (under its own context, so neither can pass for the
other), because on a full disk it may be the only record that reaches anyone: it does not depend on the
ledger being writable.

The room sensor's alerts (ROOM, NO-RECORD) travel the same way: people in the room and no session open
after a spoken reminder (`unrecorded_presence`, naming no session), and a session still recording well after
its booking's end with nobody in the room (`overrun`).

`parse_alert` is the only way bytes become an `Alert`: the device parses what it signed, central what it
receives. What it refuses raises MalformedAlert naming the field.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from evidence.canonical import NotCanonical, canonical, read_object
from evidence.entry import Officer, Opening
from evidence.errors import EvidenceError
from evidence.keys import load_public_key_b64, verify_signature
from evidence.layout import DEVICE_ID, SESSION_ID
from evidence.reasons import INTERRUPTION_REASONS

ALERT_VERSION = 1
SIGN_CONTEXT = b"room-recorder/alert/v1\x00"
MAX_ALERT_BYTES = 128 * 1024
"""Room for every field of an `open` entry of the largest size (64 KiB), twice over in escapes."""
ALERT_ID = re.compile(r"[0-9a-f]{16}\Z")
CANNOT_CONTINUE, NOT_RESUMED = "cannot_continue", "not_resumed"
UNRECORDED_PRESENCE, OVERRUN = "unrecorded_presence", "overrun"
KINDS = {
    CANNOT_CONTINUE: "recording cannot continue: a break did not clear",
    NOT_RESUMED: "a session cut off by a restart was too old to resume and was closed",
    UNRECORDED_PRESENCE: "people in the room and no session open, after a spoken reminder",
    OVERRUN: "a session still recording long after its booking's end, with nobody in the room",
}
HEADLINES = {
    CANNOT_CONTINUE: "录制无法继续 recording could not continue",
    NOT_RESUMED: "重启后未能续录 a session cut off by a restart was closed",
    UNRECORDED_PRESENCE: "室内有人未录制 people in the room, nothing recorded",
    OVERRUN: "超时录制 still recording after the booking, nobody in the room",
}
"""Each kind in a few words, Chinese then English, for a list or a banner."""
ABOUT_A_BREAK = (CANNOT_CONTINUE, NOT_RESUMED)
"""The kinds about a break in a session's recording: the officers explain those in writing (情况说明). The room
sensor's kinds are about the room (ROOM, NO-RECORD): no break, no written explanation."""
ROOM_SENSORS = {"door": "门磁 door contact", "presence": "人体感应 presence sensor"}
"""The `cause` of a room sensor's alert: the kind of sensor that saw it."""

_TEXT = ("id", "kind", "device", "session", "unit", "room", "location", "case", "matter", "cause", "detail",
         "interrupted_at", "time", "sig")


class MalformedAlert(EvidenceError):
    """Bytes that are not a well-formed, canonical alert; the message names what is wrong."""


@dataclass(frozen=True)
class Alert:
    id: str
    """16 lowercase hex digits, chosen by the device at random."""
    kind: str
    device: str
    session: str
    unit: str
    room: str
    location: str
    officers: tuple[Officer, ...]
    case: str
    matter: str
    cause: str
    """A code of `evidence.reasons.INTERRUPTION_REASONS`."""
    detail: str
    interrupted_at: str
    """Wall-clock time recording broke off (the break's `began_wall`)."""
    time: str
    """Wall-clock time the alert was made."""
    clock_synced: bool
    attempts: int
    """How often the device tried to record again."""
    sig: str
    raw: bytes
    signed_message: bytes
    """What `sig` signs: SIGN_CONTEXT || the canonical bytes of every field but `sig`."""

    def signed_by(self, key_b64: str) -> bool:
        return verify_signature(load_public_key_b64(key_b64), self.sig, self.signed_message)

    @property
    def headline(self) -> str:
        return HEADLINES[self.kind]

    @property
    def about_a_break(self) -> bool:
        """Whether the alert is about a break in a session's recording (a written explanation is due)."""
        return self.kind in ABOUT_A_BREAK

    @property
    def cause_label(self) -> str:
        """The cause in words: the interruption reason's Chinese label, or the room sensor's kind."""
        return INTERRUPTION_REASONS[self.cause].zh if self.about_a_break else ROOM_SENSORS[self.cause]

    def summary(self) -> str:
        officers = ", ".join(f"{o.name} ({o.certificate})" for o in self.officers)
        since = "interrupted" if self.about_a_break else "since"
        return (f"{self.device} {self.room}: {KINDS[self.kind]}; cause {self.cause} ({self.cause_label}); "
                f"session {self.session or '(none)'}; officers {officers}; {since} {self.interrupted_at}; "
                f"{self.detail}")


def session_alert(kind: str, opening: Opening, device: str, session: str, cause: str, detail: str,
                  interrupted_at: str, attempts: int, now: str, clock_synced: bool,
                  sign: Callable[[bytes], str]) -> Alert:
    """The alert about one session, with the facts of its `open` entry, under a fresh random id."""
    return make_alert({
        "id": secrets.token_hex(8), "kind": kind, "device": device, "session": session, "unit": opening.unit,
        "room": opening.room, "location": opening.location,
        "officers": [{"name": o.name, "certificate": o.certificate} for o in opening.officers],
        "case": opening.case, "matter": opening.matter, "cause": cause, "detail": detail,
        "interrupted_at": interrupted_at, "time": now, "clock_synced": clock_synced, "attempts": attempts,
    }, sign)


def room_alert(kind: str, device: str, session: str, who: Mapping[str, Any], sensor: str, detail: str, since: str,
               now: str, clock_synced: bool, sign: Callable[[bytes], str]) -> Alert:
    """An alert of the room sensor (`unrecorded_presence`, `session` ""; `overrun`, about `session`), naming the
    people and place of `who` (`unit`, `room`, `location`, `officers` as [{name, certificate}], `case`,
    `matter`), since when it has been so (`since`), under a fresh random id."""
    return make_alert({
        "id": secrets.token_hex(8), "kind": kind, "device": device, "session": session, "unit": who["unit"],
        "room": who["room"], "location": who["location"], "officers": list(who["officers"]), "case": who["case"],
        "matter": who["matter"], "cause": sensor, "detail": detail, "interrupted_at": since, "time": now,
        "clock_synced": clock_synced, "attempts": 0,
    }, sign)


def make_alert(fields: Mapping[str, Any], sign: Callable[[bytes], str]) -> Alert:
    """The alert of `fields` (all but `v` and `sig`), signed with `sign` and read back."""
    unsigned = {"v": ALERT_VERSION, **fields}
    try:
        data = canonical({**unsigned, "sig": sign(SIGN_CONTEXT + canonical(unsigned))})
    except NotCanonical as err:
        raise MalformedAlert(f"alert cannot be made: {err}") from err
    return parse_alert(data)


def parse_alert(data: bytes) -> Alert:
    value = read_object(data, MAX_ALERT_BYTES, "alert", MalformedAlert)
    expected = {*_TEXT, "v", "officers", "clock_synced", "attempts"}
    if set(value) != expected:
        missing, extra = sorted(expected - set(value)), sorted(set(value) - expected)
        raise MalformedAlert(f"alert fields differ: missing {missing}, unknown {extra}")
    for key in _TEXT:
        if not isinstance(value[key], str):
            raise MalformedAlert(f"alert {key!r} must be a string")
    if value["v"] != ALERT_VERSION or isinstance(value["v"], bool):
        raise MalformedAlert(f"alert version must be {ALERT_VERSION}")
    kind = value["kind"]
    # An alert about the room while no session is open names none (the empty string); every other names its own.
    session_ok = value["session"] == "" if kind == UNRECORDED_PRESENCE else SESSION_ID.match(value["session"])
    causes = INTERRUPTION_REASONS if kind in ABOUT_A_BREAK else ROOM_SENSORS
    checks = (("id", ALERT_ID.match(value["id"])), ("kind", kind in KINDS),
              ("device", DEVICE_ID.match(value["device"])), ("session", session_ok),
              ("cause", value["cause"] in causes),
              ("clock_synced", isinstance(value["clock_synced"], bool)),
              ("attempts", isinstance(value["attempts"], int) and not isinstance(value["attempts"], bool)
               and value["attempts"] >= 0))
    for key, ok in checks:
        if not ok:
            raise MalformedAlert(f"alert {key!r} has a bad value: {value[key]!r}")
    officers = value["officers"]
    if not isinstance(officers, list) or not all(
            isinstance(o, dict) and set(o) == {"name", "certificate"} and all(isinstance(v, str) for v in o.values())
            for o in officers):
        raise MalformedAlert("alert 'officers' must be a list of {name, certificate} strings")
    return Alert(value["id"], value["kind"], value["device"], value["session"], value["unit"], value["room"],
                 value["location"], tuple(Officer(o["name"], o["certificate"]) for o in officers), value["case"],
                 value["matter"], value["cause"], value["detail"], value["interrupted_at"], value["time"],
                 value["clock_synced"], value["attempts"], value["sig"], data,
                 SIGN_CONTEXT + canonical({k: v for k, v in value.items() if k != "sig"}))
