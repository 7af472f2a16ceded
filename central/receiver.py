"""The reference central receiver: stores what devices send, judges it by the session rules, and receipts it.

Each entry is parsed once (evidence/entry.py) and judged by the one rule book (evidence/rules.py) that
`recorder verify` uses. An entry whose predecessors are here is judged by every rule before it is stored,
and refused if it breaks one (an entry after `close`, a second `open`, a segment out of order or with a
gap, wrong closing totals, …). An entry that comes before its predecessor (with receivers sharing the
load, the predecessor is usually being stored by another one at this moment) is judged by the rules that
need no predecessor (signature under the enrolled key, form, media) and stored; the rest are applied when
the chain reaches it. A receipt goes out only for an entry that is durably stored and that the rules have
accepted with every entry before it, back to the session's `open` entry (docs/PROTOCOL.md §6.1). So
central never receipts an entry the verifier would reject. Anything else is refused with a logged reason,
and nothing outside the store is ever written.
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from central.bookings import latest_set
from central.errors import NotEnrolled, Refused
from central.fleet import DeviceStatus, parse_status, updated
from central.index import SessionIndex, open_index
from central.store import CentralStore, Commit
from central.working_copy import write_working_copy
from evidence.alert import MalformedAlert, parse_alert
from evidence.booking import MalformedBookings, parse_booking_set
from evidence.entry import Entry, parse_entry
from evidence.errors import RecorderError
from evidence.layout import media_name
from evidence.rules import SessionRules, Violation
from evidence.supervisor import Beat, Supervised, Supervisor
from mqtt import protocol
from mqtt.client import make_client
from mqtt.tls import TlsFiles

log = logging.getLogger(__name__)

MAX_MESSAGE = protocol.DEFAULT_CHUNK + 64 * 1024
WAIT_SECONDS = 20.0
"""How long an entry may wait here for its media, or a stored entry for its chain to be complete, before it
is forgotten (the device resends it anyway, 15 s after sending, until it has a receipt)."""
FOLLOW_UP_PAUSE = 0.25
"""Seconds between follow-up rounds while entries are being stored."""
FRONTIER_SESSIONS = 4096
"""Sessions whose chain state is remembered; an older one is walked again from the store if needed."""
COPY_BACKLOG = 2000
"""Working copies that may wait for a lull in storing (about 470 MB at the default bitrate)."""
RETRY_SECONDS = 0.005
"""A receiver of a share group cannot hear the others' commits, so it looks again this often (measured:
50 ms made two receivers five times slower than one; 5 ms costs nothing while nothing waits)."""
AHEAD_LIMIT = 128
"""How far past the entries judged in order an entry may be stored ahead of its predecessors: twice the device's
window of entries in flight, which is as far as a share group can scatter a session's entries."""
REFUSALS_KEPT = 1000
"""Refusal reasons kept for inspection (the log has them all): hostile traffic must not grow memory."""
STAGING_MAX_AGE = 3600.0
"""Staged chunks untouched this long are removed (forged, or abandoned); a device resends a whole segment."""
SWEEP_SECONDS = 60.0
NOT_ENROLLED_LOG_S = 60.0
"""How often the refusals of one unenrolled or revoked device are logged (with a count in between)."""
STATUS_KEEP_S = 30.0
"""How often a device's status is written to the store while it stays online (or offline)."""
BOOKINGS_POLL_S = 0.25
"""How often the store's bookings are looked at for a changed set to publish (PROTOCOL §14.4)."""
EARLY_ACKS = 256
"""Acknowledgements kept for messages whose publication has not returned yet (paho may call back first)."""


@dataclass(frozen=True)
class _FollowUp:
    """Work after a receipt: the session index and, for a segment, the decrypted working copy."""

    device: str
    session: str
    entry: Entry
    missing_only: bool


@dataclass
class _Chain:
    """What this receiver knows of one session's ledger."""

    stored: SessionRules
    """The rules applied to the stored entries, in order, from `open`: its last entry is the receipt
    frontier (every entry up to it is stored, linked and within the rules)."""
    admitted: SessionRules
    """The same over the entries accepted in order, stored or still queued for the group commit: the
    context the next entry is judged in. Never behind `stored`."""
    broken: set[int] = field(default_factory=set)
    """Stored entries the rules refused when the chain reached them (said once each)."""


class Receiver:
    def __init__(self, store: CentralStore, host: str, port: int, prefix: str, client_id: str,
                 tls: TlsFiles | None = None, share_group: str | None = None,
                 staging_max_age: float = STAGING_MAX_AGE, keepalive: int = 30, retry_max_seconds: float = 30.0,
                 central_key: X25519PrivateKey | None = None) -> None:
        self.store = store
        self._host, self._port, self._prefix = host, port, prefix
        self._client_id = client_id
        self._keepalive = keepalive
        self._client = make_client(client_id, retry_max_seconds, tls)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._subscriptions: set[int] = set()
        self._statuses: dict[str, DeviceStatus] = {}
        self._status_kept: dict[str, float] = {}
        """When each device's status was last written to the store (monotonic)."""
        self._share_group = share_group
        self._staging_max_age = staging_max_age
        self._lock = threading.Condition()
        """Guards everything below. Messages are handled on paho's thread; durable storage, receipts and the
        follow-up work each run on a thread of their own, so the network never waits for the disk."""
        self._waiting: dict[tuple[str, str, int], tuple[Entry, float]] = {}
        """(device, session, seq) -> (entry, when it came) for a segment entry whose media is not completely
        staged yet. With several receivers sharing the load, its chunks often reach another receiver, so
        waiting entries are retried every RETRY_SECONDS against the shared store."""
        self._accepted: dict[tuple[str, str, int], Entry] = {}
        """Entries verified and queued for the next group commit, or being committed: not durable yet, so not
        receipted yet, but their successors may link to them."""
        self._batch: list[Commit] = []
        self._committed: dict[tuple[str, str, int], Entry] = {}
        """Entries this receiver stored whose chain has not reached them yet: the walk takes them from here
        instead of reading and parsing them back."""
        self._unlinked: dict[tuple[str, str, int], tuple[Entry, float]] = {}
        """Entries stored before the chain reached them (their predecessor came later, or to another receiver
        of the group): receipted once the chain back to the session's `open` entry is in the store."""
        self._chains: collections.OrderedDict[tuple[str, str], _Chain] = collections.OrderedDict()
        """(device, session) -> its chain; the most recently used FRONTIER_SESSIONS sessions."""
        self._follow_ups: list[_FollowUp] = []
        self._copies: collections.deque[_FollowUp] = collections.deque()
        self._following = False
        self._stopping = threading.Event()
        self._committed_all = threading.Event()
        self._supervisor = Supervisor()
        """Runs the three threads below: an exception one of them does not handle is logged with its traceback
        and the thread runs again, so no thread of the receiver ends silently."""
        self._threads: list[Supervised] = []
        self.connected = threading.Event()
        self.stored = 0
        self.handled = 0
        """Messages taken off the wire and dealt with (stored, staged, refused or left waiting)."""
        self.receipted = 0
        """Receipts sent."""
        self.refused: collections.deque[str] = collections.deque(maxlen=REFUSALS_KEPT)
        """The latest refusal reasons (all of them are logged)."""
        self.refusals = 0
        self._unenrolled: dict[str, tuple[float, int]] = {}
        self.index: SessionIndex | None = open_index(store, central_key)
        """Finds sessions by their metadata (opened with central's key where sealed); derived from the store,
        never consulted before a receipt."""
        self.central_key = central_key
        """Central's private key: with it a decrypted working copy of each sealed segment is kept."""
        self.sign: protocol.Sign | None = None
        """Set to central's signing key's `sign` to sign every receipt and alert acknowledgement (PROTOCOL §4.3,
        §4.6)."""
        self._client.on_publish = self._on_publish
        self._bookings_again = threading.Event()
        """Set at each (re)connection: every room's newest set is published again (a broker without persistence
        forgets retained messages)."""
        self._bookings_lock = threading.Condition()
        self._bookings_sent: dict[int, tuple[str, int]] = {}
        """mid -> (device, serial) of a set published and not yet acknowledged by the broker."""
        self._early_acks: collections.OrderedDict[int, Any] = collections.OrderedDict()
        self.bookings_published: dict[str, int] = {}
        """Device -> the serial of its newest set the broker took (retained); 0 after clearing a revoked room's."""

    def start(self) -> None:
        self._client.connect_async(self._host, self._port, keepalive=self._keepalive)
        self._client.loop_start()
        self._threads = [self._supervisor.spawn(name, body) for body, name in (
            (self._retry_waiting, "receiver-retry"), (self._commit_batches, "receiver-commit"),
            (self._follow_up, "receiver-follow-up"), (self._publish_bookings, "receiver-bookings"))]

    def stop(self) -> None:
        """Store and receipt what was accepted, disconnect, and finish the follow-up work. An entry that
        arrives meanwhile is not stored here; the device resends it."""
        self._stopping.set()
        self._supervisor.stop()
        retry, commit, follow_up, bookings = self._threads
        with self._lock:
            self._lock.notify_all()
        for thread in (retry, commit, bookings):
            thread.join()
        self._client.disconnect()
        self._client.loop_stop()
        with self._lock:
            self._committed_all.set()
            self._lock.notify_all()
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
        for kind in (protocol.MEDIA, protocol.ENTRY, protocol.ALERT, protocol.STATUS, protocol.SELFTEST):
            topic = protocol.topic(self._prefix, "+", kind)
            # In a share group the broker hands each message to one member (MQTT 5 shared subscription).
            _, mid = client.subscribe(f"$share/{self._share_group}/{topic}" if self._share_group else topic, qos=1)
            if mid is not None:
                self._subscriptions.add(mid)
        self._bookings_again.set()

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        # Ready only once the broker has both subscriptions: a message published before that is not
        # routed to us (the device would resend it, but a caller waiting on `connected` expects it).
        self._subscriptions.discard(mid)
        if not self._subscriptions:
            self.connected.set()

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        # Called by paho with its own lock held: only this receiver's small bookings lock is taken here.
        with self._bookings_lock:
            sent = self._bookings_sent.pop(mid, None)
            if sent is None:
                self._early_acks[mid] = reason
                while len(self._early_acks) > EARLY_ACKS:
                    self._early_acks.popitem(last=False)
                return
            self._bookings_acked(sent, reason)

    def _bookings_acked(self, sent: tuple[str, int], reason: Any) -> None:
        """Called with the bookings lock held."""
        device, serial = sent
        if getattr(reason, "is_failure", False):
            log.error("the broker refuses the bookings central publishes for %s (%s): its rights lack %s; give them "
                      "with `recorder central broker-config` (a new broker) or `recorder central broker-sync`",
                      device, reason, protocol.topic(self._prefix, "+", protocol.BOOKINGS))
            return
        self.bookings_published[device] = serial
        self._bookings_lock.notify_all()

    def wait_bookings(self, device: str, serial: int, timeout: float) -> bool:
        """Whether the broker took (retained) a set of `device`'s with at least `serial` within `timeout`."""
        with self._bookings_lock:
            return self._bookings_lock.wait_for(lambda: self.bookings_published.get(device, -1) >= serial, timeout)

    def _publish_bookings(self, beat: Beat) -> None:
        """Publish each room's newest signed set, retained, when it changes in the store and for every room at each
        connection (PROTOCOL §14.1); a revoked room's retained set is cleared, so its bookings do not stay on the
        broker. Sets are published from this thread only, so an older one never overtakes a newer one."""
        published: dict[str, tuple[tuple[int, int, int], bool]] = {}
        while not self._stopping.wait(BOOKINGS_POLL_S):
            beat()
            if self._bookings_again.is_set():
                self._bookings_again.clear()
                published.clear()
            if not self._client.is_connected():
                continue
            try:
                stamps = self.store.bookings_stamps()
                enrolled = set(self.store.enrolled())
            except (OSError, RecorderError) as err:
                log.error("cannot look for changed bookings in the store: %s; looking again", err)
                continue
            for device, stamp in stamps.items():
                state = (stamp, device in enrolled)
                if published.get(device) != state and self._publish_set(device, state[1]):
                    published[device] = state

    def _publish_set(self, device: str, enrolled: bool) -> bool:
        """Publish the device's newest set (or clear it, for a room no longer enrolled). True once the change is
        dealt with: published, or nothing there may be published (a damaged record is logged, and not looked at
        again until it changes); False to try again at the next look."""
        if enrolled:
            try:
                data = latest_set(self.store, device)
                if data is None:
                    return True
                found = parse_booking_set(data)
            except (RecorderError, MalformedBookings) as err:
                log.error("bookings of %s not published: %s", device, err)
                return True
            if found.device != device:
                log.error("bookings kept for %s are signed for device %s; not published", device, found.device)
                return True
            payload, serial = data, found.serial
        else:
            payload, serial = b"", 0
        info = self._client.publish(protocol.topic(self._prefix, device, protocol.BOOKINGS), payload, qos=1,
                                    retain=True)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            log.warning("bookings of %s not published (%s); trying again", device, paho.error_string(info.rc))
            return False
        with self._bookings_lock:
            reason = self._early_acks.pop(info.mid, None)
            if reason is None:
                self._bookings_sent[info.mid] = (device, serial)
            else:
                self._bookings_acked((device, serial), reason)
        return True

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._guarded(message.topic, lambda: self._dispatch(message.topic, bytes(message.payload)))
        self.handled += 1

    def _dispatch(self, topic: str, payload: bytes) -> None:
        if len(payload) > MAX_MESSAGE:
            raise Refused(f"message of {len(payload)} bytes is over the {MAX_MESSAGE}-byte limit")
        device, kind = protocol.parse_topic(self._prefix, topic)
        with self._lock:
            if kind == protocol.MEDIA:
                self._media(device, payload)
            elif kind == protocol.ENTRY:
                self._entry(device, payload)
            elif kind == protocol.ALERT:
                self._alert(device, payload)
            elif kind == protocol.STATUS:
                self._status(device, payload)
            elif kind == protocol.SELFTEST:
                self._selftest(device, payload)
            else:
                raise Refused(f"receiver does not take {kind!r} messages")

    def _refuse(self, reason: str) -> None:
        self.refused.append(reason)
        self.refusals += 1

    def _guarded(self, where: str, action: Callable[[], None]) -> None:
        try:
            action()
        except OSError as err:
            # Disk full or failing: no receipt goes out, so the device keeps its copy and resends.
            self._refuse(f"storage: {err}")
            log.error("cannot store message on %s: %s; no receipt sent", where, err)
        except NotEnrolled as err:
            # A device nobody enrolled (or revoked) sends every few seconds: said once a minute, with a count.
            self._refuse(str(err))
            now = time.monotonic()
            said, count = self._unenrolled.get(err.device, (-NOT_ENROLLED_LOG_S, 0))
            if now - said >= NOT_ENROLLED_LOG_S:
                more = f" ({count} more refused since)" if count else ""
                log.warning("refused message on %s: %s%s", where, err, more)
                self._unenrolled[err.device] = (now, 0)
            else:
                self._unenrolled[err.device] = (said, count + 1)
        except RecorderError as err:  # Refused, a Violation of the rules, a malformed entry or message
            self._refuse(str(err))
            log.warning("refused message on %s: %s", where, err)
        except Exception as err:
            # The last line of defence: one message we did not foresee must not stop the receiver
            # (paho would re-raise it and end its network loop). It is refused and logged in full.
            self._refuse(f"unexpected: {err!r}")
            log.exception("refused message on %s: unexpected error", where)

    def _retry_waiting(self, beat: Beat) -> None:
        swept = time.monotonic()
        while not self._stopping.wait(RETRY_SECONDS):
            beat()
            now = time.monotonic()
            if now - swept > min(SWEEP_SECONDS, self._staging_max_age):
                swept = now
                self._guarded("staging", self._sweep)
            with self._lock:
                self._guarded("receipts", functools.partial(self._receipt_linked, now))
                if not self._waiting:
                    continue
                waiting, self._waiting = self._waiting, {}
            for (device, session, seq), (entry, since) in waiting.items():
                if now - since > WAIT_SECONDS:
                    log.info("entry %s/%d still incomplete after %.0f s; left to the device's resend", session, seq,
                             now - since)
                    continue
                self._guarded(f"{device}/{session}/{seq}", functools.partial(self._retry_one, device, entry, since))

    def _sweep(self) -> None:
        removed = self.store.sweep_staging(self._staging_max_age)
        if removed:
            log.info("removed %d staged chunk file(s) untouched for %.0f s", removed, self._staging_max_age)

    def _retry_one(self, device: str, entry: Entry, since: float) -> None:
        with self._lock:
            self._accept(device, entry, since)

    def _enrolled_key(self, device: str) -> str:
        """The key `device` signs with now, or the refusal of everything it sends (not enrolled, or revoked)."""
        key = self.store.device_key(device)
        if key is not None:
            return key
        revoked = self.store.revocation(device)
        if revoked is not None:
            raise NotEnrolled(device, f"device {device} was revoked ({revoked.get('time')}, by {revoked.get('by')}: "
                                      f"{revoked.get('reason')}); nothing it sends is accepted")
        raise NotEnrolled(device, f"device {device} is not enrolled: enroll it (recorder central token, then "
                                  "recorder enroll on the device)")

    def _media(self, device: str, payload: bytes) -> None:
        chunk = protocol.decode_media(payload)
        self._enrolled_key(device)
        self.store.stage_chunk(device, chunk)

    def _entry(self, device: str, data: bytes) -> None:
        entry = parse_entry(data)
        if entry.device != device:
            raise Refused(f"entry names device {entry.device} but came on {device}'s topic")
        SessionRules.check_alone(entry, self._enrolled_key(device))
        self._accept(device, entry, time.monotonic())

    def _chain(self, device: str, session: str) -> _Chain:
        """The session's chain, walked on through the store as far as it is stored."""
        key = (device, session)
        chain = self._chains.pop(key, None)
        if chain is None:
            rules = SessionRules(self.store.device_key(device))
            chain = _Chain(rules, rules.copy())
        self._chains[key] = chain
        while len(self._chains) > FRONTIER_SESSIONS:
            self._chains.popitem(last=False)
        self._advance(device, session, chain)
        return chain

    def _advance(self, device: str, session: str, chain: _Chain) -> None:
        """Apply the rules to every stored entry the chain has not reached yet, in order, as far as they are
        stored and keep the rules; a stored entry that breaks them is never receipted."""
        rules = chain.stored
        while rules.next_seq not in chain.broken:
            seq = rules.next_seq
            entry = self._committed.pop((device, session, seq), None)
            if entry is None:
                data = self.store.get_entry(device, session, seq)
                if data is None:
                    break
                entry = parse_entry(data)
            try:
                # Every stored entry passed `check_alone` (its signature under the enrolled key) first.
                rules.admit(entry, signature_checked=True)
            except Violation as violation:
                # Stored before its predecessor, and then it did not fit: never receipted, and `recorder
                # verify` names the same problem. Only the device's own key can sign such an entry.
                chain.broken.add(seq)
                log.error("stored entry %s/%d breaks the session's rules and gets no receipt: %s", session, seq,
                          violation)
                break
        if chain.admitted.next_seq < rules.next_seq:
            chain.admitted = rules.copy()

    def _accept(self, device: str, entry: Entry, since: float) -> None:
        """Queue the entry for the next group commit if it may be stored. Called with the lock held."""
        session, seq = entry.session, entry.seq
        key = (device, session, seq)
        accepted = self._accepted.get(key)
        if accepted is not None:
            if accepted.raw != entry.raw:
                raise Refused(f"entry {session}/{seq} conflicts with the one already stored")
            return  # its receipt goes out once its group commit is done
        existing = self.store.get_entry(device, session, seq)
        if existing is not None:
            if existing != entry.raw:
                raise Refused(f"entry {session}/{seq} conflicts with the one already stored")
            if self._chain(device, session).stored.next_seq > seq:
                self._receipt(device, entry)
            else:
                self._unlinked[key] = (entry, time.monotonic())
            # A resend after a crash between commit and follow-up fills the index and working copy gaps.
            self._follow_ups.append(_FollowUp(device, session, entry, missing_only=True))
            self._lock.notify_all()
            return
        chain = self._chain(device, session)
        in_order = seq == chain.admitted.next_seq
        if in_order:
            chain.admitted.check(entry, signature_checked=True)
        else:
            # Its predecessor is not here yet: what needs no predecessor was judged (check_alone); a predecessor
            # that is here must link. The rest is judged when the chain reaches it, but nothing is stored after
            # a close this receiver knows of, nor further ahead than a share group scatters a session.
            closing = chain.admitted.closing or chain.stored.closing
            if closing is not None:
                raise Refused(f"entry {session}/{seq}: entry after the closing entry {closing.entries - 1}")
            if seq - chain.admitted.next_seq > AHEAD_LIMIT:
                raise Refused(f"entry {session}/{seq} is more than {AHEAD_LIMIT} entries ahead of entry "
                              f"{chain.admitted.next_seq}, the next this receiver can judge; the device's resend "
                              "brings it again in turn")
            before = self._accepted.get((device, session, seq - 1))
            before_hash = before.hash if before is not None else None
            if before_hash is None and (data := self.store.get_entry(device, session, seq - 1)) is not None:
                before_hash = parse_entry(data).hash
            if before_hash is not None and before_hash != entry.prev:
                raise Refused(f"entry {session}/{seq} does not link to the stored entry {seq - 1}")
        segment = entry.segment
        if segment is not None and not self.store.staged_matches(device, session, segment.file, segment.sha256,
                                                                 segment.bytes):
            # Media not (yet) complete or not matching: no receipt yet. It may still be arriving (here or
            # at another receiver of the group); after WAIT_SECONDS the device's resend takes over.
            self._waiting[key] = (entry, since)
            return
        if in_order:
            chain.admitted.apply(entry)
        self._accepted[key] = entry
        self._batch.append(Commit(device, session, seq, entry.raw, media_name(segment.index) if segment else None))
        self._lock.notify_all()

    def _receipt_linked(self, now: float) -> None:
        """Receipt each stored entry whose chain is now complete; forget those that waited WAIT_SECONDS (the
        device resends them, and a resend of a stored entry is looked at again). Called with the lock held."""
        frontiers: dict[tuple[str, str], int] = {}
        for key, (entry, since) in list(self._unlinked.items()):
            device, session, seq = key
            if (device, session) not in frontiers:
                try:
                    frontiers[(device, session)] = self._chain(device, session).stored.next_seq - 1
                except (OSError, RecorderError) as err:
                    # An unreadable stored entry (or key): nothing after it is receipted, and the thread goes on.
                    log.error("cannot follow the chain of %s/%s in the store: %s", device, session, err)
                    frontiers[(device, session)] = -1
            if frontiers[(device, session)] >= seq:
                del self._unlinked[key]
                self._receipt(device, entry)
            elif now - since > WAIT_SECONDS:
                del self._unlinked[key]
                self._committed.pop(key, None)
                log.info("entry %s/%d stored, but its chain still incomplete after %.0f s; left to the device's "
                         "resend", session, seq, now - since)

    def _commit_batches(self, beat: Beat) -> None:
        """Group commit: everything accepted since the last commit is stored in one go, then receipted.
        Under load the batches grow, so the flushes per entry fall as the rate rises."""
        while True:
            beat()
            with self._lock:
                if not self._lock.wait_for(lambda: self._batch or self._stopping.is_set(), timeout=1.0):
                    continue
                if not self._batch:
                    return
                batch, self._batch = self._batch, []
            try:
                self.store.commit(batch, self._client_id)
            except Exception as err:
                # Disk full or failing (OSError, StorageFault), or something unforeseen: either way nothing
                # of the batch is receipted, and the thread goes on storing.
                with self._lock:
                    # Nothing of the batch is receipted, so the devices keep their copies and resend them; what
                    # was admitted in order is judged again from what is stored.
                    for commit in batch:
                        self._accepted.pop((commit.device, commit.session, commit.seq), None)
                        chain = self._chains.get((commit.device, commit.session))
                        if chain is not None:
                            chain.admitted = chain.stored.copy()
                    self._refuse(f"storage: {err}")
                    self._lock.notify_all()
                log.error("cannot store %d entries (from %s/%s/%d): %s; no receipt sent", len(batch),
                          batch[0].device, batch[0].session, batch[0].seq, err)
                continue
            now = time.monotonic()
            with self._lock:
                for commit in batch:
                    key = (commit.device, commit.session, commit.seq)
                    entry = self._accepted.pop(key)
                    self._committed[key] = entry
                    self._unlinked[key] = (entry, now)
                    self._follow_ups.append(_FollowUp(commit.device, commit.session, entry, missing_only=False))
                self.stored += len(batch)
                self._lock.notify_all()
                # Receipts for the batch, and for entries stored earlier that it completes the chain of.
                self._receipt_linked(now)

    def _follow_up(self, beat: Beat) -> None:
        """After the receipt, off the receipt path: index each session once per round, and keep the working
        copies."""
        while True:
            beat()
            with self._lock:
                self._following = False
                self._lock.notify_all()
                if not self._lock.wait_for(
                        lambda: self._follow_ups or self._may_copy() or self._committed_all.is_set(), timeout=1.0):
                    continue
                if not self._follow_ups and not self._may_copy():
                    return
                work, self._follow_ups = self._follow_ups, []
                copy = self._copies.popleft() if self._may_copy() else None
                self._following = True
            sessions: dict[tuple[str, str], dict[int, Entry]] = {}
            for w in work:
                sessions.setdefault((w.device, w.session), {})[w.entry.seq] = w.entry
            for (device, session), known in sessions.items():
                self._index(device, session, known)
            if copy is not None:
                self._working_copy(copy)
            with self._lock:
                self._copies.extend(w for w in work if w.entry.segment is not None and self.central_key is not None)
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
        assert self.central_key is not None and work.entry.segment is not None
        segment = work.entry.segment
        if work.missing_only and self.store.has_working_copy(work.device, work.session, segment.file):
            return
        try:
            # Made again on a resend when missing: a receiver stopped between commit and copy, or a full disk.
            write_working_copy(self.store, work.device, work.session, segment, self.central_key)
        except Exception as err:
            # The sealed original is stored and receipted; only the viewing copy is missing. Whatever the
            # error, the follow-up thread goes on.
            log.error("entry %s/%d: no working copy of %s: %s", work.session, work.entry.seq, segment.file, err)

    def _index(self, device: str, session: str, known: dict[int, Entry]) -> None:
        if self.index is None:
            return
        try:
            self.index.record(device, session, known)
        except Exception:
            # Whatever goes wrong in the index must not cost a receipt: the entry is stored, and the index
            # catches up from the store on the session's next entry or on `recorder central reindex`.
            log.exception("session index: could not record %s/%s", device, session)

    def _selftest(self, device: str, payload: bytes) -> None:
        """The latest self-test of each device is kept (fleet health) and acknowledged, which is the device's
        proof of a round trip to central. Only a report the device signed, on its own topic, counts."""
        report = protocol.decode_selftest(payload)
        if report.device != device:
            raise Refused(f"self-test report on {device}'s topic names device {report.device!r}")
        if not report.signed_by(self._enrolled_key(device)):
            raise Refused(f"self-test report {report.id} from {device} is not signed by its enrolled key")
        self.store.record_selftest(device, report.raw)
        log.log(logging.INFO if report.passed else logging.WARNING, "self-test of %s: %s", device,
                "passed" if report.passed else "FAILED " + ", ".join(c.name for c in report.checks if not c.ok))
        self._client.publish(protocol.topic(self._prefix, device, protocol.ALERT_ACK),
                             protocol.encode_alert_ack(report.id, device, self.sign), qos=1)

    def _alert(self, device: str, payload: bytes) -> None:
        """Kept and acknowledged only when signed by the device it names, as sent on that device's topic."""
        try:
            alert = parse_alert(payload)
        except MalformedAlert as err:
            raise Refused(f"alert from {device}: {err}") from err
        if alert.device != device:
            raise Refused(f"alert on {device}'s topic names device {alert.device!r}")
        if not alert.signed_by(self._enrolled_key(device)):
            raise Refused(f"alert {alert.id} from {device} is not signed by its enrolled key")
        if self.store.store_alert(alert):
            log.error("ALERT from %s: %s", device, alert.summary())
        self._client.publish(protocol.topic(self._prefix, device, protocol.ALERT_ACK),
                             protocol.encode_alert_ack(alert.id, device, self.sign), qos=1)

    def _status(self, device: str, payload: bytes) -> None:
        """Fleet health (central/fleet.py): kept when the device goes online or offline, and otherwise at most
        every STATUS_KEEP_S, so forty devices reporting every few seconds cost the disk little."""
        online, fields = parse_status(device, payload)
        now = time.monotonic()
        previous = self._statuses.get(device)
        if previous is None:
            previous = self.store.device_status(device)
        status = updated(previous, device, online, fields, dt.datetime.now(dt.UTC))
        self._statuses[device] = status
        if previous is None or previous.online != online or now - self._status_kept.get(device, -1e9) >= STATUS_KEEP_S:
            self.store.record_status(status)
            self._status_kept[device] = now

    def _receipt(self, device: str, entry: Entry) -> None:
        payload = protocol.encode_receipt(entry.session, entry.seq, entry.hash,
                                          dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                                          self._client_id, self.sign)
        self._client.publish(protocol.topic(self._prefix, device, protocol.RECEIPT), payload, qos=1)
        self.receipted += 1
