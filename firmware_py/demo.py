"""`recorder demo`: one whole session on simulated hardware, from button to verified central copy."""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capture.verify import Report, verify_session
from firmware_py import config as config_mod
from firmware_py.central import build_receiver, central_key_sections
from firmware_py.errors import RecorderError
from firmware_py.scenario import ScenarioRunner, demo_steps
from firmware_py.service import Service, wait_for_state
from hal.buttons.base import ButtonName
from mqtt.broker import LocalBroker, free_port
from mqtt.store import FileStore
from mqtt.tls import TlsFiles
from provisioning.ca import CertificateAuthority, Issued

log = logging.getLogger(__name__)


@dataclass
class DemoResult:
    session_id: str
    central_dir: Path
    report: Report
    upload_wait_s: float


def demo_config(workdir: Path, host: str, port: int, overrides: dict[str, Any] | None = None) -> config_mod.Config:
    keys = central_key_sections(workdir / "central-key.pem")
    data: dict[str, Any] = {
        "device": {"state_dir": str(workdir / "device"), **keys["device"]},
        "hal": {"backend": "sim"},
        "mqtt": {"host": host, "port": port},
        "receiver": {"store_dir": str(workdir / "central"), **keys["receiver"]},
    }
    for section, values in (overrides or {}).items():
        data.setdefault(section, {}).update(values)
    return config_mod.from_dict(data)


def demo_pki(directory: Path, cfg: config_mod.Config) -> tuple[config_mod.Config, config_mod.Config, TlsFiles]:
    """A CA in `directory` with certificates for the broker, `cfg`'s device and its receiver: the device's
    configuration, the receiver's (each with its own [mqtt.tls]) and the broker's files."""
    ca, _ = CertificateAuthority.load_or_create(directory)
    broker = ca.issue_broker()

    def with_tls(issued: Issued) -> config_mod.Config:
        tls = TlsFiles(ca.ca_file, issued.cert, issued.key)
        return config_mod.replace(cfg, mqtt=dataclasses.replace(cfg.mqtt, tls=tls))

    return (with_tls(ca.issue_device(cfg.device.id)), with_tls(ca.issue_receiver(cfg.receiver.client_id)),
            TlsFiles(ca.ca_file, broker.cert, broker.key))


def run_demo(seconds: float, workdir: Path | None, broker_addr: tuple[str, int] | None = None,
             overrides: dict[str, Any] | None = None, tls: bool = False) -> DemoResult:
    if tls and broker_addr is not None:
        raise RecorderError("--tls makes a throwaway CA that only the demo's own broker trusts: "
                            "it cannot be used with --broker")
    workdir = workdir or Path(tempfile.mkdtemp(prefix="recorder-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = demo_config(workdir, *(broker_addr or ("127.0.0.1", free_port())), overrides)
    receiver_cfg, broker_tls = cfg, None
    if tls:
        cfg, receiver_cfg, broker_tls = demo_pki(workdir / "certs", cfg)
    store = FileStore(cfg.receiver.store_dir)
    receiver = build_receiver(receiver_cfg, store)
    broker: LocalBroker | None = None
    if broker_addr is None:
        broker = LocalBroker(workdir / "broker", port=cfg.mqtt.port, tls=broker_tls,
                             receivers=[cfg.receiver.client_id], prefix=cfg.mqtt.topic_prefix)
        broker.start()
        mode = f", mutual TLS with certificates from {workdir / 'certs'}" if tls else ""
        print(f"broker     mosquitto on {broker.host}:{broker.port}{mode}")
    service: Service | None = None
    try:
        receiver.start()
        if not receiver.connected.wait(10):
            raise RecorderError(f"the receiver could not reach the broker at {cfg.mqtt.host}:{cfg.mqtt.port}")
        service = Service(cfg)
        store.enroll(cfg.device.id, service.identity.public_key_b64)
        print(f"device     {cfg.device.id} ({service.hal.backend} hardware), spool {cfg.spool_dir}")
        print(f"central    {cfg.receiver.store_dir}")
        service.start()
        assert service.hal.sim is not None
        pins = cfg.hal.pins
        runner = ScenarioRunner(demo_steps(seconds, cfg.session.stop_hold_seconds), service.hal.sim.pins,
                                {ButtonName.START: pins.start, ButtonName.STOP: pins.stop, ButtonName.MARK: pins.mark},
                                lambda st, t: wait_for_state(service, st, t) if service else False)
        print(f"session    START pressed; recording {seconds:g} s with a MARK; then STOP held")
        runner.start()
        runner.finished.wait()
        if runner.failure:
            raise RecorderError(f"demo session: {runner.failure}; last fault: {service.controller.last_fault}")
        closed = service.controller.timings.sessions_closed
        if not closed:
            raise RecorderError(f"no session was recorded: {service.controller.last_fault or 'see the log'}")
        session_id = closed[-1]
        t0 = time.monotonic()
        if not service.spool.wait_drained(120):
            raise RecorderError("central did not receipt every entry within 120 s; see the log")
        waited = time.monotonic() - t0
        # The working copies follow the receipts; wait for them before showing central's copy.
        if not receiver.settle(60):
            raise RecorderError("central did not finish the working copies within 60 s; see the log")
        central_dir = store.session_dir(cfg.device.id, session_id)
        report = verify_session(central_dir, trusted_key_b64=store.device_key(cfg.device.id), decode=True,
                                central_key=receiver.central_key)
        return DemoResult(session_id, central_dir, report, waited)
    finally:
        if service is not None:
            service.stop()
        receiver.stop()
        if broker is not None:
            broker.stop()


def print_summary(result: DemoResult) -> None:
    r = result.report
    print(f"uploaded   every entry receipted by central ({result.upload_wait_s:.1f} s after the session closed)")
    print(f"stored     {result.central_dir}")
    working = sorted((result.central_dir / "plain").glob("*.ts"))
    if working:
        print(f"sealed     every segment encrypted to central's key on the device; central decrypted "
              f"{len(working)} working copies into plain/ and checked each against its seal")
    print(f"verified   {'OK' if r.ok else 'FAILED'}: {r.segments} segments, {r.entries} ledger entries, "
          f"{r.media_bytes / 1e6:.2f} MB, {r.duration_ns / 1e9:.1f} s of continuous recording")
    for finding in r.findings:
        print(f"problem    {finding}")
