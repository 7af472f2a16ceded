"""A restart is an interruption, not the end of a session (INTERRUPT, CONTINUOUS): a session the service left
open, by kill -9 or an orderly stop, is taken up again at the next start when it is recent enough, with the
break recorded and explained; an older one is closed."""

from __future__ import annotations

import time
from pathlib import Path

from central.store import FileStore
from evidence.supervisor import Supervisor
from evidence.verify import verify_session
from firmware_py.crash_trials import kill9_and_resume
from firmware_py.rig import start_receiver
from firmware_py.service import Service, hal_settings
from firmware_py.state_machine import State
from hal.buttons.base import ButtonName
from hal.factory import build_hal
from mqtt.alert_outbox import AlertOutbox
from mqtt.broker import LocalBroker
from tests.conftest import fast_configs, make_rig, wait_until
from tests.firmware_py.test_interrupt import body, stop_and_upload
from tests.media import entries, loud_fraction


def test_killed_service_resumes_the_same_session_on_restart__INTERRUPT(tmp_path: Path, broker: LocalBroker) -> None:
    outcome = kill9_and_resume(tmp_path, broker.port)
    assert outcome.returncodes == (-9, 0), outcome.log_tail
    log = entries(outcome.central_dir)
    assert [e["kind"] for e in log].count("open") == 1 and log[-1]["kind"] == "close"
    [gap] = body(log, "interruption")
    assert gap["cause"] == "abrupt_stop" and gap["resumed_ns"] > gap["began_ns"]
    # What the killed run was writing is kept, sealed as recovered, and accounted for by the break.
    recovered = [s["file"] for s in body(log, "segment") if s.get("recovered")]
    assert gap["recovered_segments"] == recovered and recovered
    # The device asked for the reason, and the question is in the recording itself.
    [asked] = [b for b in body(log, "event", "spoken") if b["prompt"] == "interrupted_zh"]
    assert "设备意外停止或断电" in asked["text"]
    assert loud_fraction(outcome.central_dir, log, asked["started_ns"], asked["seconds"], 16000) > 0.5
    [explained] = body(log, "event", "explanation")
    assert asked["started_ns"] < explained["began_ns"] < explained["ended_ns"]
    assert log[-1]["body"]["reason_code"] == "stop_button"
    report = verify_session(outcome.central_dir)
    assert report.ok, report.findings


def test_a_stopped_service_leaves_the_session_open_and_takes_it_up_again__INTERRUPT(tmp_path: Path,
                                                                                    broker: LocalBroker) -> None:
    rig = make_rig(tmp_path, broker.port)
    try:
        rig.tap(ButtonName.START)
        rig.wait_state(State.RECORDING)
        session = rig.service.controller.session_id
        time.sleep(1.5)
    finally:
        rig.close()  # `systemctl restart recorder`, an update, a reboot
    assert session is not None
    spool_log = entries(rig.config.spool_dir / session)
    assert spool_log[-1]["kind"] != "close", "stopping the service ended the session"
    assert body(spool_log, "event", "service_stopping")
    rig = make_rig(tmp_path, broker.port)
    try:
        rig.wait_state(State.EXPLAINING, 20)
        assert rig.service.controller.session_id == session
        rig.wait_state(State.RECORDING, 60)
        central = stop_and_upload(rig)
    finally:
        rig.close()
    log = entries(central)
    [gap] = body(log, "interruption")
    assert gap["cause"] == "service_restart" and gap["recovered_segments"] == []
    assert [(s["source"], s["event"]) for s in body(log, "event", "state")][-5:] == [
        ("idle", "resume"), ("interrupted", "resumed"), ("explaining", "notice_again"), ("notice", "notice_done"),
        ("recording", "stop")]
    assert verify_session(central, trusted_key_b64=rig.service.identity.public_key_b64).ok


def test_an_open_session_older_than_the_limit_is_closed__INTERRUPT(tmp_path: Path, broker: LocalBroker) -> None:
    rig = make_rig(tmp_path, broker.port, session={"resume_within_minutes": 5})
    try:
        rig.tap(ButtonName.START)
        rig.wait_state(State.RECORDING)
        session = rig.service.controller.session_id
    finally:
        rig.close()
    config, central = fast_configs(tmp_path, broker.port, session={"resume_within_minutes": 5})
    hal = build_hal(hal_settings(config), Supervisor().spawn)
    assert hal.sim is not None
    hal.sim.clock.step(6 * 60)  # the device comes back six minutes later
    service = Service(config, hal=hal)
    started = False
    try:
        [closed] = service.recovery.closed
        assert closed.session == session and "longer than session.resume_within_minutes" in closed.why
        assert service.recovery.resumable is None
        log = entries(config.spool_dir / str(session))
        [gap] = body(log, "interruption")
        assert gap["cause"] == "service_restart" and gap["resumed_ns"] is None
        assert log[-1]["body"]["reason_code"] == "not_resumed"
        assert verify_session(config.spool_dir / str(session)).ok
        # Central is told, with what the officers' written explanation needs; the alert waits on disk for
        # central's acknowledgement, so a restart before it comes sends it again.
        [alert] = service.alerts.waiting()
        assert (alert.kind, alert.session, alert.cause) == ("not_resumed", session, "service_restart")
        # The entry's officers are sealed to central's key; the alert names them as the device knows them.
        assert closed.opening.sealed is not None and closed.opening.officers == ()
        assert alert.interrupted_at == gap["began_wall"]
        assert [(o.name, o.certificate) for o in alert.officers] == [(o.name, o.certificate)
                                                                    for o in config.session.officers]
        assert alert.signed_by(service.identity.public_key_b64)
        assert [a.id for a in AlertOutbox(config.device.state_dir / "alerts", 1.0).waiting()] == [alert.id]
        assert [a["id"] for a in service.health()["alerts"]] == [alert.id]  # in the retained status meanwhile
        # Started, the device sends it, and central keeps and acknowledges it.
        store = FileStore(central.receiver.store_dir)
        store.enroll(config.device.id, service.identity.public_key_b64)
        receiver = start_receiver(central, store)
        try:
            service.start()
            started = True
            assert wait_until(lambda: not service.alerts.waiting(), 30), "central never acknowledged the alert"
            assert [kept.alert for kept in store.alerts()] == [alert]
        finally:
            receiver.stop()
    finally:
        if started:
            service.stop()  # which closes the hardware too
        else:
            service.hal.close()
