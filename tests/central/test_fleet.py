"""Fleet health at central (FAULT, DEVICE-CHECK): the receiver keeps each device's latest status and since
when it is online or offline; `recorder central devices` shows the fleet; a hostile status is refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from central.fleet import MAX_STATUS
from central.receiver import Receiver
from central.store import FileStore
from firmware_py.cli import main
from firmware_py.state_machine import State
from mqtt import protocol
from mqtt.broker import LocalBroker
from tests.central.test_receiver import send
from tests.conftest import make_rig, wait_until


@pytest.fixture
def receiver(tmp_path: Path, broker: LocalBroker) -> Iterator[Receiver]:
    store = FileStore(tmp_path / "central")
    for device in ("ROOM-1", "ROOM-2", "ROOM-3"):
        store.enroll(device, "AAAA")
    r = Receiver(store, "127.0.0.1", broker.port, "recorders", "fleet-receiver")
    r.start()
    assert r.connected.wait(10)
    yield r
    r.stop()


def status_topic(device: str) -> str:
    return protocol.topic("recorders", device, protocol.STATUS)


def store_of(receiver: Receiver) -> FileStore:
    assert isinstance(receiver.store, FileStore)
    return receiver.store


def test_statuses_are_kept_and_offline_since_is_shown__FAULT(receiver: Receiver, broker: LocalBroker,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    online = {"device": "ROOM-1", "online": True, "state": "recording", "session": "20261129T150536Z-f59505",
              "backlog_entries": 3, "backlog_bytes": 2_000_000, "oldest_unreceipted_s": 7200.0,
              "free_bytes": 50_000_000_000, "clock_synced": False, "last_fault": None,
              "upload_alerts": [{"session": "x", "level": "late"}], "alerts": [], "time": "t", "extra": 1}
    send(broker, [(status_topic("ROOM-1"), json.dumps(online).encode()),
                  (status_topic("ROOM-2"), json.dumps({"device": "ROOM-2", "online": True}).encode())])
    store = store_of(receiver)
    assert wait_until(lambda: store.device_status("ROOM-2") is not None)
    first = store.device_status("ROOM-1")
    assert first is not None and first.online and first.fields["state"] == "recording"
    assert "extra" not in first.fields  # unknown fields are ignored
    send(broker, [(status_topic("ROOM-1"), b'{"device": "ROOM-1", "online": false}')])  # its Last Will
    assert wait_until(lambda: (s := store.device_status("ROOM-1")) is not None and not s.online)
    gone = store.device_status("ROOM-1")
    assert gone is not None and gone.fields["free_bytes"] == 50_000_000_000  # as it last said, kept
    assert main(["central", "devices", "--store", str(store.root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["DEVICE", "ONLINE", "SINCE"]
    room1, room2, room3 = lines[1:]
    assert room1.split()[:2] == ["ROOM-1", "NO"] and room2.split()[:4][1] == "yes"
    assert room3.split()[:3] == ["ROOM-3", "never", "seen"]
    assert main(["central", "devices", "--store", str(store.root), "--json"]) == 0
    listed = {row["device"]: row for row in json.loads(capsys.readouterr().out)}
    assert listed["ROOM-3"]["online"] is None and listed["ROOM-1"]["online"] is False


def test_hostile_statuses_are_refused__FAULT(receiver: Receiver, broker: LocalBroker) -> None:
    hostile = [
        (status_topic("ROOM-2"), b'{"device": "ROOM-1", "online": true}', "names device 'ROOM-1'"),
        (status_topic("ROOM-1"), b'{"device": "ROOM-1", "online": "yes"}', "'online' must be true or false"),
        (status_topic("ROOM-1"), b"[" * 5000, "not strict JSON"),
        (status_topic("ROOM-1"), b'{"device": "ROOM-1", "online": true, "x": "' + b"a" * MAX_STATUS + b'"}',
         "bytes is over the"),
    ]
    send(broker, [(t, p) for t, p, _ in hostile])
    assert wait_until(lambda: receiver.refusals >= len(hostile)), list(receiver.refused)
    for _, _, why in hostile:
        assert any(why in r for r in receiver.refused), (why, list(receiver.refused))
    assert store_of(receiver).device_status("ROOM-1") is None
    # A field of the wrong type is left out rather than shown.
    send(broker, [(status_topic("ROOM-1"), b'{"device": "ROOM-1", "online": true, "free_bytes": "lots", '
                                           b'"clock_synced": 1, "backlog_entries": true}')])
    assert wait_until(lambda: store_of(receiver).device_status("ROOM-1") is not None)
    kept = store_of(receiver).device_status("ROOM-1")
    assert kept is not None and kept.fields == {}


def test_a_device_reports_itself_to_central_and_says_when_it_goes__DEVICE_CHECK(tmp_path: Path,
                                                                                 broker: LocalBroker) -> None:
    rig = make_rig(tmp_path, broker.port)
    device = rig.config.device.id
    try:
        assert wait_until(lambda: (s := rig.store.device_status(device)) is not None and s.online
                          and s.fields.get("state") == State.IDLE.value, 30)
    finally:
        rig.service.stop()  # an orderly stop publishes the offline status itself
    try:
        assert wait_until(lambda: (s := rig.store.device_status(device)) is not None and not s.online, 30)
    finally:
        assert rig.receiver is not None
        rig.receiver.stop()
