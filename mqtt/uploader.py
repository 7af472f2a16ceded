"""Store-and-forward from the spool to central over MQTT.

The spool on disk is the outbox; paho's in-memory queue is never trusted with evidence. An entry leaves
the pending set only when central's receipt arrives (sent after central stored and verified it), never
on a PUBACK. Entries go in spool order within a bounded window; anything unreceipted after
`resend_after` seconds, or in flight when the connection dropped, is sent again — central stores
duplicates once.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho

from capture.spool import PendingItem, Spool
from evidence.errors import RecorderError
from evidence.keys import VerifyKey
from evidence.supervisor import Beat, Spawn, Supervised, Supervisor
from mqtt import protocol
from mqtt.alert_outbox import AlertOutbox
from mqtt.client import make_client, max_packet_size
from mqtt.errors import ProtocolError
from mqtt.tls import TlsFiles

log = logging.getLogger(__name__)
REFUSAL_LOG_S = 60.0

MAX_UNACKED_BYTES = 8 * 1024 * 1024
"""Bytes of published messages paho may hold before the broker acknowledges them. The window counts
entries awaiting receipts, which cost nothing here once the broker has them; on a slow link this is what
bounds the memory paho's queue takes (a window of 64 two-second segments at 2 Mbit/s would be 32 MB)."""

_HEADER_ROOM = 4096 + 256
"""Bytes kept free in each media message for the frame header, topic and MQTT fixed header."""


class Uploader:
    def __init__(
        self,
        spool: Spool,
        device_id: str,
        host: str,
        port: int,
        prefix: str,
        keepalive: int,
        retry_max_seconds: float,
        status: Callable[[], dict[str, Any]],
        window: int = 64,
        resend_after: float = 15.0,
        status_interval: float = 5.0,
        tls: TlsFiles | None = None,
        live_session: Callable[[], str | None] = lambda: None,
        max_unacked_bytes: int = MAX_UNACKED_BYTES,
        spawn: Spawn | None = None,
        alerts: AlertOutbox | None = None,
        central_key: VerifyKey | None = None,
        on_bookings: Callable[[bytes], None] | None = None,
    ) -> None:
        self._alerts = alerts
        self._on_bookings = on_bookings
        """Given each message on the device's bookings topic (PROTOCOL §14), on paho's network thread: it checks
        the set at once and hands any durable work to a thread of its own."""
        self._central_key = central_key
        """Central's signing key: with it, a receipt or acknowledgement counts only if central signed it."""
        self._spawn = spawn or Supervisor().spawn
        self._spool = spool
        self._live_session = live_session
        self._device = device_id
        self._host, self._port, self._keepalive = host, port, keepalive
        self._prefix = prefix
        self._status = status
        self._window = window
        self._resend_after = resend_after
        self._status_interval = status_interval
        self._client = make_client(device_id, retry_max_seconds, tls)
        self._tls = tls
        self._answered = False
        """The broker answered this connection attempt with a CONNACK (of either kind)."""
        self._client.will_set(self._topic(protocol.STATUS), json.dumps({"device": device_id, "online": False}),
                              qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_connect_fail = self._on_connect_fail
        self._connect_failures = 0
        self._client.on_message = self._on_message
        self._lock = threading.Condition()
        self._connected = False
        self._chunk = protocol.DEFAULT_CHUNK
        self._in_flight: dict[PendingItem, float] = {}
        self._stop = threading.Event()
        self._receipts: list[tuple[PendingItem, protocol.Receipt]] = []
        self._max_unacked = max_unacked_bytes
        self._unacked_lock = threading.Condition()
        self._unacked: dict[int, int] = {}
        """Message id -> payload bytes of what paho holds until the broker acknowledges it."""
        self._acked_early: set[int] = set()
        self._unacked_bytes = 0
        self.peak_unacked_bytes = 0
        """The most paho has held unacknowledged at once: what the bound kept memory to."""
        self._client.on_publish = self._on_publish
        self._threads: list[Supervised] = []
        self._beat: Beat = lambda: None
        self.receipts = 0
        self.refused_by_broker: str | None = None
        """The broker's reason when it last refused what this box published (e.g. "Not authorized": not enrolled,
        or revoked); None once a publication is accepted again."""
        self._refusal_said = -REFUSAL_LOG_S

    def _topic(self, kind: str) -> str:
        return protocol.topic(self._prefix, self._device, kind)

    def start(self) -> None:
        self._client.connect_async(self._host, self._port, keepalive=self._keepalive)
        self._client.loop_start()
        self._threads = [self._spawn("uploader", self._run), self._spawn("uploader-receipts", self._keep_receipts)]

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        with self._unacked_lock:
            self._unacked_lock.notify_all()
        for thread in self._threads:
            thread.join()
        if self._connected:
            self._publish_status(online=False)
        self._client.disconnect()
        self._client.loop_stop()

    @property
    def connected(self) -> bool:
        return self._connected

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._answered = True
        if reason.is_failure:
            log.warning("broker %s:%d refused the connection: %s; retrying with back-off",
                        self._host, self._port, reason)
            return
        limit = max_packet_size(properties)
        if limit - _HEADER_ROOM < protocol.MIN_CHUNK:
            log.error("the broker's maximum packet size (%d bytes) leaves no room for media chunks of at least "
                      "%d bytes: raise max_packet_size in the broker's configuration", limit, protocol.MIN_CHUNK)
        self._chunk = max(protocol.MIN_CHUNK, min(protocol.DEFAULT_CHUNK, limit - _HEADER_ROOM))
        self._connect_failures = 0
        topics = [(self._topic(protocol.RECEIPT), 1), (self._topic(protocol.ALERT_ACK), 1)]
        if self._on_bookings is not None:
            # Retained: the broker hands over the newest set at once, whenever the device (re)connects.
            topics.append((self._topic(protocol.BOOKINGS), 1))
        client.subscribe(topics)
        log.info("connected to broker %s:%d (media chunks of %d bytes)", self._host, self._port, self._chunk)
        # Whatever was in flight may be lost with the old connection, and everything unreceipted is sent again
        # from the spool; so paho's own copies of unacknowledged messages go, rather than go twice.
        dropped = client.drop_out_messages()
        with self._unacked_lock:
            for message in dropped:
                self._unacked_bytes -= self._unacked.pop(message.mid, 0)
            self._unacked_lock.notify_all()
        with self._lock:
            self._connected = True
            self._in_flight.clear()
            self._lock.notify_all()
        self._publish_status(online=True)

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self._connect_failures += 1
        # Say it at once, then now and then: an outage of hours must not flood the log.
        if self._connect_failures == 1 or self._connect_failures % 50 == 0:
            log.warning("cannot reach the broker at %s:%d%s (%d attempts); recording goes on into the spool, "
                        "retrying with back-off", self._host, self._port, self._why_unreachable(),
                        self._connect_failures)

    def _why_unreachable(self) -> str:
        """What the failure most likely is, told apart by trying the port: nothing listening (a wrong address,
        or the broker is down) is not a certificate problem."""
        try:
            with socket.create_connection((self._host, self._port), timeout=1.0):
                pass
        except ConnectionRefusedError:
            return (": connection refused, nothing listens there (check mqtt.host and mqtt.port, and that the broker "
                    "runs)")
        except OSError as err:
            return f": {err.strerror or err} (check mqtt.host and the network)"
        if self._tls is None:
            return ": the broker closed the connection"
        return (f" over TLS: check that the broker's certificate is signed by {self._tls.ca_file} and that the "
                f"broker accepts {self._tls.cert_file}")

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        with self._lock:
            was = self._connected
            self._connected = False
        answered, self._answered = self._answered, False
        if self._stop.is_set():
            return
        if was:
            log.warning("lost the broker (%s); recording goes on into the spool, reconnecting", reason)
        elif not answered:
            # Closed before any CONNACK: with TLS 1.3 this is how a broker refusing our certificate looks,
            # as the client's half of the handshake completes before the broker checks the certificate.
            self._on_connect_fail(client, userdata)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        if message.topic == self._topic(protocol.ALERT_ACK):
            self._on_alert_ack(message)
            return
        if message.topic == self._topic(protocol.BOOKINGS):
            self._bookings(message)
            return
        try:
            receipt = protocol.decode_receipt(bytes(message.payload))
            self._check_signed(receipt)
        except ProtocolError as err:
            log.warning("refused a receipt on %s: %s", message.topic, err)
            return
        except Exception:
            # Whatever a hostile message does, paho's network thread must not die of it (paho re-raises
            # a callback's exception and ends its loop): refused, logged in full.
            log.exception("refused a receipt on %s: unexpected error", message.topic)
            return
        with self._lock:
            self._receipts.append((PendingItem(receipt.session, receipt.seq), receipt))
            self._lock.notify_all()

    def _check_signed(self, message: protocol.SignedByCentral) -> None:
        """Anyone on the broker could write a receipt: only central's signature makes it count (a receipt is
        what would let the device free its copy of the evidence)."""
        if self._central_key is not None and not message.signed_by(self._central_key):
            raise ProtocolError("it is not signed by central's key (device.central_signing_key)"
                                if message.sig is None else "its signature does not verify under central's key "
                                "(device.central_signing_key)")

    def _on_alert_ack(self, message: paho.MQTTMessage) -> None:
        try:
            ack = protocol.decode_alert_ack(bytes(message.payload))
            self._check_signed(ack)
            if ack.device != self._device:
                raise ProtocolError(f"it names device {ack.device!r}")
            if self._alerts is None or not self._alerts.acknowledged(ack.alert):
                log.info("acknowledgement of alert %s, which is not waiting here; ignored", ack.alert)
        except ProtocolError as err:
            log.warning("refused an alert acknowledgement on %s: %s", message.topic, err)
        except Exception:
            log.exception("refused an alert acknowledgement on %s: unexpected error", message.topic)

    def _bookings(self, message: paho.MQTTMessage) -> None:
        if self._on_bookings is None:
            return
        try:
            self._on_bookings(bytes(message.payload))
        except Exception:
            # Whatever a hostile set does, paho's network thread goes on (as for a receipt).
            log.exception("refused a booking set on %s: unexpected error", message.topic)

    def _keep_receipts(self, beat: Beat) -> None:
        """Receipts are kept on their own thread, a burst at a time in one group commit, so neither paho's
        network loop nor the sending waits for the disk."""
        while True:
            beat()
            with self._lock:
                self._lock.wait_for(lambda: self._receipts or self._stop.is_set(), timeout=1.0)
                if not self._receipts:
                    if self._stop.is_set():
                        return
                    continue
                batch, self._receipts = self._receipts, []
            try:
                matched = self._spool.receipts(batch)
            except (RecorderError, OSError) as err:
                # Not kept, so still pending: the entries are resent and receipted again.
                log.warning("cannot keep %d receipts (from %s/%d): %s", len(batch), batch[0][0].session,
                            batch[0][0].seq, err)
                continue
            for (item, _), ok in zip(batch, matched, strict=True):
                if not ok:
                    log.warning("receipt for %s/%d does not match the entry held here; ignored", item.session,
                                item.seq)
            with self._lock:
                for (item, _), ok in zip(batch, matched, strict=True):
                    if ok:
                        self._in_flight.pop(item, None)
                        self.receipts += 1
                self._lock.notify_all()

    def _publish_status(self, online: bool) -> None:
        payload = {"device": self._device, "online": online, **(self._status() if online else {})}
        self._publish(self._topic(protocol.STATUS), json.dumps(payload, ensure_ascii=False).encode(), retain=True,
                      wait=False)

    def _send(self, item: PendingItem) -> None:
        out = self._spool.outgoing(item)
        segment = out.media
        if segment is not None and out.path is not None:
            # The seal's own hash and size: the file was hashed as it was written.
            with out.path.open("rb") as media:
                offset = 0
                while chunk := media.read(self._chunk):
                    piece = protocol.MediaChunk(item.session, segment.file, offset, segment.bytes, segment.sha256,
                                                chunk)
                    self._publish(self._topic(protocol.MEDIA), protocol.encode_media(piece))
                    offset += len(chunk)
        self._publish(self._topic(protocol.ENTRY), out.data)

    def _publish(self, topic: str, payload: bytes, retain: bool = False, wait: bool = True) -> None:
        """Publish at QoS 1, counting what paho holds until the broker acknowledges it; with `wait`, first
        wait until that is few enough bytes (MAX_UNACKED_BYTES; one message at a time always goes). Never
        called under the uploader's lock, and never waiting on paho's own thread (status from on_connect)."""
        size = len(payload)
        self._beat()  # a long backlog on a slow link is work, not a hang
        with self._unacked_lock:
            # In steps, with a beat each: a broker that stops acknowledging (the link died mid-segment) must
            # not make this thread look hung; reconnecting drops paho's copies and frees the room.
            while wait and not self._unacked_lock.wait_for(
                    lambda: not self._unacked_bytes or self._stop.is_set()
                    or self._unacked_bytes + size <= self._max_unacked, timeout=1.0):
                self._beat()
            self._unacked_bytes += size
            self.peak_unacked_bytes = max(self.peak_unacked_bytes, self._unacked_bytes)
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        with self._unacked_lock:
            if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN) or info.mid in self._acked_early:
                # Refused by paho outright (nothing queued), or acknowledged before we got here.
                self._acked_early.discard(info.mid)
                self._unacked_bytes -= size
                self._unacked_lock.notify_all()
            else:
                self._unacked[info.mid] = size

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        if getattr(reason, "is_failure", False):
            # The broker took the message and dropped it: without a receipt it is sent again, but nobody would
            # know why the backlog never drains. Said once a minute, and shown by `recorder status`.
            self.refused_by_broker = str(reason)
            now = time.monotonic()
            if now - self._refusal_said >= REFUSAL_LOG_S:
                self._refusal_said = now
                log.error("the broker refuses what this box publishes (%s): it is not enrolled at central, or it was "
                          "revoked; enroll it with `recorder enroll https://CENTRAL:8443 TOKEN`", reason)
        elif self.refused_by_broker is not None:
            self.refused_by_broker = None
        with self._unacked_lock:
            size = self._unacked.pop(mid, None)
            if size is None:
                self._acked_early.add(mid)
                return
            self._unacked_bytes -= size
            self._unacked_lock.notify_all()

    def _next_batch(self) -> list[PendingItem]:
        now = time.monotonic()
        with self._lock:
            if not self._connected:
                return []
            for item, sent in list(self._in_flight.items()):
                if now - sent > self._resend_after:
                    del self._in_flight[item]
            room = self._window - len(self._in_flight)
            if room <= 0:
                return []
            # The session being recorded goes first, so central lags the room by seconds; any backlog
            # drains behind it with what the link has left (REALTIME).
            batch = self._spool.next_pending(room, self._in_flight, first=self._live_session())
            for item in batch:
                self._in_flight[item] = now
            return batch

    @property
    def unacked_bytes(self) -> int:
        """Bytes of published messages paho holds that the broker has not acknowledged yet."""
        with self._unacked_lock:
            return self._unacked_bytes

    def _run(self, beat: Beat) -> None:
        self._beat = beat
        last_status = 0.0
        while not self._stop.is_set():
            beat()
            batch = self._next_batch()
            for item in batch:
                # An alert goes ahead of the backlog: a batch of segments can take minutes on a slow link.
                self._send_alerts()
                try:
                    self._send(item)
                except (OSError, RecorderError) as err:
                    # A spool file damaged after it was written: named in the log, kept, and tried again at
                    # the resend.
                    log.error("cannot send %s/%d from the spool: %r", item.session, item.seq, err)
            self._send_alerts()
            if self._connected and time.monotonic() - last_status > self._status_interval:
                self._publish_status(online=True)
                last_status = time.monotonic()
            if not batch:
                with self._lock:
                    self._lock.wait(0.5)

    def _send_alerts(self) -> None:
        if self._connected and self._alerts is not None:
            for alert in self._alerts.due():
                self._publish(self._topic(protocol.ALERT), alert.raw, wait=False)

    def wake(self, *_: object) -> None:
        """Ledger listener: a new entry is in the spool (or an alert in the outbox), send it now rather than at
        the next poll."""
        with self._lock:
            self._lock.notify_all()
