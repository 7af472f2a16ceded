"""The device frees its spool of sessions central has proven it holds, and says how much recording room is
left (DEVICE-CHECK)."""

from __future__ import annotations

import json
from pathlib import Path

from evidence.verify import verify_session
from mqtt.broker import LocalBroker
from tests.conftest import make_rig, wait_until


def test_a_receipted_session_leaves_the_device_and_stays_whole_at_central__DEVICE_CHECK(
        tmp_path: Path, broker: LocalBroker) -> None:
    rig = make_rig(tmp_path, broker.port, spool={"keep_receipted_days": 0})
    try:
        session = rig.record(1.5)
        storage = next(r for r in rig.service.controller.last_preflight if r.name == "storage")
        assert storage.ok and "h of recording" in storage.detail
        # The last receipt wakes the pruner: central's signed receipts prove every entry, so the copy here goes.
        assert wait_until(lambda: not (rig.config.spool_dir / session).exists(), 30)
        report = verify_session(rig.central_dir(session), trusted_key_b64=rig.service.identity.public_key_b64)
        assert report.ok, report.findings
        status = json.loads((rig.config.device.state_dir / "status.json").read_text())
        assert status["recording_hours_left"] > 0
    finally:
        rig.close()
