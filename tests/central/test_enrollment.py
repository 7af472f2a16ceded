"""Bringing up a room by claim, against a real Mosquitto with mutual TLS and the dynamic-security plugin:
a one-time token from central, one command on the box, and the room's first session receipted; a changed key
waits for an operator; a revoked box is refused everywhere (DEVICE-CHECK, TAMPER-PROOF-IT, NO-LEAK)."""

from __future__ import annotations

import datetime as dt
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.errors import CentralError, KeyChangeRefused
from central.store import FileStore
from evidence.verify import verify_session
from firmware_py import rig as rig_mod
from firmware_py.cli import main
from firmware_py.enroll import enroll, post
from firmware_py.errors import ServiceError
from mqtt.broker_admin import BrokerAdmin
from mqtt.client import make_client
from mqtt.tls import TlsFiles
from provisioning.enrollment import Officer, Room, Token
from provisioning.identity import DeviceIdentity
from tests.conftest import wait_until
from tests.forge import StepClock, forge
from tests.mqtt.test_tls import Probe

ROOM = Room("GZ-TH-R01", "城关派出所", "询问室一", "城关路1号", "Asia/Shanghai",
            (Officer("赵六", "44000000009"), Officer("钱七", "44000000010")))


@pytest.fixture
def central(tmp_path: Path) -> Iterator[rig_mod.DeployedCentral]:
    deployed = rig_mod.start_deployed_central(tmp_path / "site")
    yield deployed
    deployed.close()


def _token(central: rig_mod.DeployedCentral, room: Room = ROOM) -> str:
    return str(central.enrollment.issue_token(room, "技术员 王工").token)


def test_a_token_brings_up_a_room_whose_first_session_is_receipted__DEVICE_CHECK(
        tmp_path: Path, central: rig_mod.DeployedCentral, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "box" / "recorder.toml"
    state = tmp_path / "box" / "state"
    assert main(["enroll", central.url, _token(central), "--config", str(config), "--state-dir", str(state)]) == 0
    said = capsys.readouterr().out
    assert "enrolled   GZ-TH-R01: 城关派出所, 询问室一" in said
    # The box made its keys itself: central holds its certificate, never its private key.
    assert (state / "keys" / "tls.key").stat().st_mode & 0o777 == 0o600
    assert not central.ca.leaf_paths("device", ROOM.device).key.exists()
    record = central.store.device_keys(ROOM.device)[-1]
    assert record["token_issued_by"] == "技术员 王工" and record["room"]["room"] == "询问室一"
    cert = x509.load_pem_x509_certificate((state / "keys" / "tls.crt").read_bytes())
    assert record["serial"] == cert.serial_number
    # What it wrote is a room box's configuration, with nothing weak about it.
    written = rig_mod.enrolled_config(config)
    assert written.device.id == ROOM.device and written.session.officers[0].name == "赵六"
    assert written.mqtt.tls is not None and written.device.central_public_key and written.device.central_signing_key
    rig = rig_mod.make_rig(written, central.config, with_receiver=False)
    try:
        session = rig.record(1.0)
        assert rig.service.spool.wait_drained(30), "central did not receipt the enrolled box's first session"
        assert central.receiver.settle(30)
        report = verify_session(central.store.session_dir(ROOM.device, session),
                                trusted_key_b64=central.store.device_key(ROOM.device))
        assert report.ok, report.findings
    finally:
        rig.close()


def test_a_token_is_single_use_expires_and_must_be_whole__DEVICE_CHECK(
        tmp_path: Path, central: rig_mod.DeployedCentral) -> None:
    token = _token(central)
    enroll(central.url, token, tmp_path / "a.toml", tmp_path / "a")
    with pytest.raises(ServiceError, match=r"\(403\): the enrollment token was already used"):
        enroll(central.url, token, tmp_path / "b.toml", tmp_path / "b")
    expired = Token.parse(_token(central, Room("GZ-TH-R02", "u", "r", "l", "Asia/Shanghai", ())))
    record_file = central.enrollment.tokens_dir / f"{expired.id}.json"
    record = json.loads(record_file.read_text())
    record["expires"] = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat(timespec="seconds")
    record_file.write_text(json.dumps(record))
    with pytest.raises(ServiceError, match=r"\(403\): the enrollment token expired"):
        enroll(central.url, str(expired), tmp_path / "c.toml", tmp_path / "c")
    guessed = Token.parse(_token(central, Room("GZ-TH-R03", "u", "r", "l", "Asia/Shanghai", ())))
    wrong_secret = Token(guessed.id, "a" * 32, guessed.pin)
    with pytest.raises(ServiceError, match=r"\(403\): the enrollment token is not known"):
        enroll(central.url, str(wrong_secret), tmp_path / "d.toml", tmp_path / "d")
    # A server that is not the one the token pins gets nothing: the check comes before the request.
    impostor = Token(guessed.id, guessed.secret, "a" * 52)
    with pytest.raises(ServiceError, match="is not central's enrollment endpoint"):
        enroll(central.url, str(impostor), tmp_path / "e.toml", tmp_path / "e")
    with pytest.raises(ServiceError, match="the enrollment token is malformed"):
        enroll(central.url, token[:-3], tmp_path / "f.toml", tmp_path / "f")
    assert central.store.device_key("GZ-TH-R03") is None and not (tmp_path / "e.toml").exists()


def test_a_changed_key_waits_for_approval_and_the_old_key_stays_on_record__TAMPER_PROOF_IT(
        tmp_path: Path, central: rig_mod.DeployedCentral, capsys: pytest.CaptureFixture[str]) -> None:
    enroll(central.url, _token(central), tmp_path / "first.toml", tmp_path / "first")
    first_key = central.store.device_key(ROOM.device)
    assert first_key is not None
    # The same room's box with a new card (a new signing key) presents a fresh token: not taken silently.
    again = _token(central)
    with pytest.raises(ServiceError, match=r"\(409\): device GZ-TH-R01 already has a key"):
        enroll(central.url, again, tmp_path / "second.toml", tmp_path / "second")
    assert central.store.device_key(ROOM.device) == first_key
    box_key = DeviceIdentity.load(tmp_path / "second" / "keys").public_key_b64  # as `recorder identity` shows it
    capsys.readouterr()
    assert main(["central", "devices", "--store", str(central.store.root)]) == 0
    assert f"GZ-TH-R01 (NEW KEY {box_key[:12]}…: approve-key)" in capsys.readouterr().out
    with pytest.raises(CentralError, match="no changed key waiting"):
        central.enrollment.approve_key("GZ-TH-R02", "值班长 孙", box_key[:12])
    # The operator approves the key read off the box, not whichever claimed last with the token.
    with pytest.raises(CentralError, match="the claim did not come from that box"):
        central.enrollment.approve_key(ROOM.device, "值班长 孙", first_key[:12])
    new_key = central.enrollment.approve_key(ROOM.device, "值班长 孙", box_key[:12])
    assert new_key == box_key
    enroll(central.url, again, tmp_path / "second.toml", tmp_path / "second")
    keys = central.store.device_keys(ROOM.device)
    assert [k["key"] for k in keys] == [first_key, new_key]
    assert keys[0]["retired"] is not None and keys[1]["approved_by"] == "值班长 孙"


def test_a_revoked_box_is_refused_by_the_broker_and_by_central__TAMPER_PROOF_IT(
        tmp_path: Path, central: rig_mod.DeployedCentral) -> None:
    config = tmp_path / "box.toml"
    enroll(central.url, _token(central), config, tmp_path / "box")
    box = rig_mod.enrolled_config(config)
    assert box.mqtt.tls is not None
    probe = Probe(central.broker.port, ROOM.device, make_client(ROOM.device, 1, box.mqtt.tls))
    try:
        assert probe.connected.wait(5)
        topic = f"recorders/{ROOM.device}/status"
        assert probe.publish(topic, b"{}") != "Not authorized"
        done = central.enrollment.revoke(ROOM.device, "值班长 孙", "box stolen from room 1")
        assert any("the broker disconnected" in line for line in done), done
        # The plugin drops it at once; when it comes back it may do nothing.
        assert wait_until(lambda: probe.disconnects > 0, 5)
        assert wait_until(lambda: probe.connected.is_set() and probe.publish(topic, b"{}") == "Not authorized", 10)
    finally:
        probe.close()
    revoked = central.ca.revoked()
    assert revoked[-1]["name"] == ROOM.device and revoked[-1]["reason"] == "box stolen from room 1"
    crl = x509.load_pem_x509_crl(central.ca.crl_file.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(revoked[-1]["serial"]) is not None
    # Reloaded, the broker reads the new CRL: the certificate no longer gets through TLS. (The broker takes
    # SIGHUP in its own time: a connection may still get in just before.)
    central.broker.reload()
    tls = box.mqtt.tls

    def refused_at_tls() -> bool:
        attempt = Probe(central.broker.port, ROOM.device, make_client(ROOM.device, 1, tls))
        try:
            return attempt.refused.wait(3) and not attempt.connected.is_set()
        finally:
            attempt.close()

    assert wait_until(refused_at_tls, 20)
    with pytest.raises(CentralError, match="was revoked"):
        central.enrollment.issue_token(ROOM, "技术员 王工")
    assert central.store.device_key(ROOM.device) is None
    assert central.store.device_keys(ROOM.device)  # its key stays on record for what it sent before


def test_sessions_signed_before_a_key_change_still_verify_against_their_key__TAMPER_PROOF_IT(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = FileStore(tmp_path / "central")
    old, new, stranger = (DeviceIdentity(Ed25519PrivateKey.generate()) for _ in range(3))
    store.enroll(ROOM.device, old.public_key_b64)
    opened = dt.datetime(2026, 11, 1, 9, 0, tzinfo=dt.UTC)
    before = forge(store.session_dir(ROOM.device, "20261101T090000Z-0000aa"), ROOM.device, old, StepClock(opened),
                   {}, 2)
    with pytest.raises(KeyChangeRefused):
        store.enroll(ROOM.device, new.public_key_b64)
    store.enroll(ROOM.device, new.public_key_b64, approved_by="值班长 孙")
    after = forge(store.session_dir(ROOM.device, "20261128T090000Z-0000bb"), ROOM.device, new,
                  StepClock(opened + dt.timedelta(days=27)), {}, 2)
    # `recorder verify` on a session in the store anchors it to the key it was recorded under, if central ever
    # enrolled that key for the device: both verify, and a session under a key never enrolled does not.
    for ledger in (before, after):
        assert main(["verify", str(ledger.session_dir)]) == 0, capsys.readouterr().out
    forged = forge(store.session_dir(ROOM.device, "20261128T100000Z-0000cc"), ROOM.device, stranger,
                   StepClock(opened), {}, 1)
    assert main(["verify", str(forged.session_dir)]) == 1
    assert "unknown signing key" in capsys.readouterr().out


def test_a_revocation_the_broker_missed_reaches_it_within_the_sync_interval__TAMPER_PROOF_IT(tmp_path: Path) -> None:
    # Revoked while the broker was unreachable: central's records say so at once; the enrollment server's
    # periodic sync (enrollment.broker_sync_minutes) takes the device off the broker's list at its next round.
    central = rig_mod.start_deployed_central(tmp_path / "site", broker_sync_s=0.3)
    try:
        enroll(central.url, _token(central), tmp_path / "box.toml", tmp_path / "box")
        admin = central.ca.leaf_paths("admin", central.ca.admins()[0])
        with BrokerAdmin("127.0.0.1", central.broker.port, TlsFiles(central.ca.ca_file, admin.cert, admin.key),
                         "recorders") as broker:
            assert ROOM.device in broker.devices()
            central.store.revoke(ROOM.device, "值班长 孙", "box stolen")  # the broker is not told here
            assert wait_until(lambda: ROOM.device not in broker.devices(), 10)
    finally:
        central.close()


def test_a_token_issued_before_a_revocation_enrolls_nothing_and_bad_requests_are_refused_plainly__TAMPER_PROOF_IT(
        tmp_path: Path, central: rig_mod.DeployedCentral) -> None:
    token = _token(central)
    central.enrollment.revoke(ROOM.device, "值班长 孙", "box stolen before it was installed")
    with pytest.raises(ServiceError, match=r"\(403\): device GZ-TH-R01 was revoked"):
        enroll(central.url, token, tmp_path / "box.toml", tmp_path / "box")
    assert not central.ca.leaf_paths("device", ROOM.device).cert.exists()  # no certificate was signed
    # A request that is not a token's (here, a secret of non-ASCII letters) is a 400 naming it, not a crash.
    parsed = Token.parse(_token(central, Room("GZ-TH-R05", "u", "r", "l", "Asia/Shanghai", ())))
    body = json.dumps({"csr": "x", "secret": "é" * 32, "signing_key": "x", "token": parsed.id},
                      ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()
    with pytest.raises(ServiceError, match=r"\(400\): enrollment request token and secret are not a token's"):
        post(central.url, parsed, body)


def test_a_token_is_refused_for_what_the_box_would_refuse__DEVICE_CHECK(central: rig_mod.DeployedCentral) -> None:
    # Caught at central, not on the Pi after the token has been carried there.
    with pytest.raises(CentralError, match="--timezone: 'Mars/Olympus' is not a known time zone"):
        central.enrollment.issue_token(Room("GZ-TH-R06", "u", "r", "l", "Mars/Olympus", ()), "技术员 王工")
    with pytest.raises(CentralError, match="--device: 'room/1' is not a valid device id"):
        central.enrollment.issue_token(Room("room/1", "u", "r", "l", "Asia/Shanghai", ()), "技术员 王工")
    with pytest.raises(CentralError, match="--hours: must be a finite number"):
        central.enrollment.issue_token(ROOM, "技术员 王工", float("nan"))
    assert not list(central.enrollment.tokens_dir.glob("*.json"))


def test_a_connection_that_is_not_tls_is_a_line_in_the_log_and_the_server_goes_on__TAMPER_PROOF_IT(
        tmp_path: Path, central: rig_mod.DeployedCentral, capfd: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    with socket.create_connection(("127.0.0.1", central.server.port), timeout=5) as plain:
        plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        plain.recv(100)  # the server closes it
    assert wait_until(lambda: any("enrollment connection from 127.0.0.1 failed" in r.getMessage()
                                  for r in caplog.records), 5)
    assert "Traceback" not in capfd.readouterr().err
    enroll(central.url, _token(central), tmp_path / "box.toml", tmp_path / "box")  # still serving
