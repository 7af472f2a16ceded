"""The reference central receiver: stores what devices send, verifies it, and receipts it.

An entry is stored when the device key is the enrolled one, the signature holds, the media's SHA-256 and
size match, and it links to its predecessor if that is here. A receipt for it goes out only once it is
durably stored and the chain from the session's `open` entry to it is complete in the store (docs/
PROTOCOL.md §6.1). Anything else is refused with a logged reason, and nothing outside the store is ever
written.
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
"""How long an entry may wait here for its media, or a stored entry for its chain to be complete, before it
is forgotten (the device resends it anyway, 15 s after sending, until it has a receipt)."""
FOLLOW_UP_PAUSE = 0.25
"""Seconds between follow-up rounds while entries are being stored."""
FRONTIER_SESSIONS = 4096
"""Sessions whose chain frontier is remembered; an older one is walked again from the store if needed."""
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
        """(device, session, seq) -> (entry, when it came) for a segment entry whose media is not completely
        staged yet. With several receivers sharing the load, its chunks often reach another receiver, so
        waiting entries are retried every RETRY_SECONDS against the shared store."""
        self._accepted: dict[tuple[str, str, int], bytes] = {}
        """Entries verified and queued for the next group commit, or being committed: not durable yet, so not
        receipted yet, but their successors may link to them."""
        self._batch: list[tuple[Commit, dict[str, Any]]] = []
        self._unlinked: dict[tuple[str, str, int], tuple[dict[str, Any], float]] = {}
        self._breaks: set[tuple[str, str, int]] = set()
        """Entries stored before their predecessor was (it came later, or to another receiver of the group):
        receipted once the chain back to the session's `open` entry is in the store."""
        self._frontier: collections.OrderedDict[tuple[str, str], tuple[int, str]] = collections.OrderedDict()
        """(device, session) -> (seq, entry hash) of the last stored entry known to link back, without a gap,
        to the session's `open` entry; the most recently used FRONTIER_SESSIONS sessions."""
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
        """Wait until every accepted entry is stored (and receipted, if its chain is complete) and the
        follow-up work (index, working copies) is done; False if that took longer than `timeout`."""
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
                self._receipt_linked(time.monotonic())
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
            self._accept(device, parse_entry(data), data, since)

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
        self._accept(device, entry, data, time.monotonic())

    def _accept(self, device: str, entry: dict[str, Any], data: bytes, since: float) -> None:
        """Queue the entry for the next group commit if it may be stored. Called with the lock held."""
        session, seq = entry["session"], entry["seq"]
        key = (device, session, seq)
        accepted = self._accepted.get(key)
        if accepted is not None:
            if accepted != data:
                raise Refused(f"entry {session}/{seq} conflicts with the one already stored")
            return  # its receipt goes out once its group commit is done
        existing = self.store.get_entry(device, session, seq)
        if existing is not None:
            if existing != data:
                raise Refused(f"entry {session}/{seq} conflicts with the one already stored")
            if self._advance(device, session) >= seq:
                self._receipt(device, entry)
            else:
                self._unlinked[key] = (entry, time.monotonic())
            # A resend after a crash between commit and follow-up fills the index and working copy gaps.
            self._follow_ups.append(_FollowUp(device, session, entry, missing_only=True))
            self._lock.notify_all()
            return
        if seq == 0:
            if entry["prev"] != GENESIS or entry["kind"] != "open":
                raise Refused(f"entry {session}/0 is not a proper 'open' entry")
            if entry["body"].get("device_key") != self.store.device_key(device):
                raise Refused(f"session {session} names a device key other than the enrolled one")
        else:
            # A predecessor not here yet does not hold the entry back: it is stored now and receipted once the
            # chain reaches it (with receivers sharing the load, the predecessor is usually being stored by
            # another one at this moment). A predecessor that is here must link.
            before = self._accepted.get((device, session, seq - 1)) or self.store.get_entry(device, session, seq - 1)
            if before is not None and entry_hash(parse_entry(before)) != entry["prev"]:
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
                return
        self._accepted[key] = data
        self._batch.append((Commit(device, session, seq, data, media_file), entry))
        self._lock.notify_all()

    def _advance(self, device: str, session: str) -> int:
        """The last seq of the session known to link back, without a gap, to its `open` entry, walking on
        through the store from where the last walk stopped (-1 if not even the `open` entry is stored)."""
        key = (device, session)
        seq, link = self._frontier.pop(key, (-1, GENESIS))
        while (data := self.store.get_entry(device, session, seq + 1)) is not None:
            entry = parse_entry(data)
            if entry["prev"] != link:
                # Stored before its predecessor, which then did not match: never receipted, and `recorder
                # verify` names the break. Only the device's own key can sign such a pair. Said once.
                if (device, session, seq + 1) not in self._breaks:
                    self._breaks.add((device, session, seq + 1))
                    log.error("stored entry %s/%d does not link to the stored entry %d; it gets no receipt",
                              session, seq + 1, seq)
                break
            seq, link = seq + 1, entry_hash(entry)
        self._frontier[key] = (seq, link)
        while len(self._frontier) > FRONTIER_SESSIONS:
            self._frontier.popitem(last=False)
        return seq

    def _receipt_linked(self, now: float) -> None:
        """Receipt each stored entry whose chain is now complete; forget those that waited WAIT_SECONDS (the
        device resends them, and a resend of a stored entry is looked at again). Called with the lock held."""
        frontiers: dict[tuple[str, str], int] = {}
        for key, (entry, since) in list(self._unlinked.items()):
            device, session, seq = key
            if (device, session) not in frontiers:
                try:
                    frontiers[(device, session)] = self._advance(device, session)
                except (OSError, CaptureError) as err:
                    # An unreadable stored entry: nothing after it is receipted, and the thread goes on.
                    log.error("cannot follow the chain of %s/%s in the store: %s", device, session, err)
                    frontiers[(device, session)] = -1
            if frontiers[(device, session)] >= seq:
                del self._unlinked[key]
                self._receipt(device, entry)
            elif now - since > WAIT_SECONDS:
                del self._unlinked[key]
                log.info("entry %s/%d stored, but its chain still incomplete after %.0f s; left to the device's "
                         "resend", session, seq, now - since)

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
                self.store.commit([commit for commit, _ in batch], self._client_id)
            except Exception as err:
                # Disk full or failing (OSError, StorageFault), or something unforeseen: either way nothing
                # of the batch is receipted, and the thread goes on storing.
                with self._lock:
                    # Nothing of the batch is receipted, so the devices keep their copies and resend them.
                    for commit, _ in batch:
                        self._accepted.pop((commit.device, commit.session, commit.seq), None)
                    self.refused.append(f"storage: {err}")
                    self._lock.notify_all()
                log.error("cannot store %d entries (from %s/%s/%d): %s; no receipt sent", len(batch),
                          batch[0][0].device, batch[0][0].session, batch[0][0].seq, err)
                continue
            now = time.monotonic()
            with self._lock:
                for commit, entry in batch:
                    self._accepted.pop((commit.device, commit.session, commit.seq), None)
                    self._unlinked[(commit.device, commit.session, commit.seq)] = (entry, now)
                    self._follow_ups.append(_FollowUp(commit.device, commit.session, entry, missing_only=False))
                self.stored += len(batch)
                # Receipts for the batch, and for entries stored earlier that it completes the chain of.
                self._receipt_linked(now)
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
