"""Mutual TLS and the broker ACL, against a real Mosquitto running the configuration we ship.

Mosquitto reports some refusals and not others, so each test observes what the broker says where it says
something and, where it stays silent, uses a later message that must arrive as the deadline: Mosquitto
delivers one publisher's messages in order, so once the later one is in, an earlier one that was allowed
would be in too.

  * A client certificate the broker does not accept: with TLS 1.3 the client's half of the handshake is
    done before the broker checks the certificate, so paho sees a disconnect before any CONNACK.
  * PUBLISH to a topic the client may not write: MQTT 5 PUBACK "Not authorized" (0x87).
  * SUBSCRIBE to a filter the client may not subscribe to: SUBACK "Not authorized" (the dynamic-security
    plugin checks subscriptions, `$share/...` included; Mosquitto's ACL file would have granted them).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives import serialization
from paho.mqtt.enums import CallbackAPIVersion

from capture.spool import Spool
from central import config as central_config
from central.build import build_receiver
from evidence.errors import ConfigError
from evidence.verify import verify_session
from firmware_py import config as config_mod
from firmware_py import rig as rig_mod
from firmware_py.cli import main
from firmware_py.demo import run_demo
from mqtt.broker import LocalBroker, free_port
from mqtt.broker_admin import BrokerAdmin
from mqtt.broker_config import render_dynsec
from mqtt.client import make_client
from mqtt.errors import MqttError
from mqtt.tls import TlsFiles
from mqtt.uploader import Uploader
from provisioning.ca import CertificateAuthority, Issued
from provisioning.errors import ProvisioningError
from tests.conftest import make_rig, wait_until

PREFIX = "recorders"
A, B = "SIM-0001", "SIM-0002"  # A is conftest's default device id, so the rig below is device A
RECEIVER = "receiver-1"  # the configuration's default receiver.client_id
WAIT = 3.0


@dataclass
class Pki:
    ca: CertificateAuthority
    broker: Issued
    a: Issued
    b: Issued
    receiver: Issued
    stranger: Issued
    """A certificate for device A's id, issued by another CA."""
    others: tuple[Issued, ...]
    """Two more enrolled devices, to try what three devices at once can do."""

    def files(self, issued: Issued) -> TlsFiles:
        return TlsFiles(self.ca.ca_file, issued.cert, issued.key)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca, _ = CertificateAuthority.load_or_create(tmp_path / "certs")
    other, _ = CertificateAuthority.load_or_create(tmp_path / "other-ca")
    ca.issue_admin()
    return Pki(ca, ca.issue_broker(), ca.issue_device(A), ca.issue_device(B), ca.issue_receiver(RECEIVER),
               other.issue_device(A), (ca.issue_device("SIM-0003"), ca.issue_device("SIM-0004")))


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki) -> Iterator[LocalBroker]:
    with rig_mod.pki_broker(tmp_path / "broker", pki.ca, prefix=PREFIX) as b:
        yield b


def topic(device: str, kind: str) -> str:
    return f"{PREFIX}/{device}/{kind}"


class Probe:
    """A bare MQTT 5 client that records what the broker does with it."""

    def __init__(self, port: int, client_id: str, client: paho.Client | None = None) -> None:
        self.client = client or paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        self.connected = threading.Event()
        self.refused = threading.Event()
        self.disconnects = 0
        self.connects = 0
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._acks: dict[int, str] = {}
        self._acked = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = lambda client, userdata: self.refused.set()
        self.client.on_message = lambda client, userdata, m: self.messages.put((m.topic, bytes(m.payload)))
        self.client.on_publish = self._on_ack
        self.client.on_subscribe = lambda client, userdata, mid, codes, props: self._on_ack(
            client, userdata, mid, codes[0], props)
        self.client.reconnect_delay_set(1, 1)
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        (self.refused if reason.is_failure else self.connected).set()
        self.connects += 0 if reason.is_failure else 1

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.disconnects += 1
        if not self.connected.is_set():
            self.refused.set()

    def _on_ack(self, client: paho.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        with self._acked:
            self._acks[mid] = str(reason)
            self._acked.notify_all()

    def ack(self, mid: int | None) -> str:
        assert mid is not None
        with self._acked:
            assert self._acked.wait_for(lambda: mid in self._acks, WAIT), f"no acknowledgement for message {mid}"
            return self._acks[mid]

    def publish(self, name: str, payload: bytes, retain: bool = False) -> str:
        """Publish at QoS 1 and return the PUBACK's reason."""
        return self.ack(self.client.publish(name, payload, qos=1, retain=retain).mid)

    def subscribe(self, name: str) -> str:
        return self.ack(self.client.subscribe(name, qos=1)[1])

    def wait_for(self, name: str, payload: bytes) -> list[tuple[str, bytes]]:
        """Everything received up to and including (name, payload), which must arrive within WAIT."""
        seen: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + WAIT
        while (name, payload) not in seen:
            try:
                seen.append(self.messages.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"{name} {payload!r} did not arrive within {WAIT} s; got {seen}") from None
        return seen

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def probe(port: int, files: TlsFiles, client_id: str) -> Probe:
    p = Probe(port, client_id, make_client(client_id, 1, files))
    assert p.connected.wait(WAIT), f"{client_id} could not connect over mutual TLS"
    return p


@pytest.fixture
def clients(tls_broker: LocalBroker, pki: Pki) -> Iterator[tuple[Probe, Probe, Probe]]:
    """Device A, device B and the receiver, each connected with its own certificate."""
    made = [probe(tls_broker.port, pki.files(issued), issued.name) for issued in (pki.a, pki.b, pki.receiver)]
    yield made[0], made[1], made[2]
    for p in made:
        p.close()


def assert_refused(p: Probe) -> None:
    try:
        assert p.refused.wait(WAIT), "the broker neither accepted nor refused the client"
        assert not p.connected.is_set(), "the broker accepted the client"
    finally:
        p.close()


def broker_log_says(broker: LocalBroker, text: str) -> bool:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if text in (broker.workdir / "mosquitto.log").read_text(errors="replace"):
            return True
        time.sleep(0.05)
    return False


def test_client_without_certificate_cannot_connect__NO_LEAK(tls_broker: LocalBroker, pki: Pki) -> None:
    no_cert = paho.Client(CallbackAPIVersion.VERSION2, client_id=A, protocol=paho.MQTTv5)
    no_cert.tls_set(ca_certs=str(pki.ca.ca_file), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    assert_refused(Probe(tls_broker.port, A, no_cert))
    assert broker_log_says(tls_broker, "peer did not return a certificate")
    assert_refused(Probe(tls_broker.port, A))  # plain TCP to the TLS listener
    probe(tls_broker.port, pki.files(pki.a), A).close()  # the same broker takes a client with a certificate


def test_client_with_certificate_from_another_ca_cannot_connect__NO_LEAK(tls_broker: LocalBroker, pki: Pki) -> None:
    stranger = make_client(A, 1, TlsFiles(pki.ca.ca_file, pki.stranger.cert, pki.stranger.key))
    assert_refused(Probe(tls_broker.port, A, stranger))  # same CN as device A, wrong issuer
    assert broker_log_says(tls_broker, "certificate verify failed")


def test_broker_certificate_is_no_client_identity__NO_LEAK(tls_broker: LocalBroker, pki: Pki) -> None:
    # Server and client certificates differ in extended key usage, so the broker's key (which sits on a
    # server) cannot log in as anyone.
    assert_refused(Probe(tls_broker.port, "broker", make_client("broker", 1, pki.files(pki.broker))))


def test_device_cannot_publish_on_another_devices_topics__NO_LEAK(clients: tuple[Probe, Probe, Probe]) -> None:
    a, b, receiver = clients
    for kind in ("entry", "media", "status"):
        assert receiver.subscribe(topic("+", kind)) == "Granted QoS 1"
    assert b.subscribe(topic(B, "receipt")) == "Granted QoS 1"
    for kind in ("entry", "media", "status", "receipt"):
        assert a.publish(topic(B, kind), b"forged by A") == "Not authorized"
    assert a.publish(topic(A, "entry"), b"A's own") == "Success"
    assert receiver.wait_for(topic(A, "entry"), b"A's own") == [(topic(A, "entry"), b"A's own")]
    assert b.messages.empty()


def test_device_cannot_take_over_another_devices_connection__NO_LEAK(tls_broker: LocalBroker, pki: Pki) -> None:
    # MQTT lets a new connection with a client id in use push the old one off; the broker replaces the
    # client id with the certificate's name, so A connecting as "SIM-0002" is A and leaves B alone.
    b = probe(tls_broker.port, pki.files(pki.b), B)
    impostor = probe(tls_broker.port, pki.files(pki.a), B)
    try:
        assert impostor.publish(topic(B, "entry"), b"forged") == "Not authorized"
        assert b.publish(topic(B, "entry"), b"still here") == "No matching subscribers"
        assert b.disconnects == 0
    finally:
        impostor.close()
        b.close()


@pytest.mark.parametrize("kind", ["receipt", "alert_ack"])
def test_only_receivers_can_write_receipts__NO_LEAK(clients: tuple[Probe, Probe, Probe], kind: str) -> None:
    # Receipts are what lets a device consider evidence delivered, and an alert's acknowledgement what lets
    # it stop repeating the alert, so nobody else may write one, not even a device on its own topic.
    a, b, receiver = clients
    assert a.subscribe(topic(A, kind)) == "Granted QoS 1"
    assert b.subscribe(topic(B, kind)) == "Granted QoS 1"
    assert a.publish(topic(A, kind), b"self-made") == "Not authorized"
    assert a.publish(topic(B, kind), b"forged") == "Not authorized"
    assert receiver.publish(topic(B, kind), b"central's") == "Success"
    assert b.wait_for(topic(B, kind), b"central's") == [(topic(B, kind), b"central's")]
    assert receiver.publish(topic(A, kind), b"central's") == "Success"
    assert a.wait_for(topic(A, kind), b"central's") == [(topic(A, kind), b"central's")]


def test_device_cannot_read_another_devices_receipts_or_uploads__NO_LEAK(
        clients: tuple[Probe, Probe, Probe]) -> None:
    a, b, receiver = clients
    # Nobody has subscribed yet (MQTT 5 says so in the PUBACK); retained, it is offered to later subscribers.
    assert b.publish(topic(B, "status"), b"B retained", retain=True) == "No matching subscribers"
    for name in (topic(B, "receipt"), topic("+", "receipt"), f"{PREFIX}/#", "#", topic(B, "status")):
        assert a.subscribe(name) == "Not authorized"
    assert a.subscribe(topic(A, "receipt")) == "Granted QoS 1"
    # Nobody may read these: their subscriptions were refused.
    assert b.publish(topic(B, "entry"), b"B's entry") == "No matching subscribers"
    assert b.publish(topic(B, "media"), b"B's media") == "No matching subscribers"
    assert receiver.publish(topic(B, "receipt"), b"for B") == "No matching subscribers"
    assert receiver.publish(topic(A, "receipt"), b"for A") == "Success"
    # A's own receipts come through, and nothing of B's. The broker delivers to a client in order: once a last
    # message (sent after all of those) is in, everything that was coming to A has come.
    assert receiver.publish(topic(A, "receipt"), b"last") == "Success"
    received = a.wait_for(topic(A, "receipt"), b"last")
    while not a.messages.empty():
        received.append(a.messages.get())
    assert set(received) - {(topic(A, "receipt"), b"last")} == {(topic(A, "receipt"), b"for A")}


def test_receiver_reads_entries_and_writes_receipts_but_forges_nothing__NO_LEAK(
        clients: tuple[Probe, Probe, Probe]) -> None:
    a, b, receiver = clients
    for kind in ("entry", "media", "alert", "status"):
        assert receiver.subscribe(topic("+", kind)) == "Granted QoS 1"
    assert a.subscribe(topic(A, "receipt")) == "Granted QoS 1"
    for device, client in ((A, a), (B, b)):
        for kind in ("media", "entry", "alert", "status"):
            assert client.publish(topic(device, kind), device.encode()) == "Success"
    got = receiver.wait_for(topic(B, "status"), B.encode())
    assert {(topic(d, k), d.encode()) for d in (A, B) for k in ("media", "entry", "alert", "status")} == set(got)
    assert receiver.publish(topic(A, "entry"), b"forged by central") == "Not authorized"
    assert receiver.publish(topic(A, "receipt"), b"receipt") == "Success"
    assert a.wait_for(topic(A, "receipt"), b"receipt") == [(topic(A, "receipt"), b"receipt")]


def test_a_device_reads_only_its_own_bookings_and_only_receivers_write_them__ROOM(
        clients: tuple[Probe, Probe, Probe]) -> None:
    # The bookings name cases and parties (PROTOCOL §14): another device must not read them, and nobody but
    # central may put a set on a device's topic (a forged one would fail its signature anyway).
    a, b, receiver = clients
    assert a.subscribe(topic(A, "bookings")) == "Granted QoS 1"
    for name in (topic(B, "bookings"), topic("+", "bookings"), f"$share/x/{topic(B, 'bookings')}"):
        assert a.subscribe(name) == "Not authorized", name
    for name in (topic(A, "bookings"), topic(B, "bookings")):
        assert a.publish(name, b"forged", retain=True) == "Not authorized", name
    assert receiver.subscribe(topic("+", "bookings")) == "Not authorized"  # it writes them; it has no need to read
    assert receiver.publish(topic(B, "bookings"), b"B's set", retain=True) == "No matching subscribers"
    assert receiver.publish(topic(A, "bookings"), b"A's set", retain=True) == "Success"
    received = a.wait_for(topic(A, "bookings"), b"A's set")
    assert received == [(topic(A, "bookings"), b"A's set")]
    # Retained: B, subscribing afterwards, is handed its own set, and A nothing more.
    assert b.subscribe(topic(B, "bookings")) == "Granted QoS 1"
    assert b.wait_for(topic(B, "bookings"), b"B's set") == [(topic(B, "bookings"), b"B's set")]
    assert receiver.publish(topic(A, "bookings"), b"A's second set", retain=True) == "Success"
    assert a.wait_for(topic(A, "bookings"), b"A's second set") == [(topic(A, "bookings"), b"A's second set")]


def test_a_broker_set_up_before_bookings_gets_their_rights_at_the_next_sync__ROOM(tmp_path: Path, pki: Pki) -> None:
    # Roles made by an older central lack the bookings: `createRole` leaves an existing role as it is, so the
    # sync adds the rights each role is missing.
    old = json.loads(render_dynsec(PREFIX, [RECEIVER], [A, B], pki.ca.admins()))
    for role in old["roles"]:
        role["acls"] = [acl for acl in role["acls"] if not acl["topic"].endswith("/bookings")]
    (tmp_path / "broker").mkdir()
    (tmp_path / "broker" / "dynamic-security.json").write_text(json.dumps(old))
    admin = pki.ca.leaf_paths("admin", pki.ca.admins()[0])
    with rig_mod.pki_broker(tmp_path / "broker", pki.ca, prefix=PREFIX) as broker:
        a = probe(broker.port, pki.files(pki.a), A)
        receiver = probe(broker.port, pki.files(pki.receiver), RECEIVER)
        try:
            assert a.subscribe(topic(A, "bookings")) == "Not authorized"
            assert receiver.publish(topic(A, "bookings"), b"set", retain=True) == "Not authorized"
            with BrokerAdmin("127.0.0.1", broker.port, TlsFiles(pki.ca.ca_file, admin.cert, admin.key),
                             PREFIX) as rights:
                synced = rights.sync([A, B])
                assert (synced.added, synced.removed) == ([], [])
                # The plugin disconnects the clients whose rights changed; they come back with the new ones.
                assert wait_until(lambda: (a.disconnects, a.connects) == (1, 2), WAIT)
                assert wait_until(lambda: (receiver.disconnects, receiver.connects) == (1, 2), WAIT)
                # Rights already there are no change: no error, and nobody is disconnected again.
                rights.sync([A, B])
                rights.add_device(A)
            assert a.subscribe(topic(A, "bookings")) == "Granted QoS 1"
            assert (a.disconnects, receiver.disconnects) == (1, 1)
            assert a.subscribe(topic(B, "bookings")) == "Not authorized"
            assert receiver.publish(topic(A, "bookings"), b"set", retain=True) == "Success"
            assert a.wait_for(topic(A, "bookings"), b"set") == [(topic(A, "bookings"), b"set")]
        finally:
            a.close()
            receiver.close()


def test_receivers_share_a_group_that_no_device_may_join__NO_LEAK(clients: tuple[Probe, Probe, Probe]) -> None:
    a, b, receiver = clients
    shared = f"$share/central/{topic('+', 'entry')}"
    assert receiver.subscribe(shared) == "Granted QoS 1"
    for intruder in (a, b):
        for name in (shared, f"$share/central/{PREFIX}/#", f"$share/central/{topic(A, 'entry')}", "$share/x/#",
                     "$CONTROL/dynamic-security/v1/response"):
            assert intruder.subscribe(name) == "Not authorized", name
    assert a.publish(topic(A, "entry"), b"shared") == "Success"
    assert receiver.wait_for(topic(A, "entry"), b"shared") == [(topic(A, "entry"), b"shared")]
    assert a.publish("$CONTROL/dynamic-security/v1", b'{"commands": []}') == "Not authorized"


def test_device_uploads_end_to_end_over_mutual_tls_while_three_devices_try_to_join_the_receivers__NO_LEAK(
        tmp_path: Path, tls_broker: LocalBroker, pki: Pki) -> None:
    device_tls = {"ca_file": str(pki.ca.ca_file), "cert_file": str(pki.a.cert), "key_file": str(pki.a.key)}
    rig = make_rig(tmp_path, tls_broker.port, with_receiver=False, mqtt={"tls": device_tls},
                   central={"receiver": {"share_group": "central"}})
    # The receiver runs from central's own configuration, with its own certificate.
    receiver_cfg = central_config.replace(rig.central, mqtt=dataclasses.replace(rig.central.mqtt,
                                                                                tls=pki.files(pki.receiver)))
    receiver = build_receiver(receiver_cfg, rig.store)
    # Enrolled devices posing as receivers: with Mosquitto's ACL file each was granted a place in the share
    # group, and every message the broker gave it was dropped (one intruder: 15.6 s to drain a session that
    # takes 0.6 s; two: 11 of 32 entries after 360 s). Now each is refused, so they take nothing.
    intruders = [probe(tls_broker.port, pki.files(issued), issued.name) for issued in (pki.b, *pki.others)]
    try:
        for intruder in intruders:
            for kind in ("entry", "media"):
                assert intruder.subscribe(f"$share/central/{topic('+', kind)}") == "Not authorized"
        receiver.start()
        assert receiver.connected.wait(10), "the receiver could not connect over mutual TLS"
        session = rig.record(1.0)
        assert rig.service.spool.wait_drained(30), "central did not receipt the session over mutual TLS"
        assert not receiver.refused
        report = verify_session(rig.central_dir(session), trusted_key_b64=rig.service.identity.public_key_b64)
        assert report.ok, report.findings
        assert all(intruder.messages.empty() for intruder in intruders)
    finally:
        for intruder in intruders:
            intruder.close()
        receiver.stop()
        rig.close()


def test_demo_runs_over_mutual_tls__NO_LEAK(tmp_path: Path) -> None:
    result = run_demo(1.0, tmp_path, device=rig_mod.fast(), tls=True)
    assert result.report.ok, result.report.findings
    conf = (tmp_path / "broker" / "mosquitto.conf").read_text()
    assert "require_certificate true" in conf and "allow_anonymous false" in conf


def _reported_unreachable(caplog: pytest.LogCaptureFixture) -> str:
    """The uploader's first "cannot reach the broker" line."""
    deadline = time.monotonic() + WAIT
    while not (said := [r.message for r in caplog.records if "cannot reach the broker" in r.message]):
        assert time.monotonic() < deadline, "the uploader did not report the refused connection"
        time.sleep(0.05)
    return said[0]


def test_uploader_says_when_the_broker_refuses_its_certificate__NO_LEAK(
        tmp_path: Path, tls_broker: LocalBroker, pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mqtt.uploader")
    stranger = TlsFiles(pki.ca.ca_file, pki.stranger.cert, pki.stranger.key)
    uploader = Uploader(Spool(tmp_path / "spool"), A, "127.0.0.1", tls_broker.port, PREFIX, 30, 1,
                        status=dict, tls=stranger)
    uploader.start()
    try:
        said = _reported_unreachable(caplog)
        assert "over TLS" in said and str(pki.stranger.cert) in said
        assert not uploader.connected
    finally:
        uploader.stop()


def test_a_box_the_broker_does_not_list_is_told_it_is_not_enrolled__NO_LEAK(
        tmp_path: Path, tls_broker: LocalBroker, pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    # A certificate of the agency's CA for a box central never enrolled (so the broker's list lacks it): it
    # gets past TLS, and every publication is refused. The box says so, instead of resending in silence.
    caplog.set_level(logging.ERROR, logger="mqtt.uploader")
    unlisted = pki.ca.issue_device("SIM-0099")
    uploader = Uploader(Spool(tmp_path / "spool"), "SIM-0099", "127.0.0.1", tls_broker.port, PREFIX, 30, 1,
                        status=lambda: {"state": "idle"}, tls=pki.files(unlisted))
    uploader.start()
    try:
        assert wait_until(lambda: uploader.refused_by_broker == "Not authorized", WAIT)
        said = [r.getMessage() for r in caplog.records if "refuses what this box publishes" in r.getMessage()]
        assert len(said) == 1 and "recorder enroll" in said[0]
    finally:
        uploader.stop()


def test_a_wrong_port_is_not_reported_as_a_certificate_problem(tmp_path: Path, pki: Pki,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mqtt.uploader")
    uploader = Uploader(Spool(tmp_path / "spool"), A, "127.0.0.1", free_port(), PREFIX, 30, 1, status=dict,
                        tls=pki.files(pki.a))
    uploader.start()
    try:
        said = _reported_unreachable(caplog)
        assert "connection refused, nothing listens there" in said and "certificate" not in said
    finally:
        uploader.stop()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_tls_files_that_are_missing_or_wrong_are_named__NO_LEAK(tmp_path: Path, pki: Pki) -> None:
    good = pki.files(pki.a)
    with pytest.raises(MqttError, match=re.escape(f"CA file {tmp_path / 'nope.crt'} does not exist")):
        make_client(A, 1, dataclasses.replace(good, ca_file=tmp_path / "nope.crt"))
    with pytest.raises(MqttError, match=re.escape(f"CA file {tmp_path / 'junk.crt'} is not a readable PEM")):
        make_client(A, 1, dataclasses.replace(good, ca_file=write(tmp_path / "junk.crt", b"junk")))
    with pytest.raises(MqttError, match=re.escape(f"key {pki.b.key} are not")):
        make_client(A, 1, dataclasses.replace(good, key_file=pki.b.key))  # B's key with A's certificate
    key = serialization.load_pem_private_key(pki.a.key.read_bytes(), password=None)
    locked = write(tmp_path / "locked.key", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")))
    with pytest.raises(MqttError, match=re.escape(f"TLS key file {locked}: the key is encrypted")):
        make_client(A, 1, dataclasses.replace(good, key_file=locked))  # and no pass phrase prompt on a terminal
    with pytest.raises(ConfigError, match=re.escape(f"mqtt.tls.key_file: {tmp_path / 'gone.key'} does not exist")):
        config_mod.from_dict({"mqtt": {"tls": {"ca_file": str(good.ca_file), "cert_file": str(good.cert_file),
                                               "key_file": str(tmp_path / "gone.key")}}})
    with pytest.raises(ConfigError, match=re.escape("mqtt.tls.key_file: required")):
        config_mod.from_dict({"mqtt": {"tls": {"ca_file": str(good.ca_file), "cert_file": str(good.cert_file)}}})
    with pytest.raises(ConfigError, match=re.escape("mqtt.tls.certfile: unknown key (known keys here: ca_")):
        config_mod.from_dict({"mqtt": {"tls": {"certfile": "x"}}})


def test_ca_keeps_keys_private_and_one_role_per_name__NO_LEAK(tmp_path: Path, pki: Pki) -> None:
    for issued in (pki.a, pki.receiver, pki.broker):
        assert issued.key.stat().st_mode & 0o777 == 0o600
    assert (pki.ca.directory / "ca.key").stat().st_mode & 0o777 == 0o600
    again, created = CertificateAuthority.load_or_create(pki.ca.directory)
    assert not created and again.ca_file.read_bytes() == pki.ca.ca_file.read_bytes()
    assert again.receivers() == [RECEIVER]
    with pytest.raises(ProvisioningError, match="already a receiver"):
        again.issue_device(RECEIVER)  # it would get the receiver's rights at the broker
    with pytest.raises(ProvisioningError, match="must be 1-64 letters"):
        again.issue_device("room/+")
    (pki.ca.directory / "ca.key").unlink()
    with pytest.raises(ProvisioningError, match=re.escape("ca.key is missing")):
        CertificateAuthority.load_or_create(pki.ca.directory)


def test_certs_and_broker_config_commands_give_a_broker_that_enforces_the_acl__NO_LEAK(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    certs, conf, port = tmp_path / "certs", tmp_path / "etc" / "recorder.conf", free_port()
    assert main(["central", "certs", "--out", str(certs), "--device", A, "--device", B, "--receiver", RECEIVER]) == 0
    conf.parent.mkdir()
    assert main(["central", "broker-config", "--certs", str(certs), "--port", str(port), "--bind", "127.0.0.1",
                 "--out", str(conf), "--persistence-dir", str(tmp_path / "state")]) == 0
    said = capsys.readouterr().out
    assert f"{A}: [mqtt.tls]" in said and f"receivers {RECEIVER}" in said and "2 device(s)" in said
    rights = json.loads((tmp_path / "etc" / "dynamic-security.json").read_text())
    assert {c["username"] for c in rights["clients"]} == {A, B, RECEIVER, "central-admin"}
    if os.geteuid() == 0:
        # As root Mosquitto would switch to the 'mosquitto' user, which cannot read this test's keys.
        conf.write_text(conf.read_text() + "user root\n")
    (tmp_path / "state").mkdir()
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    broker = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + WAIT
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert broker.poll() is None and time.monotonic() < deadline, "mosquitto did not start"
                time.sleep(0.05)
        a = probe(port, TlsFiles(certs / "ca.crt", certs / f"device-{A}.crt", certs / f"device-{A}.key"), A)
        try:
            assert a.publish(topic(A, "entry"), b"own") == "No matching subscribers"  # allowed; nobody listens
            assert a.publish(topic(B, "entry"), b"forged") == "Not authorized"
            assert a.subscribe(f"$share/central/{topic('+', 'entry')}") == "Not authorized"
        finally:
            a.close()
    finally:
        broker.terminate()
        broker.wait(5)
