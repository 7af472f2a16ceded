"""Wire format between device and central. docs/PROTOCOL.md is the specification; this is its code.

Topics, for device D under prefix P:
    P/D/entry    device -> central  one signed ledger entry (canonical JSON), QoS 1
    P/D/media    device -> central  one chunk of a segment file (binary frame below), QoS 1
    P/D/receipt  central -> device  receipt for one entry after central stored and verified it, QoS 1
    P/D/status   device -> central  retained health message; the Last Will sets it offline
    P/D/alert    device -> central  a signed alert: recording cannot continue (evidence/alert.py), QoS 1,
                                    repeated until acknowledged
    P/D/alert_ack central -> device  central stored that alert (or self-test report), QoS 1
    P/D/selftest device -> central  a signed self-test report (`recorder selftest`), QoS 1; central keeps
                                    the latest per device and acknowledges it on P/D/alert_ack
    P/D/bookings central -> device  retained: the signed set of the room's bookings (evidence/booking.py), QoS 1

A media frame is b"RRM1", a 4-byte big-endian header length, a UTF-8 JSON header, then the chunk bytes.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from evidence import layout
from evidence.alert import ALERT_ID
from evidence.canonical import NotCanonical, canonical, parse_strict, read_object
from evidence.entry import HEX64
from evidence.keys import VerifyKey, load_public_key_b64, verify_signature
from mqtt.errors import ProtocolError

MEDIA_MAGIC = b"RRM1"
MAX_HEADER = 4096
DEFAULT_CHUNK = 256 * 1024
MIN_CHUNK = 4096
MAX_SEGMENT_BYTES = 256 * 1024 * 1024
MAX_RECEIPT = 4096
"""A receipt is about 250 bytes; anything over this is refused unread."""

ENTRY, MEDIA, RECEIPT, STATUS = "entry", "media", "receipt", "status"
ALERT, ALERT_ACK, SELFTEST = "alert", "alert_ack", "selftest"
BOOKINGS = "bookings"
MAX_ALERT_ACK = 1024
MAX_SELFTEST = 64 * 1024
SELFTEST_CONTEXT = b"room-recorder/selftest/v1\x00"


def topic(prefix: str, device: str, kind: str) -> str:
    return f"{prefix}/{device}/{kind}"


def parse_topic(prefix: str, name: str) -> tuple[str, str]:
    parts = name.split("/")
    if len(parts) != 3 or parts[0] != prefix or not layout.DEVICE_ID.match(parts[1]):
        raise ProtocolError(f"not a recorder topic: {name!r}")
    return parts[1], parts[2]


@dataclass(frozen=True)
class MediaChunk:
    session: str
    file: str
    offset: int
    total: int
    sha256: str
    data: bytes


def encode_media(chunk: MediaChunk) -> bytes:
    header = json.dumps(
        {"session": chunk.session, "file": chunk.file, "offset": chunk.offset, "total": chunk.total,
         "sha256": chunk.sha256},
        sort_keys=True, separators=(",", ":"),
    ).encode()
    return MEDIA_MAGIC + struct.pack(">I", len(header)) + header + chunk.data


def _int_field(header: dict[str, Any], key: str, low: int, high: int) -> int:
    value = header.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ProtocolError(f"media header {key!r} must be an integer in {low}..{high}")
    return value


def decode_media(payload: bytes) -> MediaChunk:
    if len(payload) < 8 or payload[:4] != MEDIA_MAGIC:
        raise ProtocolError("media message does not start with RRM1")
    (length,) = struct.unpack(">I", payload[4:8])
    if length > MAX_HEADER or 8 + length > len(payload):
        raise ProtocolError(f"media header length {length} is out of bounds")
    try:
        header = parse_strict(payload[8 : 8 + length])
    except NotCanonical as err:
        raise ProtocolError(f"media header is not strict JSON: {err}") from err
    if not isinstance(header, dict) or set(header) != {"session", "file", "offset", "total", "sha256"}:
        raise ProtocolError("media header must have exactly session, file, offset, total, sha256")
    session, file, sha = header["session"], header["file"], header["sha256"]
    if not isinstance(session, str) or not layout.SESSION_ID.match(session):
        raise ProtocolError("media header 'session' is malformed")
    if not isinstance(file, str) or not layout.MEDIA_NAME.match(file):
        raise ProtocolError("media header 'file' is malformed")
    if not isinstance(sha, str) or not HEX64.match(sha):
        raise ProtocolError("media header 'sha256' is malformed")
    total = _int_field(header, "total", 1, MAX_SEGMENT_BYTES)
    offset = _int_field(header, "offset", 0, total - 1)
    data = payload[8 + length :]
    if not data or offset + len(data) > total:
        raise ProtocolError("media chunk is empty or runs past the segment's total size")
    return MediaChunk(session, file, offset, total, sha, data)


RECEIPT_CONTEXT = b"room-recorder/receipt/v1\x00"
ALERT_ACK_CONTEXT = b"room-recorder/alert-ack/v1\x00"
Sign = Callable[[bytes], str]


def _signed(fields: dict[str, Any], context: bytes, sign: Sign | None) -> bytes:
    """`fields` as canonical JSON, with `sig` (central's signature over `context` and the unsigned canonical
    bytes) when central has a signing key."""
    if sign is None:
        return canonical(fields)
    return canonical({**fields, "sig": sign(context + canonical(fields))})


class SignedByCentral:
    """A message central may sign (PROTOCOL §4.3, §4.6): its signature, if any, and what it signs."""

    sig: str | None
    signed_message: bytes

    def signed_by(self, key: VerifyKey) -> bool:
        return self.sig is not None and verify_signature(key, self.sig, self.signed_message)


def _signature(value: dict[str, Any], context: bytes, what: str) -> tuple[str | None, bytes]:
    sig = value.get("sig")
    if sig is not None and not isinstance(sig, str):
        raise ProtocolError(f"{what} 'sig' must be a string")
    return sig, context + canonical({k: v for k, v in value.items() if k != "sig"})


def encode_receipt(session: str, seq: int, entry_hash: str, stored_at: str, receiver: str,
                   sign: Sign | None = None) -> bytes:
    return _signed({"session": session, "seq": seq, "entry_hash": entry_hash, "stored_at": stored_at,
                    "receiver": receiver}, RECEIPT_CONTEXT, sign)


@dataclass(frozen=True)
class Receipt(SignedByCentral):
    """Central's word that it stored and judged one entry (PROTOCOL §4.3)."""

    session: str
    seq: int
    entry_hash: str
    stored_at: str
    receiver: str
    raw: bytes
    """The message as received, kept on the device as proof of delivery."""
    sig: str | None = None
    signed_message: bytes = b""


_RECEIPT_FIELDS = {"session", "seq", "entry_hash", "stored_at", "receiver"}


def decode_receipt(payload: bytes) -> Receipt:
    receipt = read_object(payload, MAX_RECEIPT, "receipt", ProtocolError, exact=False)
    if set(receipt) - {"sig"} != _RECEIPT_FIELDS:
        raise ProtocolError(f"receipt must be an object of exactly {', '.join(sorted(_RECEIPT_FIELDS))} (and "
                            "'sig' when signed)")
    session, seq, digest = receipt["session"], receipt["seq"], receipt["entry_hash"]
    if not isinstance(session, str) or not layout.SESSION_ID.match(session):
        raise ProtocolError("receipt 'session' is malformed")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= layout.MAX_SEQ:
        raise ProtocolError(f"receipt 'seq' must be an integer in 0..{layout.MAX_SEQ} (not a boolean)")
    if not isinstance(digest, str) or not HEX64.match(digest):
        raise ProtocolError("receipt 'entry_hash' must be 64 lowercase hex digits")
    if not isinstance(receipt["stored_at"], str) or not isinstance(receipt["receiver"], str):
        raise ProtocolError("receipt 'stored_at' and 'receiver' must be strings")
    sig, message = _signature(receipt, RECEIPT_CONTEXT, "receipt")
    return Receipt(session, seq, digest, receipt["stored_at"], receipt["receiver"], payload, sig, message)


def proves_delivery(raw: bytes, session: str, seq: int, entry_hash: str, central_key: VerifyKey) -> bool:
    """Whether `raw`, a receipt kept in the spool, is central's signed word that it holds exactly this entry:
    the one test a device applies before it may free evidence (capture/pruning.py)."""
    try:
        receipt = decode_receipt(raw)
    except ProtocolError:
        return False
    return (receipt.session == session and receipt.seq == seq and receipt.entry_hash == entry_hash
            and receipt.signed_by(central_key))


@dataclass(frozen=True)
class AlertAck(SignedByCentral):
    """Central stored the alert `alert` of `device` (PROTOCOL §4.6)."""

    alert: str
    device: str
    sig: str | None = None
    signed_message: bytes = b""


def encode_alert_ack(alert: str, device: str, sign: Sign | None = None) -> bytes:
    return _signed({"alert": alert, "device": device}, ALERT_ACK_CONTEXT, sign)


def decode_alert_ack(payload: bytes) -> AlertAck:
    value = read_object(payload, MAX_ALERT_ACK, "alert acknowledgement", ProtocolError)
    if set(value) - {"sig"} != {"alert", "device"}:
        raise ProtocolError("alert acknowledgement must be an object of exactly alert, device (and sig when signed)")
    alert, device = value["alert"], value["device"]
    if not isinstance(alert, str) or not ALERT_ID.match(alert):
        raise ProtocolError("alert acknowledgement 'alert' must be 16 lowercase hex digits")
    if not isinstance(device, str) or not layout.DEVICE_ID.match(device):
        raise ProtocolError("alert acknowledgement 'device' must be a device id")
    sig, message = _signature(value, ALERT_ACK_CONTEXT, "alert acknowledgement")
    return AlertAck(alert, device, sig, message)


@dataclass(frozen=True)
class SelfTestCheck:
    name: str
    ok: bool
    detail: str
    remedy: str


@dataclass(frozen=True)
class SelfTestReport:
    """A device's self-test, signed by the device's own key (PROTOCOL §4.7)."""

    id: str
    device: str
    time: str
    checks: tuple[SelfTestCheck, ...]
    sig: str
    signed_message: bytes
    """What `sig` signs (the context and the canonical JSON of the other fields), as decoded."""
    raw: bytes

    @property
    def passed(self) -> bool:
        return all(c.ok for c in self.checks)

    def signed_by(self, key_b64: str) -> bool:
        return verify_signature(load_public_key_b64(key_b64), self.sig, self.signed_message)


def encode_selftest(report_id: str, device: str, time: str, checks: list[SelfTestCheck], sign: Sign) -> bytes:
    fields = {"id": report_id, "device": device, "time": time,
              "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail, "remedy": c.remedy} for c in checks]}
    return canonical({**fields, "sig": sign(SELFTEST_CONTEXT + canonical(fields))})


def decode_selftest(payload: bytes) -> SelfTestReport:
    value = read_object(payload, MAX_SELFTEST, "self-test report", ProtocolError)
    if set(value) != {"id", "device", "time", "checks", "sig"}:
        raise ProtocolError("self-test report must be an object of exactly id, device, time, checks, sig")
    if not isinstance(value["id"], str) or not ALERT_ID.match(value["id"]):
        raise ProtocolError("self-test report 'id' must be 16 lowercase hex digits")
    if not isinstance(value["device"], str) or not layout.DEVICE_ID.match(value["device"]):
        raise ProtocolError("self-test report 'device' must be a device id")
    if not isinstance(value["time"], str):
        raise ProtocolError("self-test report 'time' must be a string")
    sig, message = _signature(value, SELFTEST_CONTEXT, "self-test report")
    if sig is None:
        raise ProtocolError("self-test report 'sig' must be the device's signature")
    checks = value["checks"]
    if not isinstance(checks, list) or not all(
            isinstance(c, dict) and set(c) == {"name", "ok", "detail", "remedy"} and isinstance(c["ok"], bool)
            and all(isinstance(c[k], str) for k in ("name", "detail", "remedy")) for c in checks):
        raise ProtocolError("self-test report 'checks' must be a list of objects of exactly name, ok (a boolean), "
                            "detail and remedy")
    return SelfTestReport(value["id"], value["device"], value["time"],
                          tuple(SelfTestCheck(c["name"], c["ok"], c["detail"], c["remedy"]) for c in checks),
                          sig, message, payload)
