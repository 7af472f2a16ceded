"""`recorder demo`: one whole session on simulated hardware, from button to verified central copy."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capture.ledger import read_entries
from capture.probe import decodes
from central.config import CentralConfig
from evidence.entry import EVENT, Entry
from evidence.reasons import INTERRUPTION_REASONS
from evidence.verify import Report, verify_session
from firmware_py import rig as rig_mod
from firmware_py.errors import ServiceError
from firmware_py.scenario import INTERRUPT_DEMO_FAULT_S, ScenarioRunner, demo_steps
from firmware_py.service import wait_for_state
from hal.buttons.base import ButtonName
from mqtt.broker import LocalBroker, free_port

log = logging.getLogger(__name__)


@dataclass
class DemoResult:
    session_id: str
    central_dir: Path
    report: Report
    upload_wait_s: float
    working_copies: int
    """Segments central decrypted into a viewing copy (checked against the seal)."""
    breaks: list[str] = field(default_factory=list)
    """Each interruption of the session, as its ledger at central tells it."""
    central: CentralConfig | None = None
    """Central's configuration, for the web application over the demo's store."""
    workdir: Path | None = None
    device: str = ""
    unit: str = ""


@dataclass(frozen=True)
class DemoWeb:
    """Where the demo's session can be watched in a browser, and the account to log in with."""

    config_file: Path
    url: str
    username: str
    password: str


def prepare_web(result: DemoResult) -> DemoWeb:
    """The web application's configuration over the demo's store, and a supervisor of the demo's unit (who
    views without an approval), with a fresh password."""
    import secrets

    from central import config as central_config
    from central.web.server import prepare

    assert result.central is not None and result.workdir is not None
    config_file = rig_mod.web_config_file(result.central, result.workdir / "central-web.toml")
    cfg = central_config.load(config_file)
    prepare(cfg, cfg.receiver.store_dir)
    from central.web.views.accounts import save_account  # its models need Django set up first

    password = secrets.token_urlsafe(12)
    save_account("demo", "supervisor", result.unit, password, True)
    url = f"http://{cfg.web.listen}:{cfg.web.port}/s/{result.device}/{result.session_id}/"
    return DemoWeb(config_file, url, "demo", password)


INTERRUPT_SETTINGS: dict[str, dict[str, Any]] = {"session": {"explanation_seconds": 5.0, "menu_seconds": 3.0}}
"""The demo's officer says nothing and presses nothing after the break: short waits keep the demo short."""


def run_demo(seconds: float, workdir: Path | None, broker_addr: tuple[str, int] | None = None,
             device: dict[str, dict[str, Any]] | None = None, tls: bool = False, interrupt: bool = False) -> DemoResult:
    if tls and broker_addr is not None:
        raise ServiceError("--tls makes a throwaway CA that only the demo's own broker trusts: "
                           "it cannot be used with --broker")
    workdir = workdir or Path(tempfile.mkdtemp(prefix="recorder-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    host, port = broker_addr or ("127.0.0.1", free_port())
    if interrupt:
        device = {section: {**INTERRUPT_SETTINGS.get(section, {}), **(device or {}).get(section, {})}
                  for section in {*INTERRUPT_SETTINGS, *(device or {})}}
    cfg, central = rig_mod.configs(workdir, host, port, device)
    ca = None
    if tls:
        cfg, central, ca = rig_mod.with_pki(workdir / "certs", cfg, central)
    broker: LocalBroker | None = None
    if broker_addr is None:
        broker = (rig_mod.pki_broker(workdir / "broker", ca, cfg.mqtt.port, cfg.mqtt.topic_prefix) if ca is not None
                  else LocalBroker(workdir / "broker", port=cfg.mqtt.port))
        broker.start()
        mode = f", mutual TLS with certificates from {workdir / 'certs'}" if tls else ""
        print(f"broker     mosquitto on {broker.host}:{broker.port}{mode}")
    rig: rig_mod.Rig | None = None
    try:
        try:
            rig = rig_mod.make_rig(cfg, central)
        except TimeoutError as err:
            raise ServiceError(str(err)) from err
        service = rig.service
        print(f"device     {cfg.device.id} ({service.hal.backend} hardware), spool {cfg.spool_dir}")
        print(f"central    {central.receiver.store_dir}")
        assert service.hal.sim is not None
        pins = cfg.hal.pins
        runner = ScenarioRunner(demo_steps(seconds, cfg.session.stop_hold_seconds, interrupt), service.hal.sim,
                                {ButtonName.START: pins.start, ButtonName.STOP: pins.stop, ButtonName.MARK: pins.mark},
                                lambda st, t: wait_for_state(service, st, t))
        print(f"session    START pressed; recording {seconds:g} s with a MARK; then STOP held")
        if interrupt:
            print(f"break      the camera fails for {INTERRUPT_DEMO_FAULT_S:g} s at {seconds / 2:g} s; the device "
                  "says so, resumes, asks for the reason and gives the notice again")
        runner.start()
        runner.finished.wait()
        if runner.failure:
            raise ServiceError(f"demo session: {runner.failure}; last fault: {service.controller.last_fault}")
        closed = service.controller.timings.sessions_closed
        if not closed:
            raise ServiceError(f"no session was recorded: {service.controller.last_fault or 'see the log'}")
        session_id = closed[-1]
        t0 = time.monotonic()
        if not service.spool.wait_drained(120):
            raise ServiceError("central did not receipt every entry within 120 s; see the log")
        waited = time.monotonic() - t0
        # The working copies follow the receipts; wait for them before showing central's copy.
        try:
            central_dir = rig.central_dir(session_id)
        except TimeoutError as err:
            raise ServiceError(f"central did not finish the working copies: {err}") from err
        assert rig.receiver is not None
        files = rig.store.session_files(cfg.device.id, session_id)
        report = verify_session(files, trusted_key_b64=rig.store.device_key(cfg.device.id), decode=decodes,
                                central_key=rig.receiver.central_key)
        copies = sum(rig.store.has_working_copy(cfg.device.id, session_id, name) for name in files.media_names())
        return DemoResult(session_id, central_dir, report, waited, copies, _breaks(read_entries(central_dir)),
                          central, workdir, cfg.device.id, cfg.device.unit)
    finally:
        if rig is not None:
            rig.close()
        if broker is not None:
            broker.stop()


def _breaks(log: list[Entry]) -> list[str]:
    """Each interruption: its cause, its length, the officer's explanation and reason, as the ledger says."""
    told: list[str] = []
    for entry in log:
        gap = entry.interruption
        if gap is None or gap.began_ns is None:
            continue
        length = "not resumed" if gap.resumed_ns is None else f"{(gap.resumed_ns - gap.began_ns) / 1e9:.1f} s"
        events = [e.body for e in log if e.kind == EVENT and e.body.get("interruption") == entry.seq]
        explained = [b for b in events if b.get("name") == "explanation"]
        chosen = [b for b in events if b.get("name") == "reason"]
        text = f"entry {entry.seq}: {gap.cause} ({INTERRUPTION_REASONS[gap.cause].zh}), {length}"
        if explained:
            b = explained[0]
            text += f"; explanation recorded {(b['ended_ns'] - b['began_ns']) / 1e9:.1f} s from {b['began_wall']}"
        if chosen:
            text += f"; reason {chosen[0]['code']} ({chosen[0]['chosen']})"
        told.append(text)
    return told


def print_summary(result: DemoResult) -> None:
    r = result.report
    print(f"uploaded   every entry receipted by central ({result.upload_wait_s:.1f} s after the session closed)")
    print(f"stored     {result.central_dir}")
    if result.working_copies:
        print(f"sealed     every segment encrypted to central's key on the device; central decrypted "
              f"{result.working_copies} working copies and checked each against its seal")
    for told in result.breaks:
        print(f"break      {told}")
    print(f"verified   {'OK' if r.ok else 'FAILED'}: {r.segments} segments, {r.entries} ledger entries, "
          f"{r.media_bytes / 1e6:.2f} MB, {r.duration_ns / 1e9:.1f} s of continuous recording")
    for finding in r.findings:
        print(f"problem    {finding}")


@dataclass(frozen=True)
class DemoExport:
    image: Path
    megabytes: float
    verdict: str
    """The last line the package's own verifier printed, run on bare Python (no site packages)."""
    ok: bool


def export_demo(result: DemoResult) -> DemoExport:
    """The legal office's evidence package of the demo's session (ARCHIVE): the ISO image central keeps, then
    extracted and checked by the verifier it carries, on a Python without any installed package, as a
    court's expert would."""
    import subprocess
    import sys

    from central.build import build_audit, central_key
    from central.export.package import export_session
    from central.register import Actor, Registers
    from central.store import FileStore

    assert result.central is not None and result.workdir is not None
    store = FileStore(result.central.receiver.store_dir)
    audit = build_audit(result.central, store)
    done = export_session(store, Registers(store, audit), central_key(result.central), result.device,
                          result.session_id, Actor("demo-legal", "legal"), "法制部门 legal office (demo)",
                          {"request": 0, "reason": "demo", "approved_by": "demo", "approved_at": ""},
                          result.central.central.zone)
    disc = result.workdir / "disc"
    extracted = subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(done.image), "-extract", "/", str(disc)],
                               capture_output=True, text=True, timeout=300)
    if extracted.returncode != 0:
        raise ServiceError(f"the evidence package could not be read back with xorriso: {extracted.stderr[-500:]}")
    # -I -S: no user or site packages (so no `cryptography`): the verifier must stand on the standard library.
    checked = subprocess.run([sys.executable, "-I", "-S", "verifier/verify_export.py", ".", "--central-key",
                              audit.public_key_b64], cwd=disc, capture_output=True, text=True, timeout=600)
    lines = checked.stdout.strip().splitlines() or [checked.stderr.strip()[-300:]]
    return DemoExport(done.image, done.bytes / 1e6, lines[-1], checked.returncode == 0)
