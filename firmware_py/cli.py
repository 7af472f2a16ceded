"""The `recorder` command: run, demo, receiver, verify, status."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import signal
import sqlite3
import sys
import threading
import time
import unicodedata
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
from mqtt.index import (
    DEFAULT_LIMIT_HOURS,
    DEFAULT_WARN_HOURS,
    INDEX_FILE,
    Deadline,
    Query,
    SessionIndex,
    SessionRow,
    Standing,
)
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
    result = run_demo(args.seconds, args.workdir, broker, tls=args.tls)
    print_summary(result)
    return 0 if result.report.ok else 1


def cmd_receiver(args: argparse.Namespace) -> int:
    from firmware_py.central import build_receiver
    from mqtt.store import FileStore

    cfg = _load_config(args.config)
    _check_receiver_options(args)
    if args.action != "serve":
        return cmd_receiver_index(args, args.store or cfg.receiver.store_dir, cfg.upload)
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
    receiver = build_receiver(cfg, store, args.host, args.port)
    stop = threading.Event()
    _wait_for_signal(stop)
    receiver.start()
    logging.getLogger(__name__).info("receiver storing into %s", store.root)
    stop.wait()
    receiver.stop()
    return 0


RECEIVER_ACTIONS = ("serve", "sessions", "late", "reindex")
_RECEIVER_OPTIONS = {
    "serve": ("host", "port", "enroll"),
    "sessions": ("device", "officer", "unit", "case", "party", "start", "end", "json"),
    "late": ("limit_hours", "warn_hours", "json"),
    "reindex": (),
}
_FLAGS = {"start": "--from", "end": "--to"}


def _check_receiver_options(args: argparse.Namespace) -> None:
    # A filter typed without `sessions` would otherwise start a receiver on the default store.
    allowed = _RECEIVER_OPTIONS[args.action]
    for options in _RECEIVER_OPTIONS.values():
        for name in options:
            if name not in allowed and getattr(args, name) not in (None, False):
                flag = _FLAGS.get(name, "--" + name.replace("_", "-"))
                raise RecorderError(f"{flag} does not go with `recorder receiver {args.action}`")


def _when(text: str, flag: str, end: bool) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError as err:
        raise RecorderError(f"{flag}: {text!r} is not an ISO 8601 date or time "
                            "(for example 2026-11-22 or 2026-11-22T08:30+08:00)") from err
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        pass
    else:
        if end:
            value += dt.timedelta(days=1)  # --to a date takes in the whole of that day
    return value if value.tzinfo is not None else value.astimezone()  # no offset: this computer's time


def _deadline(args: argparse.Namespace, policy: config_mod.UploadConfig) -> Deadline:
    # The configuration's [upload] section by default: the devices warn by the same thresholds.
    limit = policy.deadline_hours if args.limit_hours is None else args.limit_hours
    try:
        warnings = (policy.warn_hours if args.warn_hours is None
                    else tuple(float(h) for h in args.warn_hours.split(",")))
    except ValueError as err:
        raise RecorderError(f"--warn-hours: {args.warn_hours!r} is not a comma-separated list of hours") from err
    if limit <= 0 or any(h <= 0 for h in warnings):
        raise RecorderError("--limit-hours and --warn-hours must be positive")
    return Deadline(dt.timedelta(hours=limit), tuple(dt.timedelta(hours=h) for h in warnings))


def _width(text: str) -> int:
    # Chinese characters take two columns in a terminal.
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(_width(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell + " " * (w - _width(cell)) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def _local(device_time: str) -> str:
    return device_time[:19].replace("T", " ")  # the device's own local time, as the room saw it


def _standing_text(standing: Standing) -> str:
    if standing.status == "warning":
        return f"warning: {standing.hours:.1f} h, past {standing.threshold_hours:g} h"
    if standing.status in ("late", "at risk"):
        return f"{standing.status}: {standing.hours:.1f} h"
    return "no" if standing.status == "on time" else standing.status


def _print_sessions(rows: list[SessionRow], now: dt.datetime, deadline: Deadline) -> None:
    table = [["session", "device", "unit", "officers", "case", "opened", "closed", "segments", "MB", "late?"]]
    for r in rows:
        closed = "-" if r.closed_at is None else _local(r.closed_at)
        if r.closed_at is not None and r.closed_at[:10] == r.opened_at[:10]:
            closed = closed[11:]
        table.append([r.session, r.device, r.unit, ", ".join(o.name for o in r.officers), r.case or r.matter,
                      _local(r.opened_at), closed + (" (interrupted)" if r.interrupted else ""), str(r.segments),
                      f"{r.media_bytes / 1e6:.2f}", _standing_text(r.standing(now, deadline))])
    for line in _table(table):
        print(line)


def _print_late(found: list[tuple[SessionRow, Standing]]) -> None:
    device = None
    for row, standing in found:
        if row.device != device:
            device = row.device
            print(device)
        if row.closed_at is not None:
            what = (f"closed {_local(row.closed_at)}; its last entry was stored {standing.hours:.1f} h later, "
                    f"{row.last_stored.isoformat(timespec='seconds')}")
        else:
            what = (f"not closed; {row.entries} entries received, the last written {_local(row.last_at)} "
                    f"({standing.hours:.1f} h ago), stored {row.last_stored.isoformat(timespec='seconds')}")
        print(f"  {row.session}  {_standing_text(standing)}  opened {_local(row.opened_at)}; {what}")


def cmd_receiver_index(args: argparse.Namespace, store_root: Path, policy: config_mod.UploadConfig) -> int:
    """`sessions`, `late` and `reindex`: read (or rebuild) the session index next to the store."""
    if not (store_root / "sessions").is_dir():
        raise RecorderError(f"{store_root}: not a central store (it has no sessions/ folder)")
    try:
        index = SessionIndex(store_root)
    except (sqlite3.Error, OSError) as err:
        raise RecorderError(f"cannot open {store_root / INDEX_FILE}: {err}; if it is damaged, delete "
                            f"{INDEX_FILE}* there and run `recorder receiver reindex`") from err
    now = dt.datetime.now(dt.UTC)
    try:
        if args.action == "reindex":
            print(f"indexed {index.rebuild()} sessions from {store_root / 'sessions'} into {index.path}")
            return 0
        deadline = _deadline(args, policy)
        if args.action == "late":
            found = index.late(now, deadline)
            if args.json:
                print(json.dumps([row.as_json(now, deadline) for row, _ in found], indent=1, ensure_ascii=False))
            else:
                _print_late(found)
            # Non-zero only while something is still missing, so a cron job can alert on it; a session
            # that arrived late is listed for the record but needs no action.
            return 1 if any(row.closed_at is None for row, _ in found) else 0
        query = Query(device=args.device, officer=args.officer, unit=args.unit, case=args.case, party=args.party,
                      start=_when(args.start, "--from", False) if args.start else None,
                      end=_when(args.end, "--to", True) if args.end else None)
        rows = index.sessions(query)
        if args.json:
            print(json.dumps([row.as_json(now, deadline) for row in rows], indent=1, ensure_ascii=False))
        elif rows:
            _print_sessions(rows, now, deadline)
        else:
            print("no matching sessions")
        return 0
    except sqlite3.Error as err:
        raise RecorderError(f"session index {index.path}: {err}") from err
    finally:
        index.close()


def _session_dirs(path: Path) -> list[Path]:
    if (path / layout.ENTRIES).is_dir():
        return [path]
    found = sorted(p.parent for p in path.rglob(layout.ENTRIES) if p.is_dir())
    if not found:
        raise RecorderError(f"{path}: no session found (a session folder has an entries/ subfolder)")
    return found


def cmd_verify(args: argparse.Namespace) -> int:
    from provisioning.central_key import load_central_key

    central = load_central_key(args.decrypt_key) if args.decrypt_key else None
    reports: list[Report] = [verify_session(d, args.key, args.decode, central) for d in _session_dirs(args.path)]
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
            for note in r.notes:
                print(f"        note: {note}")
    return 0 if all(r.ok for r in reports) else 1


def cmd_central_key(args: argparse.Namespace) -> int:
    from provisioning.central_key import create_central_key

    public = create_central_key(args.out)
    print(f"private key  {args.out} (keep it at central only)")
    print(f"public key   {public}")
    print(f'devices: [device] central_public_key = "{public}"')
    return 0


def cmd_certs(args: argparse.Namespace) -> int:
    from provisioning.ca import CertificateAuthority, broker_hosts

    ca, created = CertificateAuthority.load_or_create(args.out)
    print(f"CA         {ca.ca_file} ({'created' if created else 'reused'}; keep {args.out / 'ca.key'} off the network)")
    broker = ca.broker_paths()
    # An existing broker certificate is kept unless new names are asked for: re-issuing it would make a
    # technician re-deploy the broker for nothing.
    if args.broker_host or not broker.cert.exists():
        ca.issue_broker(args.broker_host)
        print(f"broker     {broker.cert}, {broker.key} (valid for {', '.join(broker_hosts(args.broker_host))})")
    for role, names, issue in (("device", args.device, ca.issue_device), ("receiver", args.receiver,
                                                                          ca.issue_receiver)):
        for name in names:
            issued = issue(name)
            print(f"{role:10} {name}: [mqtt.tls] ca_file = \"{ca.ca_file}\", cert_file = \"{issued.cert}\", "
                  f"key_file = \"{issued.key}\"")
    return 0


def cmd_broker_config(args: argparse.Namespace) -> int:
    from capture.durable import atomic_write
    from mqtt.broker_config import BrokerSettings, render_acl, render_conf
    from mqtt.tls import TlsFiles
    from provisioning.ca import CertificateAuthority

    if not 1 <= args.port <= 65535:
        raise RecorderError(f"--port: must be 1..65535, got {args.port}")
    prefix = config_mod.from_dict({"mqtt": {"topic_prefix": args.prefix}}).mqtt.topic_prefix
    ca = CertificateAuthority.load(args.certs.resolve())
    broker = ca.broker_paths()
    if not broker.cert.exists():
        raise RecorderError(f"{broker.cert} is missing: issue it with `recorder certs --out {args.certs}`")
    receivers = ca.receivers()
    if not receivers:
        raise RecorderError(f"no receiver certificate in {args.certs}: without one nothing may read entries or "
                            f"write receipts; issue one with `recorder certs --out {args.certs} --receiver NAME`")
    out = args.out.resolve()
    acl = (args.acl or out.with_suffix(".acl")).resolve()
    if acl == out:
        raise RecorderError(f"--acl: {acl} is the configuration file itself; name another")
    settings = BrokerSettings(port=args.port, bind=args.bind, tls=TlsFiles(ca.ca_file, broker.cert, broker.key),
                              acl_file=acl, persistence_dir=args.persistence_dir)
    atomic_write(acl, render_acl(prefix, receivers).encode())
    atomic_write(out, render_conf(settings).encode())
    print(f"ACL        {acl}: devices by certificate CN under {prefix}/; receivers {', '.join(receivers)}")
    print(f"config     {out}: port {args.port}, mutual TLS with {ca.ca_file}")
    print(f"run        mosquitto -c {out}  (its user must be able to read {broker.key})")
    return 0


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
    from firmware_py.deadlines import Level, assess

    spool = Spool(cfg.spool_dir)
    backlog = spool.backlog()
    alerts = [a.as_dict() for a in assess(spool.deadlines(), time.time(), cfg.upload) if a.level is not Level.OK]
    report = {
        "device": cfg.device.id,
        "state": status.get("state", "not running") if _alive(status.get("pid")) else "not running",
        "session": status.get("session"),
        "last_fault": status.get("last_fault"),
        "backlog_entries": backlog.entries,
        "backlog_bytes": backlog.bytes,
        "oldest_unreceipted_s": backlog.oldest_age_s,
        "status_written": status.get("time"),
        "upload_alerts": alerts,
    }
    if args.json:
        print(json.dumps(report, indent=1, ensure_ascii=False))
    else:
        for key, value in report.items():
            if key != "upload_alerts":
                print(f"{key:22} {value}")
        for alert in alerts:
            print(f"{'UPLOAD ' + alert['level'].upper():22} {alert['session']}: ended "
                  f"{alert['hours_since_finished']} h ago, {alert['pending_entries']} entries not receipted, "
                  f"{alert['hours_left']} h left to the deadline")
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
    demo.add_argument("--tls", action="store_true",
                      help="mutual TLS and the recorder ACL, with a throwaway CA in the work folder")
    demo.set_defaults(func=cmd_demo)

    receiver = sub.add_parser("receiver", help="run the central receiver; find stored sessions; late ones")
    receiver.add_argument("action", nargs="?", choices=RECEIVER_ACTIONS, default="serve",
                          help="serve (default): receive and store; sessions: list stored sessions; late: sessions "
                               "late or at risk of missing the upload deadline; reindex: rebuild the session index "
                               "from the stored files")
    receiver.add_argument("--config", type=Path)
    receiver.add_argument("--store", type=Path, help="central store folder (default receiver.store_dir)")
    receiver.add_argument("--host")
    receiver.add_argument("--port", type=int)
    receiver.add_argument("--enroll", nargs=2, metavar=("DEVICE", "KEY"),
                          help="enroll a device's base64 Ed25519 public key and exit")
    find = receiver.add_argument_group("sessions: every filter given must match; text matches if it contains "
                                       "the value")
    find.add_argument("--device", help="device number (exact)")
    find.add_argument("--officer", metavar="NAME_OR_CERT", help="an officer's name or certificate number")
    find.add_argument("--unit")
    find.add_argument("--case", help="case reference or matter")
    find.add_argument("--party")
    find.add_argument("--from", dest="start", metavar="ISO",
                      help="in use at or after this date or time (no offset: this computer's time zone)")
    find.add_argument("--to", dest="end", metavar="ISO", help="opened before this time, or by the end of this date")
    late = receiver.add_argument_group("late")
    late.add_argument("--limit-hours", type=float, metavar="H",
                      help="a recording must be at central this long after it ends (default upload.deadline_hours, "
                           f"{DEFAULT_LIMIT_HOURS:g})")
    late.add_argument("--warn-hours", metavar="H,H",
                      help="warn about incomplete sessions this old (default upload.warn_hours, "
                           f"{','.join(f'{h:g}' for h in DEFAULT_WARN_HOURS)})")
    receiver.add_argument("--json", action="store_true", help="sessions, late: machine-readable output")
    receiver.set_defaults(func=cmd_receiver)

    verify = sub.add_parser("verify", help="check a stored session offline (spool, central copy or export)")
    verify.add_argument("path", type=Path, help="a session folder, or a folder holding sessions")
    verify.add_argument("--key", help="the device's base64 public key to anchor the signatures to")
    verify.add_argument("--decode", action="store_true", help="also decode every segment")
    verify.add_argument("--decrypt-key", type=Path, metavar="PEM",
                        help="central's private key: decrypt sealed segments and check their plaintext")
    verify.add_argument("--json", action="store_true", help="machine-readable report")
    verify.set_defaults(func=cmd_verify)

    central_key = sub.add_parser("central-key", help="create (or show) central's encryption key pair")
    central_key.add_argument("--out", type=Path, required=True, help="where central's private key is kept")
    central_key.set_defaults(func=cmd_central_key)

    certs = sub.add_parser("certs", help="a test CA and TLS certificates for the broker, devices and receivers")
    certs.add_argument("--out", type=Path, required=True, help="the CA's folder (created, or reused if it has one)")
    certs.add_argument("--device", action="append", default=[], metavar="ID",
                       help="issue a client certificate with CN = this device id (repeatable)")
    certs.add_argument("--receiver", action="append", default=[], metavar="NAME",
                       help="issue a client certificate with CN = this receiver name (repeatable)")
    certs.add_argument("--broker-host", action="append", default=[], metavar="HOST",
                       help="(re-)issue the broker's certificate for this name or address too (repeatable)")
    certs.set_defaults(func=cmd_certs)

    broker_config = sub.add_parser("broker-config", help="mosquitto.conf and ACL for a mutual-TLS broker")
    broker_config.add_argument("--certs", type=Path, required=True,
                               help="the CA folder of `recorder certs`; its receiver certificates name the receivers")
    broker_config.add_argument("--port", type=int, default=8883, help="listener port (default 8883)")
    broker_config.add_argument("--out", type=Path, required=True, help="the Mosquitto configuration file to write")
    broker_config.add_argument("--acl", type=Path, help="the ACL file to write (default: --out with .acl)")
    broker_config.add_argument("--bind", help="address to listen on (default: every interface)")
    broker_config.add_argument("--prefix", default="recorders", help="the devices' mqtt.topic_prefix")
    broker_config.add_argument("--persistence-dir", type=Path, default=Path("/var/lib/mosquitto"),
                               help="where Mosquitto keeps its state (default /var/lib/mosquitto)")
    broker_config.set_defaults(func=cmd_broker_config)

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
