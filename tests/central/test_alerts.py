"""Central keeps and acknowledges a device's alert only when the device it names signed it (INTERRUPT, NO-LEAK):
the head of the unit is told at once that recording could not continue, and nobody else can raise or
silence that alarm. `recorder central alerts` lists what waits and records who acknowledged it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.receiver import Receiver
from central.store import FileStore
from evidence.alert import Alert, MalformedAlert, make_alert, parse_alert
from evidence.canonical import canonical
from firmware_py.cli import main
from mqtt import protocol
from mqtt.broker import LocalBroker
from mqtt.client import make_client
from provisioning.identity import DeviceIdentity
from tests.central.test_receiver import send
from tests.conftest import wait_until

DEVICE = "ROOM-7"
CENTRAL = DeviceIdentity(Ed25519PrivateKey.generate())
"""Central's receipt-signing key."""


def fields(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "0123456789abcdef", "kind": "cannot_continue", "device": DEVICE,
        "session": "20261129T150536Z-f59505", "unit": "示例执法单位", "room": "询问室一", "location": "示例路1号",
        "officers": [{"name": "张三", "certificate": "110001"}, {"name": "李四", "certificate": "110002"}],
        "case": "A-2026-1", "matter": "询问", "cause": "storage_full", "detail": "free space below a minute",
        "interrupted_at": "2026-11-29T15:05:40.120+08:00", "time": "2026-11-29T15:07:40.500+08:00",
        "clock_synced": True, "attempts": 12,
    }
    return {**base, **changes}


@pytest.fixture
def device() -> DeviceIdentity:
    return DeviceIdentity(Ed25519PrivateKey.generate())


@pytest.fixture
def receiver(tmp_path: Path, broker: LocalBroker, device: DeviceIdentity) -> Iterator[Receiver]:
    store = FileStore(tmp_path / "central")
    store.enroll(DEVICE, device.public_key_b64)
    r = Receiver(store, "127.0.0.1", broker.port, "recorders", "receiver-under-test")
    r.sign = CENTRAL.sign
    r.start()
    assert r.connected.wait(10)
    yield r
    r.stop()


class Acks:
    """Listens on the device's alert_ack topic, as the device does."""

    def __init__(self, broker: LocalBroker, device: str) -> None:
        self.got: list[protocol.AlertAck] = []
        self._client = make_client("ack-listener", 2)
        subscribed = threading.Event()
        self._client.on_connect = lambda client, *_: client.subscribe(
            protocol.topic("recorders", device, protocol.ALERT_ACK), 1)
        self._client.on_subscribe = lambda *_: subscribed.set()
        self._client.on_message = lambda _c, _u, m: self.got.append(protocol.decode_alert_ack(bytes(m.payload)))
        self._client.connect("127.0.0.1", broker.port)
        self._client.loop_start()
        assert subscribed.wait(10)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def store_of(receiver: Receiver) -> FileStore:
    assert isinstance(receiver.store, FileStore)
    return receiver.store


def alert_topic(device: str = DEVICE) -> str:
    return protocol.topic("recorders", device, protocol.ALERT)


def test_a_signed_alert_is_kept_and_acknowledged_once__INTERRUPT(receiver: Receiver, broker: LocalBroker,
                                                                  device: DeviceIdentity) -> None:
    acks = Acks(broker, DEVICE)
    try:
        alert = make_alert(fields(), device.sign)
        send(broker, [(alert_topic(), alert.raw), (alert_topic(), alert.raw)])
        assert wait_until(lambda: len(acks.got) == 2), acks.got
        assert (acks.got[0].alert, acks.got[0].device) == (alert.id, DEVICE)
        assert acks.got[0].signed_by(CENTRAL.public_key)  # so the device can tell it from a forged one
        [kept] = store_of(receiver).alerts()
        assert kept.alert == alert and kept.handled is None
        assert kept.alert.signed_by(device.public_key_b64)
    finally:
        acks.close()


def _forgeries(device: DeviceIdentity) -> list[tuple[str, bytes, str]]:
    other = DeviceIdentity(Ed25519PrivateKey.generate())
    genuine = make_alert(fields(), device.sign)
    value = json.loads(genuine.raw)
    altered = canonical({**value, "cause": "weather"})
    extra = canonical({**value, "note": "x"})
    return [
        (alert_topic(), make_alert(fields(), other.sign).raw, "not signed by its enrolled key"),
        (alert_topic(), altered, "not signed by its enrolled key"),
        (alert_topic("ROOM-8"), genuine.raw, "names device 'ROOM-7'"),
        (alert_topic("ROOM-9"), make_alert(fields(device="ROOM-9"), other.sign).raw, "not enrolled"),
        (alert_topic(), extra, "unknown ['note']"),
        (alert_topic(), b'{"id": 1}', "not canonical"),
        (alert_topic(), canonical({**value, "attempts": -1}), "'attempts' has a bad value"),
    ]


def test_forged_or_altered_alerts_are_refused_and_never_acknowledged__NO_LEAK(
        receiver: Receiver, broker: LocalBroker, device: DeviceIdentity) -> None:
    forgeries = _forgeries(device)
    send(broker, [(t, p) for t, p, _ in forgeries])
    assert wait_until(lambda: receiver.refusals >= len(forgeries)), list(receiver.refused)
    for _, _, why in forgeries:
        assert any(why in r for r in receiver.refused), (why, list(receiver.refused))
    assert store_of(receiver).alerts() == []


def test_another_alert_under_a_kept_id_leaves_the_first__NO_EDIT(tmp_path: Path, device: DeviceIdentity) -> None:
    store = FileStore(tmp_path / "central")
    first = make_alert(fields(), device.sign)
    assert store.store_alert(first)
    assert not store.store_alert(first)
    with pytest.raises(Exception, match="differs from the one kept"):
        store.store_alert(make_alert(fields(detail="another"), device.sign))
    assert [a.alert for a in store.alerts()] == [first]


@pytest.mark.parametrize("change", [{"kind": "fine"}, {"id": "ABC"}, {"cause": "bored"}, {"clock_synced": 1},
                                    {"officers": [{"name": "x"}]}, {"session": "../x"}])
def test_an_alert_the_format_refuses_cannot_be_made__INTERRUPT(device: DeviceIdentity, change: dict[str, Any]
                                                               ) -> None:
    with pytest.raises(MalformedAlert):
        make_alert(fields(**change), device.sign)


def test_an_alert_reads_back_as_signed(device: DeviceIdentity) -> None:
    alert = make_alert(fields(), device.sign)
    assert parse_alert(alert.raw) == alert
    assert "cause storage_full (存储空间已满)" in alert.summary()
    assert "张三 (110001), 李四 (110002)" in alert.summary()


def _cli(store: Path, *args: str) -> int:
    return main(["central", "alerts", "--store", str(store), *args])


def test_alerts_are_listed_until_someone_deals_with_them__INTERRUPT(tmp_path: Path, device: DeviceIdentity,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    store = FileStore(tmp_path / "central")
    alert: Alert = make_alert(fields(), device.sign)
    store.store_alert(alert)
    assert _cli(store.root) == 1
    out = capsys.readouterr().out
    assert alert.id in out and "询问室一" in out and "张三 110001" in out and "storage_full" in out
    assert _cli(store.root, "--ack", alert.id) == 2
    assert "--ack needs --by" in capsys.readouterr().err
    assert _cli(store.root, "--ack", "ffffffffffffffff", "--by", "王五") == 2
    assert "no alert ffffffffffffffff" in capsys.readouterr().err
    assert _cli(store.root, "--ack", alert.id, "--by", "王五", "--note", "单位负责人已知悉") == 0
    capsys.readouterr()
    assert _cli(store.root, "--ack", alert.id, "--by", "王五") == 2
    assert "already acknowledged" in capsys.readouterr().err
    assert _cli(store.root) == 0
    assert "no alerts waiting" in capsys.readouterr().out
    assert _cli(store.root, "--all", "--json") == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["handled"]["by"] == "王五" and listed["handled"]["note"] == "单位负责人已知悉"
    assert listed["officers"][1] == {"name": "李四", "certificate": "110002"}
    assert listed["interrupted_at"] == "2026-11-29T15:05:40.120+08:00"


def test_only_a_self_test_report_its_device_signed_is_kept_and_acknowledged__DEVICE_CHECK(
        receiver: Receiver, broker: LocalBroker, device: DeviceIdentity) -> None:
    # Fleet health shows the last self-test: nobody but the box itself may write it there.
    check = [protocol.SelfTestCheck("clock", True, "synchronised", "")]
    forger = DeviceIdentity(Ed25519PrivateKey.generate())
    topic = protocol.topic("recorders", DEVICE, protocol.SELFTEST)
    unsigned = json.loads(protocol.encode_selftest("00000000000000aa", DEVICE, "t", check, device.sign))
    unsigned["sig"] = None
    hostile = [protocol.encode_selftest("00000000000000ab", DEVICE, "t", check, forger.sign),  # another key
               protocol.encode_selftest("00000000000000ac", "ROOM-8", "t", check, device.sign),  # another device
               canonical(unsigned), b"{" * 5000]
    acks = Acks(broker, DEVICE)
    try:
        send(broker, [(topic, payload) for payload in hostile])
        assert wait_until(lambda: receiver.handled >= len(hostile))
        assert receiver.refusals == len(hostile) and receiver.store.latest_selftest(DEVICE) is None
        genuine = protocol.encode_selftest("00000000000000ad", DEVICE, "t", check, device.sign)
        send(broker, [(topic, genuine)])
        assert wait_until(lambda: [a.alert for a in acks.got] == ["00000000000000ad"])
        assert acks.got[0].signed_by(CENTRAL.public_key)
        assert receiver.store.latest_selftest(DEVICE) == genuine
    finally:
        acks.close()
