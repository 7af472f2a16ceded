"""The `recorder` command: the device's commands, `recorder verify` (anyone's), and `recorder central …`
(central/cli.py).

Every sub-action has its own `--help`; `-v` works before or after it. A user's mistake (a bad option,
configuration, file or scenario) is one line naming the problem and what to do, and exit status 2; no
command prints a traceback for it. Nothing heavy is imported until a command needs it, so central's
commands run where the device's libraries are not installed, and the reverse.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import logging
import math
import os
import sys
import threading
import time
import zoneinfo
from pathlib import Path
from typing import Any

from central import cli as central_cli
from evidence.errors import RecorderError
from evidence.supervisor import stop_on_signals
from firmware_py.errors import ServiceError

DEFAULT_CONFIG = Path("/etc/recorder/recorder.toml")
INTERRUPTED = 130
"""Exit status after Ctrl-C or SIGTERM cut a scenario short (128 + SIGINT, as shells report it)."""


def _load_config(path: Path | None) -> Any:
    from firmware_py import config as config_mod

    if path is None:
        return config_mod.load(DEFAULT_CONFIG) if DEFAULT_CONFIG.exists() else config_mod.from_dict({})
    return config_mod.load(path)


def _seconds(text: str) -> float:
    """An argparse type: a finite, non-negative number of seconds."""
    try:
        value = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from err
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds, at least 0; got {text}")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if not 0 < value <= 24 * 3600:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most a day (86400 s); got {text}")
    return value



def cmd_run(args: argparse.Namespace) -> int:
    from firmware_py import scenario as scenario_mod
    from firmware_py.service import Service
    from firmware_py.systemd import Notifier

    cfg = _load_config(args.config)
    if args.check_config:
        return _check_config(cfg, args.hal or cfg.hal.backend)
    steps = scenario_mod.load(args.scenario) if args.scenario else None
    backend = args.hal or cfg.hal.backend
    if steps is not None and backend != "sim":
        raise ServiceError("--scenario drives simulated hardware: use it with --hal sim")
    service = Service(cfg, backend=backend, notifier=Notifier.from_environment(os.environ))
    stop = stop_on_signals()
    service.start()
    try:
        if steps is None:
            stop.wait()
            return 0
        return _run_scenario(service, steps, stop, args.drain_seconds)
    finally:
        service.stop()


def _check_config(cfg: Any, requested: str) -> int:
    """Exit 0 if the service would start with `cfg`, after listing every weakness; a refusal is an error."""
    from firmware_py.weaknesses import refusal, weaknesses
    from hal.factory import is_raspberry_pi, resolve_backend

    on_pi = is_raspberry_pi()
    backend = resolve_backend(requested)  # as the service will (and saying so when "auto" falls back)
    found = weaknesses(cfg, on_pi)
    refused = refusal(cfg, backend, on_pi)
    if refused is not None:
        raise ServiceError(refused)
    for weakness in found:
        print(f"WEAK {weakness}")
    print(f"configuration OK{' but weak (see above)' if found else ''}: device {cfg.device.id}, room "
          f"{cfg.device.room}, backend {backend}{' (lab set-up)' if cfg.device.lab_setup else ''}, broker "
          f"{cfg.mqtt.host}:{cfg.mqtt.port} ({'mutual TLS' if cfg.mqtt.tls else 'plain MQTT'}), spool {cfg.spool_dir}")
    return 0


def _run_scenario(service: Any, steps: list[Any], stop: threading.Event, drain_seconds: float) -> int:
    from firmware_py import scenario as scenario_mod
    from firmware_py.service import wait_for_state
    from hal.buttons.base import ButtonName

    assert service.hal.sim is not None
    pins = service.config.hal.pins
    runner = scenario_mod.ScenarioRunner(
        steps, service.hal.sim, {ButtonName.START: pins.start, ButtonName.STOP: pins.stop,
                                      ButtonName.MARK: pins.mark},
        lambda st, t: wait_for_state(service, st, t), stop=stop, settled=lambda: service.controller.session_id is None,
        last_fault=lambda: service.controller.last_fault,
    )
    runner.start()
    while not (stop.is_set() or runner.finished.is_set()):
        stop.wait(0.2)
    if stop.is_set() and not runner.finished.is_set():
        print("recorder run: interrupted before the scenario ended", file=sys.stderr)
        return INTERRUPTED
    if runner.failure:
        print(f"recorder run: the scenario failed: {runner.failure}", file=sys.stderr)
        return 1
    if not service.spool.wait_drained(drain_seconds):
        backlog = service.spool.backlog()
        oldest = "" if backlog.oldest_age_s is None else f", the oldest written {backlog.oldest_age_s:.0f} s ago"
        print(f"recorder run: {backlog.entries} entries ({backlog.bytes / 1e6:.2f} MB) are still waiting for "
              f"central's receipt after {drain_seconds:g} s{oldest}; they stay in the spool and go when central "
              "answers (check the broker address and that central runs)", file=sys.stderr)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from firmware_py.demo import print_summary, run_demo

    broker = None
    if args.broker:
        host, _, port = args.broker.rpartition(":")
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ServiceError(f"--broker: {args.broker!r} is not HOST:PORT with a port of 1..65535")
        broker = (host or "127.0.0.1", int(port))
    result = run_demo(args.seconds, args.workdir, broker, tls=args.tls, interrupt=args.interrupt)
    print_summary(result)
    if not result.report.ok:
        return 1
    from central.web.server import serve
    from firmware_py.demo import export_demo, prepare_web

    exported = export_demo(result)
    print(f"exported   evidence package {exported.image} ({exported.megabytes:.1f} MB, ISO 9660, with the written "
          "note, playable copies and the verifier)")
    print(f"checked    by its own verifier on bare Python: {exported.verdict}")
    if not exported.ok:
        return 1

    web = prepare_web(result)
    print(f"watch      {web.url}")
    print(f"           log in as {web.username} / {web.password} (a supervisor of the room's unit: no approval "
          "needed)")
    if not args.web:
        print(f"           serve it with: recorder central web --config {web.config_file}   (or: recorder demo "
              "--web)")
        return 0
    from central import config as central_config

    cfg = central_config.load(web.config_file)
    print("           serving; Ctrl-C stops")
    serve(cfg, cfg.receiver.store_dir)
    return 0


def _trusted_key(args: argparse.Namespace, session_dir: Path) -> tuple[str | None, str]:
    """The key to anchor a session to, and where it came from: --key (a base64 key, or a file holding one),
    or else the enrolled key of the central store the session is in."""
    from central.store import FileStore
    from evidence.errors import EvidenceError
    from evidence.keys import load_public_key_b64

    if args.key is not None:
        candidate = Path(args.key)
        if candidate.is_file():
            try:
                key, source = candidate.read_text(encoding="ascii").strip(), f"--key {candidate}"
            except (OSError, UnicodeDecodeError) as err:
                raise ServiceError(f"--key {candidate}: cannot read a base64 key from it: {err}") from err
        else:
            key, source = args.key, "--key"
        try:
            load_public_key_b64(key)
        except EvidenceError as err:
            raise ServiceError(f"{source}: {err}; give the device's base64 public key or a file holding it") from err
        return key, source
    located = FileStore.locate(session_dir)
    if located is not None:
        store, device, session = located
        enrolled = store.session_key(device, session)
        if enrolled is not None:
            return enrolled, f"the key enrolled for {device} at {store.root}"
    return None, ""


def cmd_verify(args: argparse.Namespace) -> int:
    from evidence.layout import session_folders
    from evidence.verify import Decoder, Report, prove_entry, verify_session
    from provisioning.central_key import load_central_key

    central = load_central_key(args.decrypt_key) if args.decrypt_key else None
    decoder: Decoder | None = None
    if args.decode:
        try:
            from capture.probe import decodes
        except ImportError as err:
            raise ServiceError(f"--decode needs PyAV, which is not installed here ({err}); install the "
                               "`device` extra") from err
        decoder = decodes
    folders = list(session_folders(args.path))
    if not folders:
        raise ServiceError(f"{args.path}: no session found (a session folder has an entries/ subfolder)")
    if args.prove is not None:
        if len(folders) != 1:
            raise ServiceError("--prove needs PATH to be one session folder")
        proof = prove_entry(folders[0], args.prove, _trusted_key(args, folders[0])[0])
        print(proof.text())
        return 0 if proof.ok else 1
    reports: list[Report] = []
    anchors: list[str] = []
    for folder in folders:
        key, source = _trusted_key(args, folder)
        reports.append(verify_session(folder, key, decoder, central))
        anchors.append(source)
    if args.json:
        print(json.dumps([r.as_json() for r in reports], indent=1, ensure_ascii=False))
    else:
        for r, source in zip(reports, anchors, strict=True):
            print(r.text(source))
    return 0 if all(r.ok for r in reports) else 1


def cmd_identity(args: argparse.Namespace) -> int:
    from provisioning.identity import DeviceIdentity

    cfg = _load_config(args.config)
    identity = (DeviceIdentity.load_or_create if args.create else DeviceIdentity.load)(cfg.keys_dir)
    if args.json:
        print(json.dumps({"device": cfg.device.id, "public_key": identity.public_key_b64}))
    else:
        print(f"device      {cfg.device.id}")
        print(f"public key  {identity.public_key_b64}")
        print(f"enroll with: recorder central enroll {cfg.device.id} {identity.public_key_b64}")
    return 0


def cmd_enroll(args: argparse.Namespace) -> int:
    from firmware_py.enroll import enroll

    path = args.config or DEFAULT_CONFIG
    done = enroll(args.url, args.token, path, args.state_dir)
    room = done.answer.room
    print(f"enrolled   {room.device}: {room.unit}, {room.room}, {room.location}")
    print(f"keys       {done.keys_dir} (made here; the private keys never left this box)")
    print(f"broker     {done.answer.broker_host}:{done.answer.broker_port}, mutual TLS")
    print(f"config     {done.config} (recordings sealed to central's key, receipts checked against its signature)")
    print("next       sudo systemctl restart recorder   (then: recorder status)")
    return 0


def cmd_selftest(args: argparse.Namespace) -> int:
    from evidence.supervisor import Supervisor
    from firmware_py.prompts import PromptCache
    from firmware_py.selftest import SelfTest, Timing
    from firmware_py.service import hal_settings
    from hal.factory import build_hal
    from provisioning.identity import DeviceIdentity

    cfg = _load_config(args.config)
    if _service_status(cfg)[1]:
        raise ServiceError("the recorder service is running and holds the camera, microphone and buttons: stop it "
                           "first (sudo systemctl stop recorder) and start it again after the test")
    supervisor = Supervisor()
    hal = build_hal(hal_settings(cfg, args.hal or cfg.hal.backend), supervisor.spawn)
    try:
        test = SelfTest(cfg, hal, PromptCache(cfg.prompt_dir, cfg.audio.sample_rate, cfg.notice.words_per_minute),
                        DeviceIdentity.load_or_create(cfg.keys_dir),
                        out=(lambda line: None) if args.json else print, timing=Timing(answer_s=args.answer_seconds))
        print(f"self-test of {cfg.device.id} ({cfg.device.room}); answer with the box's buttons", file=sys.stderr)
        checks = test.run()
    finally:
        hal.close()
        supervisor.stop()
    failed = [c for c in checks if not c.ok]
    if args.json:
        print(json.dumps([{"name": c.name, "ok": c.ok, "detail": c.detail, "remedy": c.remedy} for c in checks],
                         ensure_ascii=False, indent=1))
    else:
        print(f"{len(checks) - len(failed)} of {len(checks)} passed" + (
            f"; FAILED: {', '.join(c.name for c in failed)}" if failed else ""))
    return 1 if failed else 0


def _alive(pid: object) -> bool:
    return isinstance(pid, int) and Path(f"/proc/{pid}").exists()


def _service_status(cfg: Any) -> tuple[dict[str, Any], bool]:
    """What the service last wrote of itself (status.json), and whether it is running now."""
    status_file = cfg.device.state_dir / "status.json"
    try:
        status = json.loads(status_file.read_text(encoding="utf-8")) if status_file.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ServiceError(f"{status_file}: cannot read the service's status: {err}") from err
    if not isinstance(status, dict):
        status = {}
    return status, _alive(status.get("pid")) and status.get("state") != "stopped"


def _bookings_line(bookings: dict[str, Any]) -> str:
    held = f"{bookings['held']} held (set {bookings['serial']} from central)" if bookings["serial"] else \
        "no booking set from central yet"
    if bookings.get("refused"):
        held += f"; {bookings['refused']} set(s) refused since the service started (see its log)"
    if bookings.get("problem"):
        held += f"; {bookings['problem']}"
    return held


def _booking_line(booking: dict[str, Any]) -> str:
    start, end = dt.datetime.fromisoformat(booking["start"]), dt.datetime.fromisoformat(booking["end"])
    until = f"{end:%H:%M}" if end.date() == start.date() else f"{end:%Y-%m-%d %H:%M}"
    what = "  ".join(part for part in (booking["act"], booking["matter"]) if part) or "(no matter given)"
    auto = "starts by itself" if booking["auto_start"] else "START by hand"
    return f"{booking['room']} {start:%Y-%m-%d %H:%M}–{until}: {what}; {auto}"


def cmd_status(args: argparse.Namespace) -> int:
    from capture.spool import Spool
    from evidence.deadline import Level
    from firmware_py.bookings import CacheUnreadable, read_held, summary
    from firmware_py.deadlines import assess
    from mqtt.alert_outbox import AlertOutbox

    cfg = _load_config(args.config)
    status, running = _service_status(cfg)
    spool = Spool(cfg.spool_dir, create=False)
    backlog = spool.backlog()
    alerts = [a.as_dict() for a in assess(spool.recordings(), time.time(), cfg.upload) if a.level is not Level.OK]
    waiting = AlertOutbox(cfg.device.state_dir / "alerts", 0).waiting()  # reads only: it creates nothing
    zone = zoneinfo.ZoneInfo(cfg.device.timezone)
    try:
        bookings: dict[str, Any] = summary(read_held(cfg.bookings_file), dt.datetime.now(zone), zone)
    except CacheUnreadable as err:
        bookings = {"serial": 0, "held": 0, "next": None, "problem": str(err)}
    bookings["refused"] = (status.get("bookings") or {}).get("refused") if running else None
    report = {
        "device": cfg.device.id,
        "state": status.get("state", "not running") if running else "not running",
        "session": status.get("session") if running else None,
        "last_fault": status.get("last_fault"),
        "broker_connected": status.get("broker_connected") if running else None,
        "broker_refuses": status.get("broker_refuses") if running else None,
        "free_bytes": status.get("free_bytes"),
        "recording_hours_left": status.get("recording_hours_left"),
        "clock_synced": status.get("clock_synced"),
        "backlog_entries": backlog.entries,
        "backlog_bytes": backlog.bytes,
        "oldest_unreceipted_s": backlog.oldest_age_s,
        "status_written": status.get("time"),
        "upload_alerts": alerts,
        "alerts": [{"id": a.id, "kind": a.kind, "session": a.session, "cause": a.cause,
                    "interrupted_at": a.interrupted_at} for a in waiting],
        "bookings": bookings,
        "room": status.get("room") if running else None,
    }
    if args.json:
        print(json.dumps(report, indent=1, ensure_ascii=False))
    else:
        for key, value in report.items():
            if key not in ("upload_alerts", "alerts", "bookings", "room"):
                print(f"{key:22} {value}")
        print(f"{'bookings':22} {_bookings_line(bookings)}")
        if bookings.get("next"):
            print(f"{'next booking':22} {_booking_line(bookings['next'])}")
        if report["room"]:
            room = report["room"]
            print(f"{'room':22} {'people in the room' if room['occupied'] else 'nobody in the room'} since "
                  f"{room['since']} ({room['sensor']} sensor)")
        for waiting in report["alerts"]:
            print(f"{'ALERT ' + waiting['kind']:22} session {waiting['session']}: {waiting['cause']} since "
                  f"{waiting['interrupted_at']}; not yet acknowledged by central")
        for alert in alerts:
            print(f"{'UPLOAD ' + alert['level'].upper():22} {alert['session']}: ended "
                  f"{alert['hours_since_finished']} h ago, {alert['pending_entries']} entries not receipted, "
                  f"{alert['hours_left']} h left to the deadline")
    # Non-zero when someone must look: the service is down, or the device is in fault.
    return 0 if running and report["state"] != "fault" else 1


def build_parser() -> argparse.ArgumentParser:
    try:
        version = importlib.metadata.version("room-recorder")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown (not installed)"
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: `-v` after a subcommand sets it; its absence there does not undo a `-v` before it.
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log debug detail")
    parser = argparse.ArgumentParser(prog="recorder", description="Interview-room recorder gateway.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    parser.add_argument("--version", action="version", version=f"recorder {version}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        made: argparse.ArgumentParser = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        return made

    run = command("run", "run the recorder service (the device)")
    run.add_argument("--config", type=Path, help=f"configuration file (default {DEFAULT_CONFIG} if present)")
    run.add_argument("--hal", choices=["pi", "sim", "auto"], help="override hal.backend")
    run.add_argument("--scenario", type=Path, help="drive the simulated hardware from a scenario file, then exit")
    run.add_argument("--drain-seconds", type=_seconds, default=60.0, metavar="S",
                     help="with --scenario: how long to wait for central's receipts before exiting; exit status 1 "
                          "if some are still missing (default 60)")
    run.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    run.set_defaults(func=cmd_run)

    status = command("status", "the device's state, last fault and upload backlog (exit 1 if not running or in "
                               "fault)")
    status.add_argument("--config", type=Path, help=f"configuration file (default {DEFAULT_CONFIG} if present)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)

    enroll = command("enroll", "claim this box's place at central with a one-time token: makes its keys, gets its "
                               "certificate, room and central's keys, and writes its configuration")
    enroll.add_argument("url", help="central's enrollment address, https://HOST:PORT (printed with the token)")
    enroll.add_argument("token", help="the token from `recorder central token`")
    enroll.add_argument("--config", type=Path, help=f"the configuration file to write (default {DEFAULT_CONFIG}); "
                                                    "its other settings are kept")
    enroll.add_argument("--state-dir", type=Path, help="device.state_dir, where the keys are made (default: the "
                                                       "configuration's, or /var/lib/recorder)")
    enroll.set_defaults(func=cmd_enroll)

    selftest = command("selftest", "walk through every part of the box with spoken and printed instructions "
                                   "(buttons, tally, speaker and microphone, camera, storage, clock, power, broker, "
                                   "central); exit 1 if anything failed. Stop the service first")
    selftest.add_argument("--config", type=Path, help=f"configuration file (default {DEFAULT_CONFIG} if present)")
    selftest.add_argument("--hal", choices=["pi", "sim", "auto"], help="override hal.backend")
    selftest.add_argument("--answer-seconds", type=_positive_seconds, default=20.0,
                          help="how long to wait for each button the test asks for (default 20)")
    selftest.add_argument("--json", action="store_true", help="machine-readable checklist")
    selftest.set_defaults(func=cmd_selftest)

    identity = command("identity", "the device's public signing key, for enrolling it at central")
    identity.add_argument("--config", type=Path, help=f"configuration file (default {DEFAULT_CONFIG} if present)")
    identity.add_argument("--json", action="store_true", help="machine-readable output")
    identity.add_argument("--create", action="store_true", help="make the key if the device has none yet")
    identity.set_defaults(func=cmd_identity)

    demo = command("demo", "one whole session on simulated hardware, verified at central")
    demo.add_argument("--seconds", type=_positive_seconds, default=8.0, help="recording time after START (default 8)")
    demo.add_argument("--workdir", type=Path, help="where all state goes (default: a new temporary folder)")
    demo.add_argument("--broker", metavar="HOST:PORT", help="an existing broker instead of starting Mosquitto")
    demo.add_argument("--tls", action="store_true",
                      help="mutual TLS and the recorder ACL, with a throwaway CA in the work folder")
    demo.add_argument("--interrupt", action="store_true",
                      help="break the camera for 2 s midway: the session resumes, the device asks for the reason "
                           "and gives the notice again, and central's copy verifies with the break explained")
    demo.add_argument("--web", action="store_true",
                      help="then serve the web application where the session can be watched, until Ctrl-C")
    demo.set_defaults(func=cmd_demo)

    verify = command("verify", "check stored sessions offline (a device spool, central's copy or an export)")
    verify.add_argument("path", type=Path, help="a session folder, or a folder holding sessions")
    verify.add_argument("--key", metavar="KEY_OR_FILE",
                        help="the device's base64 public key, or a file holding it, to anchor the signatures to "
                             "(default, for a session in central's store: the key enrolled there)")
    verify.add_argument("--decode", action="store_true", help="also decode every segment (needs PyAV)")
    verify.add_argument("--decrypt-key", type=Path, metavar="PEM",
                        help="central's private key: decrypt sealed segments and check their plaintext")
    verify.add_argument("--prove", type=int, metavar="SEQ",
                        help="print and check entry SEQ's Merkle audit path to the closing entry's root")
    verify.add_argument("--json", action="store_true", help="machine-readable report")
    verify.set_defaults(func=cmd_verify)

    central_cli.add_commands(sub, common)
    return parser


def configure_logging(verbose: bool) -> None:
    """Log lines to stderr (with their level for journald, when that is where stderr goes). Like
    logging.basicConfig, it leaves a logging set-up already in place (a test runner's) as it is."""
    from firmware_py.systemd import JournalFormatter, stderr_is_journal

    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    if stderr_is_journal(os.environ):
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root.addHandler(handler)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    name = args.command if args.command != "central" else f"central {args.action}"
    try:
        return int(args.func(args))
    except RecorderError as err:
        print(f"recorder {name}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
