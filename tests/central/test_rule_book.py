"""One rule book: central's receiver admits entries, and `recorder verify` judges a session, by the same rules
(evidence/rules.py). Every session of a tamper corpus and a malformed-entry corpus goes through both, and
they agree case by case: the receiver receipts exactly the entries before the one the verifier names first.
So central never receipts an entry that the verifier rejects (NO-EDIT, TAMPER-PROOF-IT).

The corpus changes what is in the ledger and the media. Tampering with a folder's layout alone (two entry
files swapped, a stray file in media/) is a property of the folder, not of the entries: the verifier names
it, and a receiver, which files entries by the seq they carry, stores the session as it should be.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.receiver import Receiver
from central.store import FileStore
from evidence import layout
from evidence.canonical import canonical
from evidence.entry import entry_hash, signed_message
from evidence.verify import verify_session
from mqtt import protocol
from mqtt.broker import LocalBroker
from mqtt.client import make_client
from provisioning.identity import DeviceIdentity
from tests.conftest import RecordedSession
from tests.evidence.test_verify import rewrite, segments
from tests.media import edit_opening_metadata

Tamper = Callable[[Path, DeviceIdentity], None]


def _second_segment(session: Path) -> dict[str, Any]:
    return segments(session)[1]


def flip_media_byte(session: Path, device: DeviceIdentity) -> None:
    target = layout.media_path(session, _second_segment(session)["body"]["file"])
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))


def delete_media(session: Path, device: DeviceIdentity) -> None:
    layout.media_path(session, _second_segment(session)["body"]["file"]).unlink()


def delete_entry(session: Path, device: DeviceIdentity) -> None:
    layout.entry_path(session, _second_segment(session)["seq"]).unlink()


def edit_metadata(session: Path, device: DeviceIdentity) -> None:
    edit_opening_metadata(session)


def sign_one_with_another_key(session: Path, device: DeviceIdentity) -> None:
    victim = _second_segment(session)
    path = layout.entry_path(session, victim["seq"])
    entry = json.loads(path.read_bytes())
    entry["sig"] = DeviceIdentity(Ed25519PrivateKey.generate()).sign(signed_message(entry))
    path.write_bytes(canonical(entry))


def resign_everything_with_another_key(session: Path, device: DeviceIdentity) -> None:
    rewrite(session, DeviceIdentity(Ed25519PrivateKey.generate()), lambda e: None)


def _resigned(change: Callable[[dict[str, Any]], None]) -> Tamper:
    """A change made with the device's own key: every signature and link holds; only the rules can object."""
    def tamper(session: Path, device: DeviceIdentity) -> None:
        rewrite(session, device, change)
    return tamper


def _at_second_segment(change: Callable[[dict[str, Any]], None]) -> Tamper:
    def tamper(session: Path, device: DeviceIdentity) -> None:
        victim = _second_segment(session)["seq"]

        def maybe(entry: dict[str, Any]) -> None:
            if entry["seq"] == victim:
                change(entry)
        rewrite(session, device, maybe)
    return tamper


def entry_after_close(session: Path, device: DeviceIdentity) -> None:
    last = json.loads(layout.entry_path(session, layout.entry_seqs(session)[-1]).read_bytes())
    extra = {**last, "seq": last["seq"] + 1, "prev": entry_hash(last), "kind": "event", "body": {"name": "late"}}
    extra["sig"] = device.sign(signed_message(extra))
    layout.entry_path(session, extra["seq"]).write_bytes(canonical(extra))


def cut_tail(session: Path, device: DeviceIdentity) -> None:
    last_segment = segments(session)[-1]
    for seq in layout.entry_seqs(session):
        if seq >= last_segment["seq"]:
            layout.entry_path(session, seq).unlink()
    layout.media_path(session, last_segment["body"]["file"]).unlink()


def duplicate_body_key(session: Path, device: DeviceIdentity) -> None:
    path = layout.entry_path(session, 0)
    raw = path.read_text(encoding="utf-8")
    body = json.loads(raw)["body"]
    fake = json.dumps({**body, "officers": [{"name": "假警官", "certificate": "0"}]}, ensure_ascii=False,
                      sort_keys=True, separators=(",", ":"))
    path.write_text(raw.replace('{"body":', '{"body":' + fake + ',"body":', 1), encoding="utf-8")


def _replace_entry(seq: int, payload: bytes) -> Tamper:
    def tamper(session: Path, device: DeviceIdentity) -> None:
        layout.entry_path(session, seq).write_bytes(payload)
    return tamper


def _shift_start(entry: dict[str, Any]) -> None:
    entry["body"]["start_ns"] += 500_000_000
    entry["body"]["end_ns"] += 500_000_000


def _shift_back(entry: dict[str, Any]) -> None:
    entry["body"]["start_ns"] -= 500_000_000


def _mark_recovered(entry: dict[str, Any]) -> None:
    entry["body"]["recovered"] = True


def _escape_media(entry: dict[str, Any]) -> None:
    entry["body"]["file"] = "../entries/00000000.json"


def _reindex(entry: dict[str, Any]) -> None:
    entry["body"]["index"] += 1
    entry["body"]["file"] = layout.media_name(entry["body"]["index"])


def _second_open(entry: dict[str, Any]) -> None:
    if entry["seq"] == 3:
        entry["kind"] = "open"


def _close(change: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def maybe(entry: dict[str, Any]) -> None:
        if entry["kind"] == "close":
            change(entry["body"])
    return maybe


CORPUS: dict[str, Tamper] = {
    "intact": lambda session, device: None,
    # Tampering (test_verify.py's corpus).
    "flipped media byte": flip_media_byte,
    "deleted segment file": delete_media,
    "deleted segment entry": delete_entry,
    "edited metadata, not re-signed": edit_metadata,
    "one entry signed by another key": sign_one_with_another_key,
    "whole session re-signed by another key": resign_everything_with_another_key,
    "unexplained gap, re-signed by the device": _at_second_segment(_shift_start),
    "overlapping segments, re-signed by the device": _at_second_segment(_shift_back),
    "recovered segment with no interruption after it, re-signed": _at_second_segment(_mark_recovered),
    "segment out of order, re-signed by the device": _at_second_segment(_reindex),
    "segment naming a file outside media, re-signed": _at_second_segment(_escape_media),
    "entry after close, signed by the device": entry_after_close,
    "a second open, signed by the device": _resigned(_second_open),
    "closing totals that do not add up, re-signed": _resigned(_close(lambda b: b.update(segments=b["segments"] + 1))),
    "closing duration that does not add up, re-signed": _resigned(_close(lambda b: b.update(
        duration_ns=b["duration_ns"] + 1))),
    "cut tail": cut_tail,
    # Malformed entries.
    "duplicate body key": duplicate_body_key,
    "lone surrogate": _replace_entry(2, b'{"body":{"name":"\\ud800"}}'),
    "20,000 nested arrays": _replace_entry(2, b"[" * 20_000 + b"]" * 20_000),
    "5,000-digit integer": _replace_entry(2, b'{"seq":' + b"1" * 5000 + b"}"),
    "not JSON": _replace_entry(2, b"\x00\xff not json"),
}


def _first_bad_seq(where: str, entries: int) -> int:
    """The entry a verifier finding is about (the closing entry for its totals); `entries` when the finding
    is about the session as a whole (no closing entry)."""
    if where == "closing entry":
        return entries - 1
    found = re.search(r"entry (\d+)\)?$", where)
    assert found is not None, where
    return int(found.group(1))


def _messages(session: Path, device: str) -> list[tuple[str, bytes]]:
    """What a device would send for the folder's entries: each segment's media (as the entry describes it, as
    far as it can be read), then the entry's bytes, as they are."""
    out = []
    for seq in layout.entry_seqs(session):
        data = layout.entry_path(session, seq).read_bytes()
        try:
            body = json.loads(data).get("body", {})
        except (ValueError, RecursionError, AttributeError):
            body = {}
        name = body.get("file") if isinstance(body, dict) else None
        if isinstance(name, str) and layout.MEDIA_NAME.match(name) and layout.media_path(session, name).is_file():
            media = layout.media_path(session, name).read_bytes()
            chunk = protocol.MediaChunk(session.name, name, 0, len(media), hashlib.sha256(media).hexdigest(), media)
            out.append((protocol.topic("recorders", device, protocol.MEDIA), protocol.encode_media(chunk)))
        out.append((protocol.topic("recorders", device, protocol.ENTRY), data))
    return out


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    with LocalBroker(tmp_path_factory.mktemp("rule-book-broker")) as b:
        yield b


def _through_a_receiver(broker: LocalBroker, store_root: Path, device: str, key: str,
                        messages: list[tuple[str, bytes]]) -> set[int]:
    """The seqs a fresh receiver receipts for these messages, once it has dealt with every one of them."""
    store = FileStore(store_root)
    store.enroll(device, key)
    seqs: set[int] = set()
    got = threading.Condition()

    def on_receipt(client: Any, userdata: Any, message: Any) -> None:
        with got:
            seqs.add(protocol.decode_receipt(message.payload).seq)
            got.notify_all()

    listener = make_client(f"listener-{store_root.name}", 2)
    subscribed = threading.Event()
    listener.on_connect = lambda client, *_: client.subscribe(protocol.topic("recorders", device, "receipt"), 1)
    listener.on_subscribe = lambda *_: subscribed.set()
    listener.on_message = on_receipt
    listener.connect("127.0.0.1", broker.port)
    listener.loop_start()
    receiver = Receiver(store, "127.0.0.1", broker.port, "recorders", f"rules-{store_root.name}")
    receiver.start()
    sender = make_client(f"device-{store_root.name}", 2)
    try:
        assert subscribed.wait(10) and receiver.connected.wait(10)
        sender.connect("127.0.0.1", broker.port)
        sender.loop_start()
        for topic, payload in messages:
            sender.publish(topic, payload, qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 30
        while receiver.handled < len(messages) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert receiver.handled == len(messages), "the receiver did not get every message"
        assert receiver.settle(30)
        with got:  # every receipt the receiver sent has reached the device's topic
            assert got.wait_for(lambda: len(seqs) >= receiver.receipted, 10)
        return set(seqs)
    finally:
        sender.disconnect()
        sender.loop_stop()
        receiver.stop()
        listener.disconnect()
        listener.loop_stop()


def _backwards(messages: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The entries last first (each still after its media): every entry but the last arrives ahead of its
    predecessor, as with receivers sharing the load, and is judged when the chain reaches it."""
    groups: list[list[tuple[str, bytes]]] = [[]]
    for message in messages:
        groups[-1].append(message)
        if message[0].endswith("/entry"):
            groups.append([])
    return [m for group in reversed(groups) for m in group]


@pytest.mark.parametrize("order", ["in order", "backwards"])
@pytest.mark.parametrize("case", list(CORPUS))
def test_receiver_and_verifier_agree_case_by_case__NO_EDIT(case: str, order: str, recorded: RecordedSession,
                                                            broker: LocalBroker, tmp_path: Path) -> None:
    device = recorded.rig.service.identity
    session = tmp_path / recorded.session
    shutil.copytree(recorded.central_dir, session, ignore=shutil.ignore_patterns("plain"))
    CORPUS[case](session, device)
    entries = len(layout.entry_seqs(session))
    report = verify_session(session, device.public_key_b64)
    messages = _messages(session, recorded.rig.config.device.id)
    receipted = _through_a_receiver(broker, tmp_path / "central", recorded.rig.config.device.id,
                                    device.public_key_b64, messages if order == "in order" else _backwards(messages))
    if report.ok:
        assert case == "intact"
        assert receipted == set(range(entries))
        return
    first_bad = _first_bad_seq(report.findings[0].where, entries)
    assert receipted == set(range(first_bad)), f"{case}: verifier says {report.findings[0]}"
