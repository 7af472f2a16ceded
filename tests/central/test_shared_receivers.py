"""Scaling out: receivers sharing one store split the load through an MQTT 5 shared subscription, with no
segment duplicated or lost (UPLOAD-24H)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from capture.probe import decodes
from central.build import build_receiver
from evidence.entry import entry_hash
from evidence.verify import verify_session
from mqtt.broker import LocalBroker
from provisioning.central_key import load_central_key
from tests.conftest import make_rig
from tests.media import entries


def test_two_receivers_share_the_load_without_loss_or_duplicates__UPLOAD_24H(tmp_path: Path,
                                                                            broker: LocalBroker) -> None:
    rig = make_rig(tmp_path, broker.port, with_receiver=False, central={"receiver": {"share_group": "central"}})
    receivers = [
        build_receiver(dataclasses.replace(rig.central, receiver=dataclasses.replace(rig.central.receiver,
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
        rig.close()
    device = {(e["seq"], entry_hash(e)) for e in entries(rig.config.spool_dir / session)}
    central = {(e["seq"], entry_hash(e)) for e in entries(rig.central_dir(session))}
    assert central == device
    # Both took part, and between them each entry was stored exactly once.
    assert all(r.stored > 0 for r in receivers)
    assert sum(r.stored for r in receivers) == len(device)
    key = load_central_key(Path(rig.central.receiver.private_key_file))
    report = verify_session(rig.central_dir(session), rig.service.identity.public_key_b64, decode=decodes,
                            central_key=key)
    assert report.ok, report.findings
