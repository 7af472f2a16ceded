"""The ledger entry (FORMAT §3, §4): parsed and checked once, from its bytes, into a typed value.

An entry is canonical JSON (evidence/canonical.py). Its hash is SHA-256(0x00 || canonical bytes without
"sig") — the RFC 6962 leaf prefix, so an entry hash can never collide with a Merkle node hash — and each
entry names the hash of the one before in "prev". "sig" is Ed25519 over SIGN_CONTEXT || canonical bytes
without "sig".

`parse_entry` is the only way bytes become an `Entry`: the device parses what it is about to write, the
spool what it finds at start, central what it receives, the verifier what it reads. Whatever it accepts
has every field of its kind with the right type, so no reader checks a field again or meets a surprise.
What it refuses raises MalformedEntry naming the field; it never raises anything else.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from evidence.canonical import NotCanonical, canonical, parse_canonical, parse_made
from evidence.errors import EvidenceError, MalformedEntry
from evidence.keys import load_public_key_b64
from evidence.layout import DEVICE_ID, MAX_INDEX, MAX_SEQ, SESSION_ID, media_name
from evidence.reasons import CLOSE_REASONS, INTERRUPTION_REASONS, RETENTION_CLASSES

if TYPE_CHECKING:  # only sealing and unsealing need cryptography; parsing and verifying do not (FORMAT §7.5)
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

FORMAT_VERSION = 1
GENESIS = "0" * 64
SIGN_CONTEXT = b"room-recorder/ledger/v1\x00"
LEAF_PREFIX = b"\x00"
MAX_ENTRY_BYTES = 64 * 1024

OPEN, EVENT, SEGMENT, INTERRUPTION, CLOSE = "open", "event", "segment", "interruption", "close"
KINDS = (OPEN, EVENT, SEGMENT, INTERRUPTION, CLOSE)
HEX64 = re.compile(r"[0-9a-f]{64}\Z")

_FIELDS: dict[str, type] = {"v": int, "device": str, "session": str, "seq": int, "kind": str, "prev": str,
                            "time": str, "mono_ns": int, "clock_synced": bool, "body": dict, "sig": str}


class _Body:
    """Reads one body's fields with the checks the format gives them; a failure names the field."""

    def __init__(self, body: Mapping[str, Any], where: str) -> None:
        self.body = body
        self.where = where

    def fail(self, key: str, what: str) -> MalformedEntry:
        return MalformedEntry(f"{self.where}.{key} {what}")

    def text(self, key: str) -> str:
        value = self.body.get(key)
        if not isinstance(value, str):
            raise self.fail(key, "is missing or not a string")
        return value

    def integer(self, key: str, low: int = 0, nullable: bool = False, optional: bool = False) -> int | None:
        value = self.body.get(key)
        if (value is None and nullable and key in self.body) or (optional and key not in self.body):
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise self.fail(key, f"is missing or not an integer of at least {low}"
                            + (" (or null)" if nullable else ""))
        return value

    def whole(self, key: str, low: int = 0) -> int:
        value = self.integer(key, low)
        assert value is not None
        return value

    def hex64(self, key: str, nullable: bool = False, optional: bool = False) -> str | None:
        value = self.body.get(key)
        if (value is None and nullable and key in self.body) or (optional and key not in self.body):
            return None
        if not isinstance(value, str) or not HEX64.match(value):
            raise self.fail(key, "is missing or not 64 lowercase hex digits" + (" (or null)" if nullable else ""))
        return value

    def boolean(self, key: str, nullable: bool = False) -> bool | None:
        value = self.body.get(key)
        if value is None and nullable and key in self.body:
            return None
        if not isinstance(value, bool):
            raise self.fail(key, "is missing or not true/false" + (" (or null)" if nullable else ""))
        return value

    def table(self, key: str) -> _Body:
        value = self.body.get(key)
        if not isinstance(value, dict):
            raise self.fail(key, "is missing or not an object")
        return _Body(value, f"{self.where}.{key}")

    def texts(self, key: str) -> tuple[str, ...]:
        value = self.body.get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, "is missing or not a list of strings")
        return tuple(value)


@dataclass(frozen=True)
class Officer:
    name: str
    certificate: str


@dataclass(frozen=True)
class BookingRef:
    """The booking a session was started under (FORMAT §4.2 `booking`; PROTOCOL §14): in the clear, so central
    matches the session to its booking without opening the sealed fields."""

    id: str
    """The booking's id: 16 lowercase hex digits."""
    version: int
    act: str
    """The enforcement act (执法行为), e.g. 询问, 听证."""
    retention: str
    """The retention class the session is to have at least (evidence.reasons.RETENTION_CLASSES)."""
    start: dt.datetime
    end: dt.datetime
    """The booking's expected end."""

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "act": self.act, "retention": self.retention,
                "start": self.start.isoformat(timespec="seconds"), "end": self.end.isoformat(timespec="seconds")}


@dataclass(frozen=True)
class Opening:
    """What the `open` entry (seq 0) says about the session and how it was recorded (FORMAT §4.2)."""

    device_key: str
    """Base64 of the raw Ed25519 public key every entry of the session is signed with."""
    fps: int
    sample_rate: int
    recipient: str | None
    """Central's X25519 public key (base64) the segments are sealed to; None: recorded in the clear."""
    unit: str
    room: str
    location: str
    case: str
    matter: str
    officers: tuple[Officer, ...]
    parties: tuple[str, ...]
    sealed: str | None = None
    """The personal fields sealed to central's key (FORMAT §4.2.1); while sealed, the fields above are empty
    and only `unsealed` with central's private key fills them."""
    booking: BookingRef | None = None
    """The booking the session was started under; None without one (and in sessions recorded before
    bookings)."""

    @property
    def frame_ns(self) -> int:
        return 1_000_000_000 // self.fps

    @property
    def encrypted(self) -> bool:
        return self.recipient is not None


@dataclass(frozen=True)
class Segment:
    """A `segment` entry's record of one committed media file (FORMAT §4.4)."""

    index: int
    file: str
    sha256: str
    bytes: int
    start_ns: int
    end_ns: int | None
    video_frames: int | None
    audio_samples: int | None
    keyframe_start: bool | None
    plain_sha256: str | None
    plain_bytes: int | None
    recovered: bool
    """Committed by crash recovery; only then may the fields the device could not read be null."""

    @property
    def end(self) -> int:
        """Where the segment ends on the media timeline, as far as the device knows (a sealed recovered
        segment it could not read ends, for all it knows, where it starts)."""
        return self.start_ns if self.end_ns is None else self.end_ns


@dataclass(frozen=True)
class Interruption:
    """A break in the recording (FORMAT §4.5): where on the session's media timeline it began and where it
    resumed, and why. Written when recording resumes, or when it cannot continue (then `resumed_ns` is
    None and the session's `close` follows)."""

    cause: str
    """A code of `evidence.reasons.INTERRUPTION_REASONS`: what the device detected."""
    began_ns: int | None
    """Media time up to which the session is known to have been recorded; None in sessions recorded before
    interruptions carried it (their `close` followed at once)."""
    resumed_ns: int | None
    """Media time of the first frame recorded after the break; None when recording did not resume."""
    recovered_segments: tuple[str, ...]


@dataclass(frozen=True)
class Closing:
    """The `close` entry's totals (FORMAT §4.6)."""

    reason: str
    segments: int
    entries: int
    media_bytes: int
    duration_ns: int
    video_frames: int
    merkle_root: str
    reason_code: str | None
    """A code of `evidence.reasons.CLOSE_REASONS`; None in sessions recorded before closes carried one."""


@dataclass(frozen=True)
class Entry:
    """One ledger entry, checked against the format; `raw` are its exact (canonical) bytes."""

    raw: bytes
    device: str
    session: str
    seq: int
    kind: str
    prev: str
    time: str
    mono_ns: int
    clock_synced: bool
    body: Mapping[str, Any]
    sig: str
    hash: str
    """entry_hash: SHA-256(0x00 || canonical bytes without "sig"), lowercase hex (FORMAT §3.3)."""
    signed_message: bytes
    """What `sig` signs: SIGN_CONTEXT || canonical bytes without "sig" (FORMAT §3.5)."""
    opening: Opening | None = None
    segment: Segment | None = None
    interruption: Interruption | None = None
    closing: Closing | None = None


PERSONAL_FIELDS = ("unit", "room", "location", "case", "matter", "officers", "parties")
"""The `open` entry's fields that name people, places and cases: sealed to central's key when the session's
segments are (FORMAT §4.2.1)."""


def _personal(body: _Body) -> tuple[str, str, str, str, str, tuple[Officer, ...], tuple[str, ...]]:
    officers = body.body.get("officers")
    if not isinstance(officers, list):
        raise body.fail("officers", "is missing or not a list")
    listed = []
    for i, officer in enumerate(officers):
        if not isinstance(officer, dict):
            raise body.fail(f"officers[{i}]", "is not an object")
        one = _Body(officer, f"{body.where}.officers[{i}]")
        listed.append(Officer(one.text("name"), one.text("certificate")))
    return (body.text("unit"), body.text("room"), body.text("location"), body.text("case"), body.text("matter"),
            tuple(listed), body.texts("parties"))


def seal_personal(fields: Mapping[str, Any], recipient: X25519PublicKey) -> str:
    """The personal fields of an `open` body, sealed to `recipient` (FORMAT §4.2.1): base64 of the sealed
    canonical JSON object of exactly PERSONAL_FIELDS."""
    from evidence.encryption import seal_bytes

    return base64.b64encode(seal_bytes(canonical({k: fields[k] for k in PERSONAL_FIELDS}), recipient)).decode()


def unsealed(opening: Opening, key: X25519PrivateKey) -> Opening:
    """`opening` with its sealed personal fields opened by central's private key; as it is if not sealed.
    MalformedEntry if they do not open with this key or are not the fields they must be."""
    if opening.sealed is None:
        return opening
    from evidence.encryption import open_sealed

    try:
        opened = open_sealed(base64.b64decode(opening.sealed, validate=True), key)
        value = parse_canonical(opened.plaintext)
    except (ValueError, EvidenceError, NotCanonical) as err:
        raise MalformedEntry(f"open.sealed does not open with central's key: {err}") from err
    if not opened.complete or not isinstance(value, dict) or set(value) != set(PERSONAL_FIELDS):
        raise MalformedEntry(f"open.sealed does not hold exactly {', '.join(PERSONAL_FIELDS)}")
    unit, room, location, case, matter, officers, parties = _personal(_Body(value, "open.sealed"))
    return replace(opening, unit=unit, room=room, location=location, case=case, matter=matter, officers=officers,
                   parties=parties)


BOOKING_FIELDS = ("id", "version", "act", "retention", "start", "end")
_BOOKING_ID = re.compile(r"[0-9a-f]{16}\Z")


def _time(body: _Body, key: str) -> dt.datetime:
    text = body.text(key)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError as err:
        raise body.fail(key, f"{text!r} is not an ISO 8601 time") from err
    if when.tzinfo is None:
        raise body.fail(key, f"{text!r} has no offset")
    return when


def _booking(body: _Body) -> BookingRef | None:
    if "booking" not in body.body:
        return None
    ref = body.table("booking")
    if set(ref.body) != set(BOOKING_FIELDS):
        raise body.fail("booking", f"is not an object of exactly {', '.join(BOOKING_FIELDS)}")
    if not _BOOKING_ID.match(ref.text("id")):
        raise ref.fail("id", "is not 16 lowercase hex digits")
    retention = ref.text("retention")
    if retention not in RETENTION_CLASSES:
        raise ref.fail("retention", f"{retention!r} is not a retention class ({', '.join(RETENTION_CLASSES)})")
    start, end = _time(ref, "start"), _time(ref, "end")
    if end <= start:
        raise ref.fail("end", "is not after start")
    return BookingRef(ref.text("id"), ref.whole("version", 1), ref.text("act"), retention, start, end)


def _opening(body: _Body) -> Opening:
    key = body.text("device_key")
    try:
        load_public_key_b64(key)
    except EvidenceError as err:
        raise body.fail("device_key", "is not a usable Ed25519 key") from err
    video, audio = body.table("video"), body.table("audio")
    fps = video.whole("fps", 1)
    encryption = body.body.get("encryption")
    recipient: str | None = None
    if encryption is not None:
        sealed = body.table("encryption")
        sealed.text("scheme")
        recipient = sealed.text("recipient")
    if "sealed" in body.body:
        clear = [f for f in PERSONAL_FIELDS if f in body.body]
        if clear:
            raise body.fail("sealed", f"is there, and so are {', '.join(clear)} in the clear")
        if recipient is None:
            raise body.fail("sealed", "is there, but the session has no encryption recipient to seal it to")
        return Opening(key, fps, audio.whole("sample_rate", 1), recipient, "", "", "", "", "", (), (),
                       body.text("sealed"), _booking(body))
    return Opening(key, fps, audio.whole("sample_rate", 1), recipient, *_personal(body), booking=_booking(body))


def _segment(body: _Body) -> Segment:
    recovered = body.body.get("recovered", False) is True
    if "recovered" in body.body and not recovered:
        raise body.fail("recovered", "is present but not true")
    index = body.whole("index", 1)
    if index > MAX_INDEX:
        raise body.fail("index", f"is over {MAX_INDEX}")
    if body.text("file") != media_name(index):
        raise body.fail("file", f"is not {media_name(index)!r}, the name for segment {index}")
    start = body.whole("start_ns")
    end = body.integer("end_ns", nullable=recovered)
    if end is not None and end < start:
        raise body.fail("end_ns", "is before start_ns")
    sha = body.hex64("sha256")
    assert sha is not None
    return Segment(index, media_name(index), sha, body.whole("bytes"), start, end,
                   body.integer("video_frames", nullable=recovered), body.integer("audio_samples", nullable=recovered),
                   body.boolean("keyframe_start", nullable=recovered),
                   # Absent in sessions recorded before encryption at rest (FORMAT §10).
                   body.hex64("plain_sha256", nullable=recovered, optional=True),
                   body.integer("plain_bytes", nullable=recovered, optional=True), recovered)


def _interruption(body: _Body) -> Interruption:
    if "cause" not in body.body:
        # As crash recovery wrote it before sessions resumed: the session's close follows at once.
        listed = body.body.get("recovered_segments")
        return Interruption("abrupt_stop", None, None,
                            tuple(v for v in listed if isinstance(v, str)) if isinstance(listed, list) else ())
    cause = body.text("cause")
    if cause not in INTERRUPTION_REASONS:
        raise body.fail("cause", f"{cause!r} is not a reason code ({', '.join(INTERRUPTION_REASONS)})")
    began = body.whole("began_ns")
    body.text("began_wall")
    resumed = body.integer("resumed_ns", nullable=True)
    if resumed is not None:
        if resumed < began:
            raise body.fail("resumed_ns", "is before began_ns")
        body.text("resumed_wall")
    return Interruption(cause, began, resumed, body.texts("recovered_segments"))


def _closing(body: _Body) -> Closing:
    root = body.hex64("merkle_root")
    assert root is not None
    code = body.body.get("reason_code")
    if code is not None and code not in CLOSE_REASONS:
        raise body.fail("reason_code", f"{code!r} is not a close reason code ({', '.join(CLOSE_REASONS)})")
    return Closing(body.text("reason"), body.whole("segments"), body.whole("entries", 1), body.whole("media_bytes"),
                   body.whole("duration_ns"), body.whole("video_frames"), root, code)


def parse_entry(data: bytes) -> Entry:
    """The entry these bytes hold; MalformedEntry (naming what is wrong) if they are not one."""
    if len(data) > MAX_ENTRY_BYTES:
        raise MalformedEntry(f"entry is {len(data)} bytes, over the {MAX_ENTRY_BYTES}-byte limit")
    try:
        value = parse_canonical(data)
    except NotCanonical as err:
        raise MalformedEntry(f"entry is not canonical JSON: {err}") from err
    return _checked(value, data, None)


def _checked(value: Any, data: bytes, unsigned: bytes | None) -> Entry:
    """The entry `value` (parsed from `data`) is, after every check of the format; `unsigned` are its canonical
    bytes without "sig" when the caller has them already."""
    if not isinstance(value, dict):
        raise MalformedEntry("entry is not a JSON object")
    for key, typ in _FIELDS.items():
        if not isinstance(value.get(key), typ) or (typ is int and isinstance(value.get(key), bool)):
            raise MalformedEntry(f"entry field {key!r} is missing or not a {typ.__name__}")
    extra = set(value) - set(_FIELDS)
    if extra:
        raise MalformedEntry(f"entry has unknown fields: {', '.join(sorted(extra))}")
    kind, seq = value["kind"], value["seq"]
    if kind not in KINDS:
        raise MalformedEntry(f"entry kind {kind!r} is not one of {', '.join(KINDS)}")
    if value["v"] != FORMAT_VERSION:
        raise MalformedEntry(f"entry format version {value['v']} is not supported (expected {FORMAT_VERSION})")
    if not 0 <= seq <= MAX_SEQ:
        raise MalformedEntry(f"entry seq {seq} is outside 0..{MAX_SEQ}")
    if value["mono_ns"] < 0:
        raise MalformedEntry("entry mono_ns is negative")
    if not DEVICE_ID.match(value["device"]) or not SESSION_ID.match(value["session"]):
        raise MalformedEntry("entry device or session id is malformed")
    if not HEX64.match(value["prev"]):
        raise MalformedEntry("entry prev is not 64 lowercase hex digits")
    if (seq == 0) != (kind == OPEN):
        raise MalformedEntry("a second 'open' entry (only entry 0 opens a session)" if seq else
                             "entry 0 is not an 'open' entry")
    body = _Body(value["body"], "body")
    typed: dict[str, Any] = {}
    if kind == OPEN:
        typed["opening"] = _opening(body)
    elif kind == SEGMENT:
        typed["segment"] = _segment(body)
    elif kind == CLOSE:
        typed["closing"] = _closing(body)
    elif kind == INTERRUPTION:
        typed["interruption"] = _interruption(body)
    elif kind == EVENT:
        body.text("name")
    unsigned = _unsigned(value) if unsigned is None else unsigned
    return Entry(data, value["device"], value["session"], seq, kind, value["prev"], value["time"], value["mono_ns"],
                 value["clock_synced"], value["body"], value["sig"], hashlib.sha256(LEAF_PREFIX + unsigned).hexdigest(),
                 SIGN_CONTEXT + unsigned, **typed)


def _unsigned(fields: Mapping[str, Any]) -> bytes:
    return canonical({k: v for k, v in fields.items() if k != "sig"})


def signed_message(fields: Mapping[str, Any]) -> bytes:
    """What an entry's `sig` signs, from its fields as JSON values (any `sig` among them is left out)."""
    return SIGN_CONTEXT + _unsigned(fields)


def entry_hash(fields: Mapping[str, Any]) -> str:
    """An entry's hash from its fields as JSON values (any `sig` among them is left out)."""
    return hashlib.sha256(LEAF_PREFIX + _unsigned(fields)).hexdigest()


def sign_entry(fields: dict[str, Any], sign: Callable[[bytes], str]) -> Entry:
    """The entry made of `fields` (everything but "sig") signed with `sign`, as bytes a reader accepts.

    Read back and checked before it is returned, so the device can never write an entry the format refuses."""
    try:
        unsigned = _unsigned(fields)
        data = canonical({**fields, "sig": sign(SIGN_CONTEXT + unsigned)})
        value = parse_made(data)
    except NotCanonical as err:
        raise MalformedEntry(f"entry cannot be written: {err}") from err
    if len(data) > MAX_ENTRY_BYTES:
        raise MalformedEntry(f"entry would be {len(data)} bytes, over the {MAX_ENTRY_BYTES}-byte limit")
    return _checked(value, data, unsigned)
