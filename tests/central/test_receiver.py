"""The receiver refuses what it must not store, and keeps serving."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.receiver import AHEAD_LIMIT, REFUSALS_KEPT, Receiver
from central.store import FileStore
from evidence import layout
from evidence.canonical import canonical
from evidence.entry import entry_hash, signed_message
from mqtt import protocol
from mqtt.broker import LocalBroker
from mqtt.client import make_client
from provisioning.identity import DeviceIdentity
from tests.conftest import RecordedSession, wait_until


@pytest.fixture
def central(tmp_path: Path, broker: LocalBroker, recorded: RecordedSession) -> Iterator[Receiver]:
    store = FileStore(tmp_path / "central")
    store.enroll(recorded.rig.config.device.id, recorded.rig.service.identity.public_key_b64)
    receiver = Receiver(store, "127.0.0.1", broker.port, "recorders", "receiver-under-test")
    receiver.start()
    assert receiver.connected.wait(10)
    yield receiver
    receiver.stop()


def stored_dir(central: Receiver, recorded: RecordedSession) -> Path:
    """Where the receiver's FileStore keeps the recorded session."""
    assert isinstance(central.store, FileStore)
    return central.store.session_dir(recorded.rig.config.device.id, recorded.session)


def send(broker: LocalBroker, messages: list[tuple[str, bytes]]) -> None:
    client = make_client("attacker", 2)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    for topic, payload in messages:
        client.publish(topic, payload, qos=1).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


def dealt_with(central: Receiver, messages: int) -> None:
    """Wait until the receiver has taken `messages` messages off the wire in all and finished storing what
    it accepted: whatever it will do with them is done (a wait on a condition, not on a clock)."""
    assert wait_until(lambda: central.handled >= messages), (central.handled, messages)
    assert central.settle(30)


def replay(recorded: RecordedSession) -> list[tuple[str, bytes]]:
    """The session's messages as the device sends them (media chunks, then the entry)."""
    device = recorded.rig.config.device.id
    out = []
    for seq in layout.entry_seqs(recorded.spool_dir):
        data = layout.entry_path(recorded.spool_dir, seq).read_bytes()
        entry = json.loads(data)
        if entry["kind"] == "segment":
            media = layout.media_path(recorded.spool_dir, entry["body"]["file"]).read_bytes()
            chunk = protocol.MediaChunk(recorded.session, entry["body"]["file"], 0, len(media),
                                        entry["body"]["sha256"], media)
            out.append((protocol.topic("recorders", device, "media"), protocol.encode_media(chunk)))
        out.append((protocol.topic("recorders", device, "entry"), data))
    return out


def test_replayed_session_is_stored_once__UPLOAD_24H(central: Receiver, broker: LocalBroker,
                                                      recorded: RecordedSession) -> None:
    messages = replay(recorded)
    send(broker, messages + messages)
    total = len(layout.entry_seqs(recorded.spool_dir))
    dealt_with(central, 2 * len(messages))
    assert central.stored == total  # duplicates were receipted again, not stored twice
    assert central.receipted >= total
    stored = stored_dir(central, recorded)
    assert layout.entry_seqs(stored) == list(range(total))
    # Media chunks resent after their segment was stored are not staged again (nothing leaks).
    assert isinstance(central.store, FileStore)
    assert not [p for p in (central.store.root / ".staging").rglob("*") if p.is_file()]


def test_entry_signed_by_another_key_is_refused__NO_LEAK(central: Receiver, broker: LocalBroker,
                                                          recorded: RecordedSession) -> None:
    forger = DeviceIdentity(Ed25519PrivateKey.generate())
    entry = json.loads(layout.entry_path(recorded.spool_dir, 0).read_bytes())
    entry["sig"] = forger.sign(signed_message(entry))
    send(broker, [(protocol.topic("recorders", recorded.rig.config.device.id, "entry"), canonical(entry))])
    assert wait_until(lambda: any("signature does not verify" in r for r in central.refused)), central.refused
    assert not stored_dir(central, recorded).exists()


def test_entry_on_another_devices_topic_is_refused__NO_LEAK(central: Receiver, broker: LocalBroker,
                                                             recorded: RecordedSession) -> None:
    data = layout.entry_path(recorded.spool_dir, 0).read_bytes()
    send(broker, [(protocol.topic("recorders", "OTHER-1", "entry"), data)])
    assert wait_until(lambda: any("came on OTHER-1's topic" in r for r in central.refused))


class Receipts:
    """Listens to one device's receipt topic, as the device does."""

    def __init__(self, broker: LocalBroker, device: str) -> None:
        self.seqs: set[int] = set()
        self.count = 0
        self._client = make_client("receipt-listener", 2)
        subscribed = threading.Event()
        self._client.on_connect = lambda client, *_: client.subscribe(protocol.topic("recorders", device, "receipt"), 1)
        self._client.on_subscribe = lambda *_: subscribed.set()
        self._client.on_message = lambda client, userdata, message: self._got(json.loads(message.payload)["seq"])
        self._client.connect("127.0.0.1", broker.port)
        self._client.loop_start()
        assert subscribed.wait(10)

    def _got(self, seq: int) -> None:
        self.seqs.add(seq)
        self.count += 1

    def all_of(self, central: Receiver) -> set[int]:
        """The receipts seen, once every receipt the receiver has sent has arrived."""
        assert wait_until(lambda: self.count >= central.receipted)
        return self.seqs

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def _held_back(recorded: RecordedSession, seq: int) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    """The session's messages without entry `seq` (and its media), and those held back."""
    messages = replay(recorded)
    at = next(i for i, (t, data) in enumerate(messages) if t.endswith("/entry") and json.loads(data)["seq"] == seq)
    start = at - 1 if messages[at - 1][0].endswith("/media") else at
    return messages[:start] + messages[at + 1 :], messages[start : at + 1]


def test_an_entry_before_its_predecessor_is_stored_and_receipted_when_the_chain_reaches_it__UPLOAD_24H(
        central: Receiver, broker: LocalBroker, recorded: RecordedSession) -> None:
    total = len(layout.entry_seqs(recorded.spool_dir))
    rest, held = _held_back(recorded, 1)
    receipts = Receipts(broker, recorded.rig.config.device.id)
    try:
        send(broker, rest)
        # Everything after the gap is stored at once (with receivers sharing the load the predecessor is
        # usually on its way through another one), but only the entry before the gap is receipted.
        dealt_with(central, len(rest))
        assert central.stored == total - 1, central.refused
        assert receipts.all_of(central) == {0}
        send(broker, held)
        assert wait_until(lambda: receipts.seqs == set(range(total))), receipts.seqs
    finally:
        receipts.close()


def test_a_stored_entry_whose_late_predecessor_does_not_link_is_never_receipted__NO_EDIT(
        central: Receiver, broker: LocalBroker, recorded: RecordedSession) -> None:
    device = recorded.rig.config.device.id
    rest, _ = _held_back(recorded, 1)
    # A different entry 1, signed with the device's own key (only the device can make such a pair): it
    # links to entry 0 and is stored, but then entry 2, stored earlier, does not link to it.
    other = json.loads(layout.entry_path(recorded.spool_dir, 0).read_bytes())
    other_1 = {**json.loads(layout.entry_path(recorded.spool_dir, 1).read_bytes()), "kind": "event",
               "body": {"name": "mark", "note": "not the entry the device recorded"}}
    other_1["prev"] = entry_hash(other)
    other_1["sig"] = recorded.rig.service.identity.sign(signed_message(other_1))
    receipts = Receipts(broker, device)
    try:
        send(broker, rest)
        dealt_with(central, len(rest))
        assert central.stored == len(layout.entry_seqs(recorded.spool_dir)) - 1
        send(broker, [(protocol.topic("recorders", device, "entry"), canonical(other_1))])
        dealt_with(central, len(rest) + 1)
        # The walk that stops at the break runs every few ms; the receipt of entry 1 shows it has run.
        assert wait_until(lambda: 1 in receipts.seqs), central.refused
        assert receipts.all_of(central) == {0, 1}
    finally:
        receipts.close()


def test_altered_segment_is_never_stored_as_genuine__NO_EDIT(central: Receiver, broker: LocalBroker,
                                                             recorded: RecordedSession) -> None:
    messages = replay(recorded)
    # Flip a byte in the first media chunk: the entry's SHA-256 no longer matches, so no receipt.
    index = next(i for i, (t, _) in enumerate(messages) if t.endswith("/media"))
    frame = bytearray(messages[index][1])
    frame[-10] ^= 0xFF
    messages[index] = (messages[index][0], bytes(frame))
    send(broker, messages[: index + 2])
    stored = stored_dir(central, recorded)
    segment_seq = json.loads(messages[index + 1][1])["seq"]
    dealt_with(central, index + 2)
    assert central.store.get_entry(recorded.rig.config.device.id, recorded.session, segment_seq - 1) is not None
    assert central.store.get_entry(recorded.rig.config.device.id, recorded.session, segment_seq) is None
    assert not list((stored / "media").glob("*.ts"))


def test_garbage_and_oversized_messages_are_refused_and_the_receiver_keeps_serving(
        central: Receiver, broker: LocalBroker, recorded: RecordedSession, tmp_path: Path) -> None:
    device = recorded.rig.config.device.id
    send(broker, [
        (protocol.topic("recorders", device, "entry"), b"\x00\xff not json"),
        (protocol.topic("recorders", device, "media"), b"RRM1\xff\xff\xff\xff"),
        (protocol.topic("recorders", device, "media"), b"x" * (protocol.DEFAULT_CHUNK + 100_000)),
    ])
    assert wait_until(lambda: len(central.refused) >= 3)
    assert any("over the" in r for r in central.refused)
    send(broker, replay(recorded)[:1] + replay(recorded)[1:3])
    assert wait_until(lambda: central.stored >= 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broker", "central"]


def test_refusals_kept_in_memory_are_bounded_and_counted__TAMPER_PROOF_IT(
        central: Receiver, broker: LocalBroker, recorded: RecordedSession) -> None:
    junk = [(protocol.topic("recorders", recorded.rig.config.device.id, "entry"), b"junk %d" % n)
            for n in range(REFUSALS_KEPT + 200)]
    send(broker, junk)
    dealt_with(central, len(junk))
    assert central.refusals == len(junk)
    assert len(central.refused) == REFUSALS_KEPT  # the newest; the log has every one


def test_forged_chunks_do_not_stay_in_staging__TAMPER_PROOF_IT(
        tmp_path: Path, broker: LocalBroker, recorded: RecordedSession) -> None:
    store = FileStore(tmp_path / "central")
    store.enroll(recorded.rig.config.device.id, recorded.rig.service.identity.public_key_b64)
    receiver = Receiver(store, "127.0.0.1", broker.port, "recorders", "sweeping-receiver", staging_max_age=0.5)
    receiver.start()
    try:
        assert receiver.connected.wait(10)
        forged = protocol.MediaChunk(recorded.session, "000042.ts", 5_000_000, 5_000_016, "a" * 64, b"x" * 16)
        send(broker, [(protocol.topic("recorders", recorded.rig.config.device.id, "media"),
                       protocol.encode_media(forged))])
        staged = tmp_path / "central" / ".staging" / recorded.rig.config.device.id / recorded.session / "000042.ts"
        assert wait_until(staged.exists)
        assert wait_until(lambda: not staged.exists())  # no entry ever seals it: removed once stale
    finally:
        receiver.stop()


def test_entries_that_break_the_sessions_rules_are_refused__NO_EDIT(
        central: Receiver, broker: LocalBroker, recorded: RecordedSession) -> None:
    # Signed with the device's own key, so only the rules can object: a seq far beyond any file name, an
    # entry after the closing one, and a second `open`.
    signer = recorded.rig.service.identity
    last = json.loads(layout.entry_path(recorded.spool_dir, layout.entry_seqs(recorded.spool_dir)[-1]).read_bytes())
    device = recorded.rig.config.device.id

    def signed(**fields: object) -> bytes:
        entry = {**last, **fields}
        entry["sig"] = signer.sign(signed_message(entry))
        return canonical(entry)

    after_close = signed(seq=last["seq"] + 1, prev=entry_hash(last), kind="event", body={"name": "late"})
    far = signed(seq=10**12, prev=entry_hash(last), kind="event", body={"name": "far"})
    second_open = signed(seq=last["seq"] + 1, prev=entry_hash(last), kind="open",
                         body=json.loads(layout.entry_path(recorded.spool_dir, 0).read_bytes())["body"])
    messages = replay(recorded)
    extra = [(protocol.topic("recorders", device, "entry"), data) for data in (after_close, far, second_open)]
    receipts = Receipts(broker, device)
    try:
        send(broker, messages + extra)
        dealt_with(central, len(messages) + len(extra))
        assert receipts.all_of(central) == set(range(last["seq"] + 1))
    finally:
        receipts.close()
    assert layout.entry_seqs(stored_dir(central, recorded)) == list(range(last["seq"] + 1))  # none stored
    refused = list(central.refused)
    assert any("entry after the closing entry" in r for r in refused), refused
    assert any("outside 0..99999999" in r for r in refused), refused
    assert any("a second 'open' entry" in r for r in refused), refused


def test_a_forged_frame_does_not_block_the_session__TAMPER_PROOF_IT(
        central: Receiver, broker: LocalBroker, recorded: RecordedSession) -> None:
    # One 16-byte frame far past the segment's end once left a staging file that could never match: that
    # segment and every later entry of the session were never stored, and the device resent them for ever.
    device = recorded.rig.config.device.id
    messages = replay(recorded)
    segment = next(json.loads(data) for t, data in messages if t.endswith("/entry") and json.loads(data)["kind"] ==
                   "segment")
    forged = protocol.MediaChunk(recorded.session, segment["body"]["file"], 5_000_000, 5_000_016, "a" * 64, b"x" * 16)
    receipts = Receipts(broker, device)
    try:
        send(broker, [(protocol.topic("recorders", device, "media"), protocol.encode_media(forged)), *messages])
        dealt_with(central, len(messages) + 1)
        send(broker, messages)  # the device's resend of whatever has no receipt
        dealt_with(central, 2 * len(messages) + 1)
        assert wait_until(lambda: receipts.seqs == set(range(len(layout.entry_seqs(recorded.spool_dir))))), \
            receipts.seqs
    finally:
        receipts.close()


def test_nothing_is_stored_after_a_known_close_or_far_ahead__NO_EDIT(
        central: Receiver, broker: LocalBroker, recorded: RecordedSession) -> None:
    # Entries that come before their predecessors are stored at once (receivers sharing the load), but not
    # after a close this receiver knows of, nor further ahead than a share group scatters a session.
    signer = recorded.rig.service.identity
    device = recorded.rig.config.device.id
    seqs = layout.entry_seqs(recorded.spool_dir)
    last = json.loads(layout.entry_path(recorded.spool_dir, seqs[-1]).read_bytes())
    opening = json.loads(layout.entry_path(recorded.spool_dir, 0).read_bytes())

    def signed(**fields: object) -> tuple[str, bytes]:
        entry = {**last, "kind": "event", "body": {"name": "x"}, "prev": "0" * 64, **fields}
        entry["sig"] = signer.sign(signed_message(entry))
        return protocol.topic("recorders", device, "entry"), canonical(entry)

    send(broker, [(protocol.topic("recorders", device, "entry"), canonical(opening)),
                  signed(seq=1 + 1 + AHEAD_LIMIT)])
    dealt_with(central, 2)
    assert any(f"more than {AHEAD_LIMIT} entries ahead" in r for r in central.refused), list(central.refused)
    send(broker, replay(recorded)[1:])
    send(broker, [signed(seq=last["seq"] + 2)])
    dealt_with(central, len(replay(recorded)) + 2)
    assert any("entry after the closing entry" in r for r in central.refused), list(central.refused)
    assert layout.entry_seqs(stored_dir(central, recorded)) == seqs


def test_everything_from_a_revoked_device_is_refused_and_said_once__TAMPER_PROOF_IT(
        central: Receiver, broker: LocalBroker, recorded: RecordedSession, caplog: pytest.LogCaptureFixture) -> None:
    # A stolen box still holding a valid certificate on a broker that has not caught up (or plain MQTT): central
    # itself refuses whatever it sends from the moment it is revoked, and says so once, not once per message.
    device = recorded.rig.config.device.id
    assert isinstance(central.store, FileStore)
    central.store.revoke(device, "值班长 孙", "box stolen")
    messages = replay(recorded)
    send(broker, messages)
    dealt_with(central, len(messages))
    assert central.refusals == len(messages)
    assert all("was revoked" in reason and "box stolen" in reason for reason in central.refused)
    said = [r for r in caplog.records if "was revoked" in r.getMessage()]
    assert len(said) == 1
    assert not stored_dir(central, recorded).exists()
    assert central.store.device_keys(device)[0]["key"] == recorded.rig.service.identity.public_key_b64
