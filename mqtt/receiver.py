"""The reference central receiver: stores what devices send, verifies it, and receipts it.

A receipt for an entry goes out only after the entry (and the segment it seals) is durably stored
and verified: the device key is the enrolled one, the signature holds, the entry links to the one
before, the media's SHA-256 and size match. Anything else is refused with a logged reason, and
nothing outside the store is ever written.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
import time
from collections.abc import Callable
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
from mqtt.store import CentralStore
from mqtt.tls import TlsFiles
from mqtt.working_copy import PLAIN, write_working_copy
from provisioning.errors import ProvisioningError
from provisioning.identity import load_public_key_b64, verify_signature

log = logging.getLogger(__name__)

MAX_MESSAGE = protocol.DEFAULT_CHUNK + 64 * 1024
WAIT_SECONDS = 20.0
"""How long an entry may wait for its predecessor or its media before it is dropped here (the device
resends it anyway, 15 s after sending, until it has a receipt)."""
RETRY_SECONDS = 0.005
"""A receiver of a share group cannot hear the others' commits, so it looks again this often (measured:
50 ms made two receivers five times slower than one; 5 ms costs nothing while nothing waits)."""


class Refused(Exception):
    """A message that must not be stored; the text is the logged reason."""


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
        self._waiting: dict[tuple[str, str, int], tuple[bytes, float]] = {}
        """(device, session, seq) -> (entry, when it came) for an entry whose predecessor or media is not
        stored yet. With several receivers sharing the load, that often arrives at another receiver a
        moment later, so waiting entries are retried every RETRY_SECONDS against the shared store."""
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._retry = threading.Thread(target=self._retry_waiting, name="receiver-retry", daemon=True)
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
        self._retry.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._retry.is_alive():
            self._retry.join()
        self._client.disconnect()
        self._client.loop_stop()
        if self.index is not None:
            self.index.close()

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
        self._accept(device, entry, data)

    def _accept(self, device: str, entry: dict[str, Any], data: bytes, since: float | None = None) -> None:
        session, seq = entry["session"], entry["seq"]
        waiting = (data, since if since is not None else time.monotonic())
        existing = self.store.get_entry(device, session, seq)
        if existing is not None:
            if existing != data:
                raise Refused(f"entry {session}/{seq} conflicts with the one already stored")
            self._index(device, session)  # a resend after a crash between commit and index fills the gap
            self._receipt(device, entry)
            if entry["kind"] == "segment":
                self._working_copy(device, session, seq, entry, missing_only=True)
            return
        if seq == 0:
            if entry["prev"] != GENESIS or entry["kind"] != "open":
                raise Refused(f"entry {session}/0 is not a proper 'open' entry")
            if entry["body"].get("device_key") != self.store.device_key(device):
                raise Refused(f"session {session} names a device key other than the enrolled one")
        else:
            before = self.store.get_entry(device, session, seq - 1)
            if before is None:
                self._waiting[(device, session, seq)] = waiting
                return
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
                self._waiting[(device, session, seq)] = waiting
                return
        self.store.commit(device, session, seq, data, media_file)
        self.stored += 1
        self._index(device, session)
        self._receipt(device, entry)
        if media_file is not None:
            self._working_copy(device, session, seq, entry, missing_only=False)
        follower = self._waiting.pop((device, session, seq + 1), None)
        if follower is not None:
            self._accept(device, parse_entry(follower[0]), follower[0], follower[1])

    def _working_copy(self, device: str, session: str, seq: int, entry: dict[str, Any], missing_only: bool) -> None:
        if self.central_key is None:
            return
        session_dir = self.store.session_dir(device, session)
        if missing_only and (session_dir / PLAIN / str(entry["body"].get("file"))).exists():
            return
        try:
            # Made again on a resend when missing: a receiver stopped between commit and copy, or a full disk.
            write_working_copy(session_dir, entry["body"], self.central_key)
        except (CaptureError, OSError) as err:
            # The sealed original is stored and receipted; only the viewing copy is missing.
            log.error("entry %s/%d: no working copy of %s: %s", session, seq, entry["body"].get("file"), err)

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
