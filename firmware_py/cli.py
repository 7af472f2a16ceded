"""The `recorder` command: run, demo, receiver, verify, status."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from capture import layout
from capture.errors import CaptureError
from capture.spool import Spool
from capture.verify import Report, verify_session
from firmware_py import config as config_mod
from firmware_py import scenario as scenario_mod
from firmware_py.errors import RecorderError
from hal.buttons.base import ButtonName
from hal.errors import HalError
from mqtt.errors import MqttError
from provisioning.errors import ProvisioningError

DEFAULT_CONFIG = Path("/etc/recorder/recorder.toml")
_EXPECTED = (RecorderError, CaptureError, HalError, MqttError, ProvisioningError)


def _load_config(path: Path | None) -> config_mod.Config:
    if path is None:
        return config_mod.load(DEFAULT_CONFIG) if DEFAULT_CONFIG.exists() else config_mod.from_dict({})
    return config_mod.load(path)


def _wait_for_signal(stop: threading.Event) -> None:
    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def cmd_run(args: argparse.Namespace) -> int:
    from firmware_py.service import Service, hal_settings, wait_for_state
    from hal.factory import build_hal

    cfg = _load_config(args.config)
    if args.check_config:
        print(f"configuration OK: device {cfg.device.id}, room {cfg.device.room}, backend {cfg.hal.backend}, "
              f"broker {cfg.mqtt.host}:{cfg.mqtt.port}, spool {cfg.spool_dir}")
        return 0
    steps = scenario_mod.load(args.scenario) if args.scenario else None
    backend = args.hal or cfg.hal.backend
    if steps is not None and backend != "sim":
        raise RecorderError("--scenario drives simulated hardware: use it with --hal sim")
    service = Service(cfg, build_hal(hal_settings(cfg, backend)))
    stop = threading.Event()
    _wait_for_signal(stop)
    service.start()
    try:
        if steps is not None:
            assert service.hal.sim is not None
            pins = cfg.hal.pins
            runner = scenario_mod.ScenarioRunner(
                steps, service.hal.sim.pins,
                {ButtonName.START: pins.start, ButtonName.STOP: pins.stop, ButtonName.MARK: pins.mark},
                lambda st, t: wait_for_state(service, st, t),
            )
            runner.start()
            while not (stop.is_set() or runner.finished.is_set()):
                stop.wait(0.2)
            service.spool.wait_drained(args.drain_seconds)
        else:
            stop.wait()
    finally:
        service.stop()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from firmware_py.demo import print_summary, run_demo

    broker = None
    if args.broker:
        host, _, port = args.broker.rpartition(":")
        broker = (host or "127.0.0.1", int(port))
    result = run_demo(args.seconds, args.workdir, broker)
    print_summary(result)
    return 0 if result.report.ok else 1


def cmd_receiver(args: argparse.Namespace) -> int:
    from mqtt.receiver import Receiver
    from mqtt.store import FileStore

    cfg = _load_config(args.config)
    store = FileStore(args.store or cfg.receiver.store_dir)
    if args.enroll:
        device, key = args.enroll
        if not layout.DEVICE_ID.match(device):
            raise RecorderError(f"--enroll: {device!r} is not a valid device id")
        from provisioning.identity import load_public_key_b64

        load_public_key_b64(key)
        store.enroll(device, key)
        print(f"enrolled {device}")
        return 0
    receiver = Receiver(store, args.host or cfg.mqtt.host, args.port or cfg.mqtt.port, cfg.mqtt.topic_prefix,
                        cfg.receiver.client_id)
    stop = threading.Event()
    _wait_for_signal(stop)
    receiver.start()
    logging.getLogger(__name__).info("receiver storing into %s", store.root)
    stop.wait()
    receiver.stop()
    return 0


def _session_dirs(path: Path) -> list[Path]:
    if (path / layout.ENTRIES).is_dir():
        return [path]
    found = sorted(p.parent for p in path.rglob(layout.ENTRIES) if p.is_dir())
    if not found:
        raise RecorderError(f"{path}: no session found (a session folder has an entries/ subfolder)")
    return found


def cmd_verify(args: argparse.Namespace) -> int:
    reports: list[Report] = [verify_session(d, args.key, args.decode) for d in _session_dirs(args.path)]
    if args.json:
        print(json.dumps([r.as_json() for r in reports], indent=1, ensure_ascii=False))
    else:
        for r in reports:
            if r.ok:
                anchor = "" if r.anchored else " (key not anchored: pass --key to check it is the device's)"
                print(f"OK      {r.session_dir}: {r.segments} segments, {r.entries} entries, "
                      f"{r.duration_ns / 1e9:.1f} s{anchor}")
            else:
                print(f"FAILED  {r.session_dir}: {r.findings[0]}")
    return 0 if all(r.ok for r in reports) else 1


def cmd_identity(args: argparse.Namespace) -> int:
    from provisioning.identity import DeviceIdentity

    cfg = _load_config(args.config)
    identity = DeviceIdentity.load_or_create(cfg.keys_dir)
    if args.json:
        print(json.dumps({"device": cfg.device.id, "public_key": identity.public_key_b64}))
    else:
        print(f"device      {cfg.device.id}")
        print(f"public key  {identity.public_key_b64}")
        print(f"enroll with: recorder receiver --enroll {cfg.device.id} {identity.public_key_b64}")
    return 0


def _alive(pid: object) -> bool:
    return isinstance(pid, int) and Path(f"/proc/{pid}").exists()


def cmd_status(args: argparse.Namespace) -> int:
    cfg = _load_config(args.config)
    status_file = cfg.device.state_dir / "status.json"
    status = json.loads(status_file.read_text()) if status_file.exists() else {}
    spool = Spool(cfg.spool_dir)
    backlog = spool.backlog()
    report = {
        "device": cfg.device.id,
        "state": status.get("state", "not running") if _alive(status.get("pid")) else "not running",
        "session": status.get("session"),
        "last_fault": status.get("last_fault"),
        "backlog_entries": backlog.entries,
        "backlog_bytes": backlog.bytes,
        "oldest_unreceipted_s": backlog.oldest_age_s,
        "status_written": status.get("time"),
    }
    if args.json:
        print(json.dumps(report, indent=1, ensure_ascii=False))
    else:
        for key, value in report.items():
            print(f"{key:22} {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recorder", description="Interview-room recorder gateway.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the recorder service")
    run.add_argument("--config", type=Path, help=f"configuration file (default {DEFAULT_CONFIG} if present)")
    run.add_argument("--hal", choices=["pi", "sim", "auto"], help="override hal.backend")
    run.add_argument("--scenario", type=Path, help="drive the simulated hardware from a scenario file, then exit")
    run.add_argument("--drain-seconds", type=float, default=60.0,
                     help="with --scenario: how long to wait for central's receipts before exiting")
    run.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="one whole session on simulated hardware, verified at central")
    demo.add_argument("--seconds", type=float, default=8.0, help="recording time after START (default 8)")
    demo.add_argument("--workdir", type=Path, help="where all state goes (default: a new temporary folder)")
    demo.add_argument("--broker", help="HOST:PORT of an existing broker instead of starting Mosquitto")
    demo.set_defaults(func=cmd_demo)

    receiver = sub.add_parser("receiver", help="run the central receiver")
    receiver.add_argument("--config", type=Path)
    receiver.add_argument("--store", type=Path, help="central store folder (default receiver.store_dir)")
    receiver.add_argument("--host")
    receiver.add_argument("--port", type=int)
    receiver.add_argument("--enroll", nargs=2, metavar=("DEVICE", "KEY"),
                          help="enroll a device's base64 Ed25519 public key and exit")
    receiver.set_defaults(func=cmd_receiver)

    verify = sub.add_parser("verify", help="check a stored session offline (spool, central copy or export)")
    verify.add_argument("path", type=Path, help="a session folder, or a folder holding sessions")
    verify.add_argument("--key", help="the device's base64 public key to anchor the signatures to")
    verify.add_argument("--decode", action="store_true", help="also decode every segment")
    verify.add_argument("--json", action="store_true", help="machine-readable report")
    verify.set_defaults(func=cmd_verify)

    identity = sub.add_parser("identity", help="the device's signing key, for enrolling it at central")
    identity.add_argument("--config", type=Path)
    identity.add_argument("--json", action="store_true")
    identity.set_defaults(func=cmd_identity)

    status = sub.add_parser("status", help="the device's state and upload backlog")
    status.add_argument("--config", type=Path)
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args))
    except _EXPECTED as err:
        print(f"recorder {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
