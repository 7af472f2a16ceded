"""Store-and-forward: the device records with no broker and delivers everything when it comes back."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from capture.ledger import read_entries
from capture.spool import Spool
from central.build import build_receiver
from central.receiver import Receiver
from central.store import FileStore
from evidence import layout
from evidence.alert import make_alert
from evidence.canonical import canonical
from evidence.entry import Entry
from evidence.verify import verify_session
from mqtt import protocol
from mqtt.broker import LocalBroker, free_port
from mqtt.client import make_client
from mqtt.uploader import Uploader
from provisioning.central_key import load_signing_key
from provisioning.identity import DeviceIdentity
from tests.central.test_alerts import fields as alert_fields
from tests.central.test_receiver import send
from tests.conftest import RecordedSession, make_rig, wait_until


def test_records_with_broker_down_and_uploads_when_it_returns__UPLOAD_24H(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mqtt.uploader")
    port = free_port()
    rig = make_rig(tmp_path, port, with_receiver=False)
    try:
        session = rig.record(2.0)
        backlog = rig.service.spool.backlog()
        assert backlog.entries > 0 and backlog.bytes > 0
        assert any("cannot reach the broker" in r.message for r in caplog.records)
        assert verify_session(rig.config.spool_dir / session).ok  # recorded in full while offline

        with LocalBroker(tmp_path / "broker", port=port):
            receiver = build_receiver(rig.central, rig.store, "127.0.0.1", port)  # signing as central does
            receiver.start()
            try:
                assert rig.service.spool.wait_drained(60), "backlog was not delivered after the broker came back"
            finally:
                receiver.stop()
        report = verify_session(rig.central_dir(session), trusted_key_b64=rig.service.identity.public_key_b64)
        assert report.ok, report.findings
    finally:
        rig.close()


def test_chunks_stay_below_the_brokers_maximum_packet_size__UPLOAD_24H(tmp_path: Path) -> None:
    # A broker that takes at most 16 KiB per packet: a bigger message would make it drop the connection.
    with LocalBroker(tmp_path / "broker", max_packet_size=16 * 1024) as broker:
        rig = make_rig(tmp_path, broker.port, video={"bitrate": 600_000})
        try:
            session = rig.record(2.0)
            assert rig.service.spool.wait_drained(60)
            report = verify_session(rig.central_dir(session))
            assert report.ok
            assert report.media_bytes / report.segments > 16 * 1024, "segments too small to need chunking"
        finally:
            rig.close()


def test_what_paho_holds_unacknowledged_is_bounded_and_the_upload_still_completes__UPLOAD_24H(
        tmp_path: Path, broker: LocalBroker, recorded: RecordedSession) -> None:
    # The recorded session again, every entry pending, sent with a bound below one segment: each chunk must
    # wait for the broker's acknowledgement of the one before, and any byte the accounting failed to give
    # back would stall the upload for good.
    spool_root = tmp_path / "spool"
    shutil.copytree(recorded.spool_dir, spool_root / recorded.session,
                    ignore=shutil.ignore_patterns(f"{layout.RECEIPTS}"))
    (spool_root / recorded.session / layout.RECEIPTS).mkdir()
    device = recorded.rig.config.device.id
    store = FileStore(tmp_path / "central")
    store.enroll(device, recorded.rig.service.identity.public_key_b64)
    receiver = Receiver(store, "127.0.0.1", broker.port, "recorders", "bounded-receiver")
    receiver.start()
    spool = Spool(spool_root)
    assert spool.backlog().entries == len(layout.entry_seqs(recorded.spool_dir))
    uploader = Uploader(spool, device, "127.0.0.1", broker.port, "recorders", 30, 2, status=lambda: {},
                        max_unacked_bytes=4096)
    largest = max(len(protocol.encode_media(protocol.MediaChunk(recorded.session, "000001.ts", 0, size, "0" * 64,
                                                                bytes(size))))
                  for size in (min(protocol.DEFAULT_CHUNK, p.stat().st_size)
                               for p in (spool_root / recorded.session / layout.MEDIA).iterdir()))
    try:
        assert receiver.connected.wait(10)
        uploader.start()
        assert spool.wait_drained(60), f"stalled with {spool.backlog()} pending"
    finally:
        uploader.stop()
        receiver.stop()
    # Never more than one message unacknowledged at once: without the bound, paho holds the whole window.
    assert 0 < uploader.peak_unacked_bytes <= largest
    report = verify_session(store.session_dir(device, recorded.session),
                            trusted_key_b64=recorded.rig.service.identity.public_key_b64)
    assert report.ok, report.findings


def test_hostile_receipts_leave_the_uploader_working__TAMPER_PROOF_IT(tmp_path: Path, broker: LocalBroker) -> None:
    # Once, one receipt of 5,000 nested brackets ended paho's network thread: nothing was receipted after it.
    rig = make_rig(tmp_path, broker.port)
    topic = protocol.topic("recorders", rig.config.device.id, protocol.RECEIPT)
    good = json.loads(protocol.encode_receipt("20261122T080000Z-abcdef", 1, "a" * 64, "t", "x"))
    hostile = [b"[" * 5000, b'{"seq":' + b"9" * 5000 + b"}", json.dumps({**good, "seq": True}).encode(),
               json.dumps({**good, "pad": "x" * (1 << 20)}).encode(), b"\xff\xfe"]
    try:
        client = make_client("attacker", 2)
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        for payload in hostile:
            client.publish(topic, payload, qos=1).wait_for_publish(5)
        client.disconnect()
        client.loop_stop()
        session = rig.record(1.0)
        assert rig.service.spool.wait_drained(60), "the uploader stopped taking receipts"
        kept = list((rig.config.spool_dir / session / layout.RECEIPTS).iterdir())
        assert kept and max(p.stat().st_size for p in kept) <= protocol.MAX_RECEIPT
    finally:
        rig.close()


def test_only_receipts_signed_by_central_count__TAMPER_PROOF_IT(tmp_path: Path, broker: LocalBroker,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mqtt.uploader")
    rig = make_rig(tmp_path, broker.port, with_receiver=False)
    central = load_signing_key(tmp_path / "central-signing-key.pem")
    forger = DeviceIdentity(Ed25519PrivateKey.generate())
    try:
        session = rig.record(1.0)
        log = read_entries(rig.config.spool_dir / session)
        topic = protocol.topic("recorders", rig.config.device.id, protocol.RECEIPT)

        def receipt(e: Entry, sign: protocol.Sign | None) -> bytes:
            return protocol.encode_receipt(session, e.seq, e.hash, "2026-11-29T00:00:00.000+00:00", "r", sign)

        forged: list[bytes] = []
        for e in log:
            forged.append(receipt(e, None))  # unsigned
            forged.append(receipt(e, forger.sign))  # signed by another key
            altered = json.loads(receipt(e, central.sign))
            altered["stored_at"] = "2026-11-30T00:00:00.000+00:00"  # changed after central signed it
            forged.append(canonical(altered))
        send(broker, [(topic, payload) for payload in forged])
        assert wait_until(lambda: sum("refused a receipt" in r.getMessage() for r in caplog.records) >= len(forged))
        assert rig.service.spool.backlog().entries == len(log), "a receipt central did not sign freed an entry"
        send(broker, [(topic, receipt(e, central.sign)) for e in log])
        assert rig.service.spool.wait_drained(30), "central's signed receipts were not taken"
        kept = json.loads(layout.receipt_path(rig.config.spool_dir / session, 0).read_bytes())
        assert protocol.decode_receipt(canonical(kept)).signed_by(central.public_key)  # kept as signed
        # The same for an alert's acknowledgement: a forged one does not stop the alert being repeated.
        alert = make_alert(alert_fields(device=rig.config.device.id), rig.service.identity.sign)
        rig.service.alerts.add(alert)
        acks = protocol.topic("recorders", rig.config.device.id, protocol.ALERT_ACK)
        refused = sum("refused an alert acknowledgement" in r.getMessage() for r in caplog.records)
        send(broker, [(acks, protocol.encode_alert_ack(alert.id, rig.config.device.id, forger.sign)),
                      (acks, protocol.encode_alert_ack(alert.id, rig.config.device.id))])
        assert wait_until(lambda: sum("refused an alert acknowledgement" in r.getMessage()
                                      for r in caplog.records) >= refused + 2)
        assert rig.service.alerts.waiting() == [alert]
        send(broker, [(acks, protocol.encode_alert_ack(alert.id, rig.config.device.id, central.sign))])
        assert wait_until(lambda: not rig.service.alerts.waiting())
    finally:
        rig.close()
