"""Store-and-forward: the device records with no broker and delivers everything when it comes back."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from capture.verify import verify_session
from mqtt.broker import LocalBroker, free_port
from mqtt.receiver import Receiver
from tests.conftest import close_rig, make_rig


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
            receiver = Receiver(rig.store, "127.0.0.1", port, "recorders", "late-receiver")
            receiver.start()
            try:
                assert rig.service.spool.wait_drained(60), "backlog was not delivered after the broker came back"
            finally:
                receiver.stop()
        report = verify_session(rig.central_dir(session), trusted_key_b64=rig.service.identity.public_key_b64)
        assert report.ok, report.findings
    finally:
        close_rig(rig)


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
            close_rig(rig)
