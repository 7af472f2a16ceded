"""Scaling out: receivers sharing one store split the load through an MQTT 5 shared subscription, with no
segment duplicated or lost (UPLOAD-24H)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from capture.ledger import entry_hash
from capture.verify import verify_session
from firmware_py.central import build_receiver
from mqtt.broker import LocalBroker
from provisioning.central_key import load_central_key
from tests.conftest import close_rig, make_rig
from tests.media import entries


def test_two_receivers_share_the_load_without_loss_or_duplicates__UPLOAD_24H(tmp_path: Path,
                                                                            broker: LocalBroker) -> None:
    rig = make_rig(tmp_path, broker.port, with_receiver=False, receiver={"share_group": "central"})
    receivers = [
        build_receiver(dataclasses.replace(rig.config, receiver=dataclasses.replace(rig.config.receiver,
                                                                                    client_id=f"receiver-{n}")),
                       rig.store)
        for n in (1, 2)
    ]
    try:
        for receiver in receivers:
            receiver.start()
            assert receiver.connected.wait(10)
        session = rig.record(4.0)
        assert rig.service.spool.wait_drained(60), "not every entry was receipted"
    finally:
        for receiver in receivers:
            receiver.stop()
        close_rig(rig)
    device = {(e["seq"], entry_hash(e)) for e in entries(rig.config.spool_dir / session)}
    central = {(e["seq"], entry_hash(e)) for e in entries(rig.central_dir(session))}
    assert central == device
    # Both took part, and between them each entry was stored exactly once.
    assert all(r.stored > 0 for r in receivers)
    assert sum(r.stored for r in receivers) == len(device)
    key = load_central_key(Path(rig.config.receiver.private_key_file))
    report = verify_session(rig.central_dir(session), rig.service.identity.public_key_b64, decode=True, central_key=key)
    assert report.ok, report.findings
