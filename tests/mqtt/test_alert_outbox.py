"""The device's alert outbox (INTERRUPT): an alert is sent again until central acknowledges it, survives a
restart while unacknowledged, is never deleted, and goes out from memory when the disk cannot take it."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from evidence.alert import Alert, make_alert
from mqtt.alert_outbox import AlertOutbox
from provisioning.identity import DeviceIdentity
from tests.central.test_alerts import fields


def an_alert(alert_id: str = "0123456789abcdef") -> Alert:
    return make_alert(fields(id=alert_id), DeviceIdentity(Ed25519PrivateKey.generate()).sign)


def test_an_alert_is_due_again_until_acknowledged_and_its_file_is_kept__INTERRUPT(tmp_path: Path) -> None:
    outbox = AlertOutbox(tmp_path / "alerts", resend_after=0.0)
    alert = an_alert()
    outbox.add(alert)
    assert outbox.due() == [alert]
    assert outbox.due() == [alert]  # no acknowledgement yet: sent again
    assert not outbox.acknowledged("ffffffffffffffff")
    assert outbox.acknowledged(alert.id)
    assert not outbox.acknowledged(alert.id)  # a duplicate acknowledgement changes nothing
    assert outbox.due() == [] and outbox.waiting() == []
    assert (tmp_path / "alerts" / f"{alert.id}.acked.json").read_bytes() == alert.raw
    assert AlertOutbox(tmp_path / "alerts", 0.0).waiting() == []


def test_an_unacknowledged_alert_is_sent_again_after_a_restart__INTERRUPT(tmp_path: Path) -> None:
    alert = an_alert()
    first = AlertOutbox(tmp_path / "alerts", resend_after=60.0)
    first.add(alert)
    assert first.due() == [alert] and first.due() == []  # not again before resend_after
    (tmp_path / "alerts" / "broken.json").write_bytes(b"{")  # named in the log, skipped
    assert AlertOutbox(tmp_path / "alerts", resend_after=60.0).due() == [alert]


def test_an_alert_goes_out_from_memory_when_the_disk_refuses_it__INTERRUPT(tmp_path: Path) -> None:
    folder = tmp_path / "alerts"
    folder.write_bytes(b"")  # a file where the folder should be: nothing can be written there
    outbox = AlertOutbox(folder, resend_after=0.0)
    alert = an_alert()
    outbox.add(alert)
    assert outbox.due() == [alert]
    assert outbox.acknowledged(alert.id)
    assert outbox.waiting() == []
