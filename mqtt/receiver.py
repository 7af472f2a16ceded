"""The reference central receiver: stores what devices send, verifies it, and receipts it.

A receipt for an entry goes out only after the entry (and the segment it seals) is durably stored
and verified: the device key is the enrolled one, the signature holds, the entry links to the one
before, the media's SHA-256 and size match. Anything else is refused with a logged reason, and
nothing outside the store is ever written.
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from capture import layout
from capture.errors import CaptureError, StorageFault
from capture.ledger import GENESIS, entry_hash, parse_entry, signed_message
from mqtt import protocol
from mqtt.client import make_client
from mqtt.errors import ProtocolError
from mqtt.index import SessionIndex, open_index
from mqtt.store import CentralStore, Commit
from mqtt.tls import TlsFiles
from mqtt.working_copy import PLAIN, write_working_copy
from provisioning.errors import ProvisioningError
from provisioning.identity import load_public_key_b64, verify_signature

log = logging.getLogger(__name__)

MAX_MESSAGE = protocol.DEFAULT_CHUNK + 64 * 1024
WAIT_SECONDS = 20.0
"""How long an entry may wait for its predecessor or its media before it is dropped here (the device
resends it anyway, 15 s after sending, until it has a receipt)."""
FOLLOW_UP_PAUSE = 0.25
"""Seconds between follow-up rounds while entries are being stored."""
COPY_BACKLOG = 2000
"""Working copies that may wait for a lull in storing (about 470 MB at the default bitrate)."""
RETRY_SECONDS = 0.005
"""A receiver of a share group cannot hear the others' commits, so it looks again this often (measured:
50 ms made two receivers five times slower than one; 5 ms costs nothing while nothing waits)."""


class Refused(Exception):
    """A message that must not be stored; the text is the logged reason."""


@dataclass(frozen=True)
class _FollowUp:
    """Work after a receipt: the session index and, for a segment, the decrypted working copy."""

    device: str
    session: str
    entry: dict[str, Any]
    missing_only: bool


class Receiver:
    def __init__(self, store: CentralStore, host: str, port: int, prefix: str, client_id: str,
                 tls: TlsFiles | None = None, share_group: str | None = None) -> None:
        self.store = store
        self._host, self._port, self._prefix = host, port, prefix
        self._client_id = client_id
        self._client = make_client(client_id, 30, tls)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._subscriptions: set[int] = set()
        self._share_group = share_group
        self._lock = threading.Condition()
        """Guards everything below. Messages are handled on paho's thread; durable storage, receipts and the
        follow-up work each run on a thread of their own, so the network never waits for the disk."""
        self._waiting: dict[tuple[str, str, int], tuple[bytes, float]] = {}
        """(device, session, seq) -> (entry, when it came) for an entry whose predecessor or media is not
        stored yet. With several receivers sharing the load, that often arrives at another receiver a
        moment later, so waiting entries are retried every RETRY_SECONDS against the shared store."""
        self._accepted: dict[tuple[str, str, int], bytes] = {}
        """Entries verified and queued for the next group commit, or being committed: not durable yet, so not
        receipted yet, but their successors may link to them."""
        self._batch: list[tuple[Commit, dict[str, Any]]] = []
        self._follow_ups: list[_FollowUp] = []
        self._copies: collections.deque[_FollowUp] = collections.deque()
        self._following = False
        self._stopping = threading.Event()
        self._committed_all = threading.Event()
        self._threads = [threading.Thread(target=target, name=name, daemon=True) for target, name in (
            (self._retry_waiting, "receiver-retry"), (self._commit_batches, "receiver-commit"),
            (self._follow_up, "receiver-follow-up"))]
        self.connected = threading.Event()
        self.stored = 0
        self.refused: list[str] = []
        self.index: SessionIndex | None = open_index(store)
        """Finds sessions by their metadata; derived from the store, never consulted before a receipt."""
        self.central_key: X25519PrivateKey | None = None
        """Set to central's private key to keep a decrypted working copy of each sealed segment."""

    def start(self) -> None:
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Store and receipt what was accepted, disconnect, and finish the follow-up work. An entry that
        arrives meanwhile is not stored here; the device resends it."""
        self._stopping.set()
        retry, commit, follow_up = self._threads
        with self._lock:
            self._lock.notify_all()
        for thread in (retry, commit):
            if thread.is_alive():
                thread.join()
        self._client.disconnect()
        self._client.loop_stop()
        with self._lock:
            self._committed_all.set()
            self._lock.notify_all()
        if follow_up.is_alive():
            follow_up.join()
        if self.index is not None:
            self.index.close()

    def settle(self, timeout: float) -> bool:
        """Wait until every accepted entry is stored and receipted and its follow-up work (index, working
        copy) is done; False if that took longer than `timeout`."""
        with self._lock:
            return self._lock.wait_for(
                lambda: not (self._accepted or self._follow_ups or self._copies or self._following), timeout)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.warning("receiver: broker refused the connection: %s", reason)
            return
        for kind in (protocol.MEDIA, protocol.ENTRY):
            topic = protocol.topic(self._prefix, "+", kind)
            # In a share group the broker hands each message to one member (MQTT 5 shared subscription).
            _, mid = client.subscribe(f"$share/{self._share_group}/{topic}" if self._share_group else topic, qos=1)
            if mid is not None:
                self._subscriptions.add(mid)

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        # Ready only once the broker has both subscriptions: a message published before that is not
        # routed to us (the device would resend it, but a caller waiting on `connected` expects it).
        self._subscriptions.discard(mid)
        if not self._subscriptions:
            self.connected.set()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._guarded(message.topic, lambda: self._dispatch(message.topic, bytes(message.payload)))

    def _dispatch(self, topic: str, payload: bytes) -> None:
        if len(payload) > MAX_MESSAGE:
            raise Refused(f"message of {len(payload)} bytes is over the {MAX_MESSAGE}-byte limit")
        device, kind = protocol.parse_topic(self._prefix, topic)
        with self._lock:
            if kind == protocol.MEDIA:
                self._media(device, payload)
            elif kind == protocol.ENTRY:
                self._entry(device, payload)
            else:
                raise Refused(f"receiver does not take {kind!r} messages")

    def _guarded(self, where: str, action: Callable[[], None]) -> None:
        try:
            action()
        except (OSError, StorageFault) as err:
            # Disk full or failing: no receipt goes out, so the device keeps its copy and resends.
            self.refused.append(f"storage: {err}")
            log.error("cannot store message on %s: %s; no receipt sent", where, err)
        except (Refused, ProtocolError, CaptureError, ProvisioningError) as err:
            self.refused.append(str(err))
            log.warning("refused message on %s: %s", where, err)
        except Exception as err:
            # The last line of defence: one message we did not foresee must not stop the receiver
            # (paho would re-raise it and end its network loop). It is refused and logged in full.
            self.refused.append(f"unexpected: {err!r}")
            log.exception("refused message on %s: unexpected error", where)

    def _retry_waiting(self) -> None:
        while not self._stopping.wait(RETRY_SECONDS):
            with self._lock:
                if not self._waiting:
                    continue
                waiting, self._waiting = self._waiting, {}
            now = time.monotonic()
            for (device, session, seq), (data, since) in waiting.items():
                if now - since > WAIT_SECONDS:
                    log.info("entry %s/%d still incomplete after %.0f s; left to the device's resend", session, seq,
                             now - since)
                    continue
                self._guarded(f"{device}/{session}/{seq}", functools.partial(self._retry_one, device, data, since))

    def _retry_one(self, device: str, data: bytes, since: float) -> None:
        with self._lock:
            self._accept_chain(device, parse_entry(data), data, since)

    def _media(self, device: str, payload: bytes) -> None:
        chunk = protocol.decode_media(payload)
        if self.store.device_key(device) is None:
            raise Refused(f"device {device} is not enrolled")
        self.store.stage_chunk(device, chunk)

    def _entry(self, device: str, data: bytes) -> None:
        entry = parse_entry(data)
        if entry["device"] != device:
            raise Refused(f"entry names device {entry['device']} but came on {device}'s topic")
        enrolled = self.store.device_key(device)
        if enrolled is None:
            raise Refused(f"device {device} is not enrolled")
        if not verify_signature(load_public_key_b64(enrolled), entry["sig"], signed_message(entry)):
            raise Refused(f"entry {entry['session']}/{entry['seq']}: signature does not verify under {device}'s key")
        self._accept_chain(device, entry, data, time.monotonic())

    def _accept_chain(self, device: str, entry: dict[str, Any], data: bytes, since: float) -> None:
        """Accept an entry, then each waiting successor it releases (a loop: after an outage hundreds may
        wait on the one before)."""
        while self._accept(device, entry, data, since):
            follower = self._waiting.pop((device, entry["session"], entry["seq"] + 1), None)
            if follower is None:
                return
            data, since = follower
            entry = parse_entry(data)

    def _accept(self, device: str, entry: dict[str, Any], data: bytes, since: float) -> bool:
        """Queue the entry for the next group commit if it may be stored; True if it was queued. Called
        with the lock held."""
        session, seq = entry["session"], entry["seq"]
        key = (device, session, seq)
        accepted = self._accepted.get(key)
        if accepted is not None:
            if accepted != data:
                raise Refused(f"entry {session}/{seq} conflicts with the one already stored")
            return False  # its receipt goes out once its group commit is done
        existing = self.store.get_entry(device, session, seq)
        if existing is not None:
            if existing != data:
                raise Refused(f"entry {session}/{seq} conflicts with the one already stored")
            self._receipt(device, entry)
            # A resend after a crash between commit and follow-up fills the index and working copy gaps.
            self._follow_ups.append(_FollowUp(device, session, entry, missing_only=True))
            self._lock.notify_all()
            return False
        if seq == 0:
            if entry["prev"] != GENESIS or entry["kind"] != "open":
                raise Refused(f"entry {session}/0 is not a proper 'open' entry")
            if entry["body"].get("device_key") != self.store.device_key(device):
                raise Refused(f"session {session} names a device key other than the enrolled one")
        else:
            before = self._accepted.get((device, session, seq - 1)) or self.store.get_entry(device, session, seq - 1)
            if before is None:
                self._waiting[key] = (data, since)
                return False
            if entry_hash(parse_entry(before)) != entry["prev"]:
                raise Refused(f"entry {session}/{seq} does not link to the stored entry {seq - 1}")
        media_file: str | None = None
        if entry["kind"] == "segment":
            body = entry["body"]
            media_file = str(body.get("file"))
            if not isinstance(body.get("index"), int) or media_file != layout.media_name(body["index"]):
                raise Refused(f"entry {session}/{seq} names segment file {media_file!r}, not the one for its index")
            size = body.get("bytes")
            if not isinstance(size, int) or not self.store.staged_matches(device, session, media_file,
                                                                          str(body.get("sha256")), size):
                # Media not (yet) complete or not matching: no receipt yet. It may still be arriving (here or
                # at another receiver of the group); after WAIT_SECONDS the device's resend takes over.
                self._waiting[key] = (data, since)
                return False
        self._accepted[key] = data
        self._batch.append((Commit(device, session, seq, data, media_file), entry))
        self._lock.notify_all()
        return True

    def _commit_batches(self) -> None:
        """Group commit: everything accepted since the last commit is stored in one go, then receipted.
        Under load the batches grow, so the flushes per entry fall as the rate rises."""
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._batch or self._stopping.is_set())
                if not self._batch:
                    return
                batch, self._batch = self._batch, []
            try:
                self.store.commit([commit for commit, _ in batch])
            except Exception as err:
                # Disk full or failing (OSError, StorageFault), or something unforeseen: either way nothing
                # of the batch is receipted, and the thread goes on storing.
                with self._lock:
                    # Entries accepted since may link to one that is not stored: they go too. Nothing is
                    # receipted, so the device keeps its copies and resends them all.
                    dropped = batch + self._batch
                    self._batch = []
                    for commit, _ in dropped:
                        self._accepted.pop((commit.device, commit.session, commit.seq), None)
                    self.refused.append(f"storage: {err}")
                    self._lock.notify_all()
                log.error("cannot store %d entries (from %s/%s/%d): %s; no receipt sent", len(dropped),
                          batch[0][0].device, batch[0][0].session, batch[0][0].seq, err)
                continue
            for commit, entry in batch:
                self._receipt(commit.device, entry)
            with self._lock:
                for commit, entry in batch:
                    self._accepted.pop((commit.device, commit.session, commit.seq), None)
                    self._follow_ups.append(_FollowUp(commit.device, commit.session, entry, missing_only=False))
                self.stored += len(batch)
                self._lock.notify_all()

    def _follow_up(self) -> None:
        """After the receipt, off the receipt path: index each session once per round, and keep the working
        copies."""
        while True:
            with self._lock:
                self._following = False
                self._lock.notify_all()
                self._lock.wait_for(lambda: self._follow_ups or self._may_copy() or self._committed_all.is_set())
                if not self._follow_ups and not self._may_copy():
                    return
                work, self._follow_ups = self._follow_ups, []
                copy = self._copies.popleft() if self._may_copy() else None
                self._following = True
            for device, session in dict.fromkeys((w.device, w.session) for w in work):
                self._index(device, session)
            if copy is not None:
                self._working_copy(copy)
            with self._lock:
                self._copies.extend(w for w in work if w.entry["kind"] == "segment" and self.central_key is not None)
                busy = bool(self._accepted)
            if work and busy:
                # While entries are being stored, gather a bigger round: the index commits (an fsync each)
                # a few times a second instead of once per group commit.
                self._committed_all.wait(FOLLOW_UP_PAUSE)

    def _may_copy(self) -> bool:
        """Working copies wait while entries are being stored: they double central's disk writes, and what
        the device waits for is the receipt. A backlog of COPY_BACKLOG copies is worked off regardless."""
        return bool(self._copies) and (not self._accepted or len(self._copies) >= COPY_BACKLOG
                                       or self._committed_all.is_set())

    def _working_copy(self, work: _FollowUp) -> None:
        assert self.central_key is not None
        session_dir = self.store.session_dir(work.device, work.session)
        body = work.entry["body"]
        if work.missing_only and (session_dir / PLAIN / str(body.get("file"))).exists():
            return
        try:
            # Made again on a resend when missing: a receiver stopped between commit and copy, or a full disk.
            write_working_copy(session_dir, body, self.central_key)
        except Exception as err:
            # The sealed original is stored and receipted; only the viewing copy is missing. Whatever the
            # error, the follow-up thread goes on.
            log.error("entry %s/%d: no working copy of %s: %s", work.session, work.entry["seq"], body.get("file"), err)

    def _index(self, device: str, session: str) -> None:
        if self.index is None:
            return
        try:
            self.index.record(device, session)
        except Exception:
            # Whatever goes wrong in the index must not cost a receipt: the entry is stored, and the index
            # catches up from the files on the session's next entry or on `recorder receiver reindex`.
            log.exception("session index: could not record %s/%s", device, session)

    def _receipt(self, device: str, entry: dict[str, Any]) -> None:
        payload = protocol.encode_receipt(entry["session"], entry["seq"], entry_hash(entry),
                                          dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                                          self._client_id)
        self._client.publish(protocol.topic(self._prefix, device, protocol.RECEIPT), payload, qos=1)
