"""The wire format's parsers take any byte sequence and answer with a value or a ProtocolError."""

from __future__ import annotations

import base64
import contextlib
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from evidence.canonical import canonical
from evidence.entry import parse_entry
from evidence.errors import MalformedEntry
from evidence.keys import VerifyKey
from mqtt import protocol
from mqtt.errors import ProtocolError

SESSION = "20261122T080000Z-abcdef"


def chunk(**changes: object) -> protocol.MediaChunk:
    fields: dict[str, object] = {"session": SESSION, "file": "000001.ts", "offset": 0, "total": 10,
                                 "sha256": "a" * 64, "data": b"0123456789"}
    fields.update(changes)
    return protocol.MediaChunk(**fields)  # type: ignore[arg-type]


def test_media_frame_round_trips() -> None:
    original = chunk(offset=4, data=b"456789")
    assert protocol.decode_media(protocol.encode_media(original)) == original


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"file": "../../etc/passwd"}, "'file' is malformed"),
        ({"session": "../x"}, "'session' is malformed"),
        ({"offset": 8}, "runs past the segment's total size"),
        ({"total": 0, "offset": 0}, "'total' must be an integer"),
        ({"sha256": "xyz"}, "'sha256' is malformed"),
        ({"data": b""}, "empty"),
    ],
)
def test_bad_media_headers_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ProtocolError) as err:
        protocol.decode_media(protocol.encode_media(chunk(**changes)))
    assert message in str(err.value)


def test_topic_must_be_a_recorder_topic() -> None:
    assert protocol.parse_topic("recorders", "recorders/GD-1/entry") == ("GD-1", "entry")
    for bad in ("recorders/GD-1", "other/GD-1/entry", "recorders/../entry", "recorders/a/b/c"):
        with pytest.raises(ProtocolError):
            protocol.parse_topic("recorders", bad)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_as_media_give_a_chunk_or_a_protocol_error(payload: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        protocol.decode_media(payload)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=0, max_value=300))
def test_mutated_media_frames_give_a_chunk_or_a_protocol_error(noise: bytes, at: int) -> None:
    frame = bytearray(protocol.encode_media(chunk()))
    frame[at % len(frame) : at % len(frame) + len(noise)] = noise
    with contextlib.suppress(ProtocolError):
        protocol.decode_media(bytes(frame))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=400), st.text(max_size=200).map(str.encode)))
def test_any_bytes_as_entry_or_receipt_give_a_value_or_an_error(payload: bytes) -> None:
    with contextlib.suppress(MalformedEntry):
        parse_entry(payload)
    with contextlib.suppress(ProtocolError):
        protocol.decode_receipt(payload)


@pytest.mark.parametrize("payload", [
    b"[" * 20_000,                                  # nesting deeper than any reader's stack
    b'{"seq":' + b"9" * 5000 + b"}",                # an integer of 5,000 digits
    b'{"session":"\\ud800"}',                      # a lone UTF-16 surrogate
    b'{"seq":true,"session":"' + b"x" * 5000 + b'"}',
])
def test_hostile_receipts_are_refused_not_raised__TAMPER_PROOF_IT(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        protocol.decode_receipt(payload)


def test_a_receipt_has_exactly_its_fields_and_types() -> None:
    good = protocol.encode_receipt(SESSION, 1, "a" * 64, "2026-11-22T08:00:00.000+00:00", "receiver-1")
    assert protocol.decode_receipt(good).seq == 1
    for bad in (good.replace(b'"seq":1', b'"seq":true'), good.replace(b'"seq":1', b'"seq":1.0'),
                good.replace(b'"seq":1', b'"seq":-1'), good.replace(b'"receiver"', b'"extra":1,"receiver"'),
                good + b" " * protocol.MAX_RECEIPT):
        with pytest.raises(ProtocolError):
            protocol.decode_receipt(bad)


def test_oversized_entry_is_refused() -> None:
    with pytest.raises(MalformedEntry, match="over the"):
        parse_entry(b"{" + b" " * 70_000 + b"}")


def test_a_signed_receipt_or_acknowledgement_verifies_only_as_signed__TAMPER_PROOF_IT() -> None:
    central, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    central_key, other_key = VerifyKey.of(central.public_key()), VerifyKey.of(other.public_key())

    def sign(message: bytes) -> str:
        return base64.b64encode(central.sign(message)).decode()

    receipt = protocol.decode_receipt(protocol.encode_receipt(SESSION, 1, "a" * 64, "t", "r", sign))
    assert receipt.signed_by(central_key) and not receipt.signed_by(other_key)
    unsigned = protocol.decode_receipt(protocol.encode_receipt(SESSION, 1, "a" * 64, "t", "r"))
    assert unsigned.sig is None and not unsigned.signed_by(central_key)
    moved = json.loads(receipt.raw)
    moved["seq"] = 2  # the signature of entry 1's receipt, on a receipt for entry 2
    assert not protocol.decode_receipt(canonical(moved)).signed_by(central_key)
    with pytest.raises(ProtocolError, match="'sig' must be a string"):
        protocol.decode_receipt(canonical({**moved, "sig": 7}))
    ack = protocol.decode_alert_ack(protocol.encode_alert_ack("0123456789abcdef", "ROOM-1", sign))
    assert ack.signed_by(central_key)
    # A receipt's signature cannot pass for an acknowledgement's: each has its own context.
    assert not protocol.AlertAck("0123456789abcdef", "ROOM-1", receipt.sig, ack.signed_message).signed_by(central_key)
