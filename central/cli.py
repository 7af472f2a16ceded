"""`recorder central …`: central's commands (the receiver, enrolment, finding sessions, the late report,
the index, central's key, a test CA and the broker's configuration).

Each sub-action has its own parser and help. Times are read and printed in the agency's time zone
(`[central] timezone`), always with their offset, so what the table shows can be typed back into --from.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import math
import sqlite3
import unicodedata
import zoneinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any

from central import config as config_mod
from central.errors import CentralError
from central.index import INDEX_FILE, Query, SessionIndex, SessionRow, Standing
from evidence import layout
from evidence.deadline import UploadPolicy
from evidence.errors import ConfigError
from evidence.reasons import RETENTION_CLASSES
from evidence.supervisor import stop_on_signals

if TYPE_CHECKING:
    from central.bookings import Bookings, Fields, RoomBookings
    from central.register import Actor
    from central.retention import Retention
    from central.store import CentralStore

log = logging.getLogger(__name__)


def _config(args: argparse.Namespace) -> config_mod.CentralConfig:
    return config_mod.load(args.config)


def _store_root(args: argparse.Namespace, cfg: config_mod.CentralConfig) -> Path:
    return args.store or cfg.receiver.store_dir



def _port(text: str) -> int:
    """A TCP port option: 1..65535, or argparse's one-line error naming the option."""
    if not text.strip().isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 1..65535, got {text!r}")
    return int(text)


def cmd_serve(args: argparse.Namespace) -> int:
    from central.build import build_receiver
    from central.store import FileStore

    cfg = _config(args)
    from central.sweep import ScheduledSweep

    store = FileStore(_store_root(args, cfg))
    receiver = build_receiver(cfg, store, args.host, args.port)
    stop = stop_on_signals()
    receiver.start()
    log.info("receiver storing into %s", store.root)
    lifecycle = _retention(cfg, store) if cfg.receiver.signing_key_file else None
    swept = ScheduledSweep(store, cfg.sweep.interval_hours * 3600, registers=lifecycle.registers if lifecycle else None,
                           marks=lifecycle) if cfg.sweep.interval_hours > 0 else None
    if swept is not None:
        swept.start()
    stop.wait()
    if swept is not None:
        swept.stop()
    receiver.stop()
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Judge every stored session again now (NO-EDIT); exit 1 if any is broken."""
    from central.store import FileStore
    from central.sweep import sweep

    cfg = _config(args)
    store = FileStore(_store_root(args, cfg), create=False)
    lifecycle = _retention(cfg, store) if cfg.receiver.signing_key_file else None
    result = sweep(store, registers=lifecycle.registers if lifecycle else None, marks=lifecycle)
    print(f"swept      {result.sessions} sessions, {result.media_bytes / 1e6:.1f} MB in {result.seconds:.1f} s")
    for device, session, problem in result.broken:
        new = " (NEW)" if (device, session, problem) in result.newly_broken else ""
        print(f"BROKEN{new}  {device}/{session}: {problem}")
    if not result.broken:
        print("every stored session is as it was stored")
    return 1 if result.broken else 0


def _retention(cfg: config_mod.CentralConfig, store: CentralStore) -> Retention:
    from central.build import build_retention

    return build_retention(cfg, store)


def cmd_retention(args: argparse.Namespace) -> int:
    """The retention report (RETENTION): every session's class, hold and when it expires, soonest first."""
    import csv
    import sys

    from central.csv_cells import inert
    from central.retention import LABELS, report
    from central.store import FileStore

    cfg = _config(args)
    store = FileStore(_store_root(args, cfg), create=False)
    index = _open_index(args, cfg)
    try:
        rows = report(_retention(cfg, store), index.sessions(Query()), dt.datetime.now(_zone(cfg)))
    finally:
        index.close()
    if args.expired:
        rows = [r for r in rows if r.state.endswith("expired")]
    if args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(["device", "session", "unit", "room", "opened_at", "class", "case", "hold", "kept_since",
                         "expires", "state"])
        for r in rows:
            j = r.as_json()
            writer.writerow([inert(str(j[k])) for k in ("device", "session", "unit", "room", "opened_at", "class",
                                                         "case", "hold", "kept_since", "expires", "state")])
        return 0
    table = [["DEVICE", "SESSION", "UNIT", "ROOM", "CLASS", "CASE", "EXPIRES", "STATE"]]
    for r in rows:
        table.append([r.device, r.session, r.unit, r.room, LABELS[r.cls], r.case or "-",
                      r.expires.isoformat(timespec="minutes") if r.expires else "-", r.state])
    print("\n".join(_table(table)))
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    """The records keeper removes an expired session's segment files (RETENTION): its entries, register and a
    signed tombstone stay."""
    import getpass

    from central.register import Actor
    from central.retention import kept_since
    from central.store import FileStore

    cfg = _config(args)
    target = f"{args.device}/{args.session}"
    if args.confirm != target:
        raise CentralError(f"to remove {target}'s recordings, repeat it exactly: --confirm {target}")
    store = FileStore(_store_root(args, cfg), create=False)
    index = _open_index(args, cfg)
    try:
        rows = index.sessions(Query(device=args.device, session=args.session))
    finally:
        index.close()
    if not rows:
        raise CentralError(f"{target}: no such session in the index (run `recorder central reindex`?)")
    now = dt.datetime.now(_zone(cfg))
    actor = Actor(f"cli:{getpass.getuser()}", "records")
    since = kept_since(rows[0]).astimezone(now.tzinfo)
    record = _retention(cfg, store).remove(args.device, args.session, actor, since, now)
    print(f"removed {len(record.detail['files'])} segment files of {target}; its entries, its register and the "
          f"tombstone (register record {record.seq}) stay")
    return 0


def cmd_enroll(args: argparse.Namespace) -> int:
    from central.store import FileStore
    from evidence.keys import load_public_key_b64

    cfg = _config(args)
    if not layout.DEVICE_ID.match(args.device):
        raise CentralError(f"{args.device!r} is not a valid device id (1-64 letters, digits, '.', '_' or '-')")
    load_public_key_b64(args.key)
    FileStore(_store_root(args, cfg)).enroll(args.device, args.key)
    print(f"enrolled {args.device}")
    return 0


def _zone(cfg: config_mod.CentralConfig) -> zoneinfo.ZoneInfo:
    return cfg.central.zone


def _when(text: str, flag: str, end: bool, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError as err:
        raise CentralError(f"{flag}: {text!r} is not an ISO 8601 date or time "
                           "(for example 2026-11-22 or 2026-11-22T08:30+08:00)") from err
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        pass
    else:
        if end:
            value += dt.timedelta(days=1)  # --to a date takes in the whole of that day
    # No offset: the agency's time zone, as the tables show.
    return value if value.tzinfo is not None else value.replace(tzinfo=zone)


def _hours(text: str, flag: str) -> float:
    try:
        value = float(text)
    except ValueError as err:
        raise CentralError(f"{flag}: {text!r} is not a number of hours") from err
    if not math.isfinite(value) or value <= 0:
        raise CentralError(f"{flag}: must be a positive number of hours, got {text}")
    return value


def _policy(args: argparse.Namespace, policy: UploadPolicy) -> UploadPolicy:
    # The configuration's [upload] section by default: the devices warn by the same thresholds.
    limit = policy.deadline_hours if args.limit_hours is None else _hours(args.limit_hours, "--limit-hours")
    # The configured warnings that come before a --limit-hours given here; those given here must all do.
    warnings = (tuple(w for w in policy.warn_hours if w < limit) if args.warn_hours is None
                else tuple(_hours(h, "--warn-hours") for h in args.warn_hours.split(",")))
    try:
        return UploadPolicy(limit, warnings)
    except ConfigError as err:
        raise CentralError(f"--limit-hours/--warn-hours: {err}") from err


def _width(text: str) -> int:
    # Chinese characters take two columns in a terminal.
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(_width(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell + " " * (w - _width(cell)) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def _local(posix: float, zone: zoneinfo.ZoneInfo) -> str:
    return dt.datetime.fromtimestamp(posix, zone).isoformat(sep=" ", timespec="seconds")


def _standing_text(standing: Standing) -> str:
    if standing.status == "warning":
        return f"warning: {standing.hours:.1f} h, past {standing.threshold_hours:g} h"
    if standing.status in ("late", "at risk"):
        return f"{standing.status}: {standing.hours:.1f} h"
    return "no" if standing.status == "on time" else standing.status


def _print_sessions(rows: list[SessionRow], now: dt.datetime, policy: UploadPolicy, zone: zoneinfo.ZoneInfo,
                    ) -> None:
    table = [["session", "device", "unit", "officers", "case", "opened", "closed", "segments", "MB", "late?"]]
    for r in rows:
        opened = _local(r.opened_ts, zone)
        closed = "-" if r.closed_ts is None else _local(r.closed_ts, zone)
        if r.closed_ts is not None and closed[:10] == opened[:10]:
            closed = closed[11:]
        table.append([r.session, r.device, r.unit, ", ".join(o.name for o in r.officers), r.case or r.matter,
                      opened, closed + (" (interrupted)" if r.interrupted else ""), str(r.segments),
                      f"{r.media_bytes / 1e6:.2f}", _standing_text(r.standing(now, policy))])
    for line in _table(table):
        print(line)


def _print_late(found: list[tuple[SessionRow, Standing]], zone: zoneinfo.ZoneInfo) -> None:
    if not found:
        print("nothing is late, at risk or past a warning")
        return
    device = None
    for row, standing in found:
        if row.device != device:
            device = row.device
            print(device)
        stored = _local(row.last_stored.timestamp(), zone)
        if row.closed_ts is not None:
            what = (f"closed {_local(row.closed_ts, zone)}; its last entry was stored {standing.hours:.1f} h later, "
                    f"{stored}")
        else:
            what = (f"not closed; {row.entries} entries received, the last written {_local(row.last_ts, zone)} "
                    f"({standing.hours:.1f} h ago), stored {stored}")
        print(f"  {row.session}  {_standing_text(standing)}  opened {_local(row.opened_ts, zone)}; {what}")


def _open_index(args: argparse.Namespace, cfg: config_mod.CentralConfig) -> SessionIndex:
    from central.store import FileStore

    root = _store_root(args, cfg)
    if not FileStore.holds_a_store(root):
        raise CentralError(f"{root}: not a central store (it has no sessions/ folder); give --store or "
                           "receiver.store_dir")
    from central.build import central_key

    try:
        return SessionIndex(FileStore(root, create=False), central_key(cfg))
    except (sqlite3.Error, OSError) as err:
        raise CentralError(f"cannot open {root / INDEX_FILE}: {err}; if it is damaged, delete {INDEX_FILE}* there "
                           "and run `recorder central reindex`") from err


def cmd_sessions(args: argparse.Namespace) -> int:
    cfg = _config(args)
    zone = _zone(cfg)
    policy = cfg.upload
    query = Query(device=args.device, officer=args.officer, unit=args.unit, case=args.case, party=args.party,
                  start=_when(args.start, "--from", False, zone) if args.start else None,
                  end=_when(args.end, "--to", True, zone) if args.end else None)
    index = _open_index(args, cfg)
    now = dt.datetime.now(dt.UTC)
    try:
        rows = index.sessions(query)
    except sqlite3.Error as err:
        raise CentralError(f"session index {index.path}: {err}") from err
    finally:
        index.close()
    if args.json:
        print(json.dumps([row.as_json(now, policy) for row in rows], indent=1, ensure_ascii=False))
    elif rows:
        _print_sessions(rows, now, policy, zone)
    else:
        print("no matching sessions")
    return 0


def cmd_late(args: argparse.Namespace) -> int:
    cfg = _config(args)
    policy = _policy(args, cfg.upload)
    index = _open_index(args, cfg)
    now = dt.datetime.now(dt.UTC)
    try:
        found = index.late(now, policy)
    except sqlite3.Error as err:
        raise CentralError(f"session index {index.path}: {err}") from err
    finally:
        index.close()
    if args.json:
        print(json.dumps([row.as_json(now, policy) for row, _ in found], indent=1, ensure_ascii=False))
    else:
        _print_late(found, _zone(cfg))
    # Non-zero only while something is still missing, so a cron job can alert on it; a session that arrived
    # late is listed for the record but needs no action.
    return 1 if any(row.closed_at is None for row, _ in found) else 0


def cmd_alerts(args: argparse.Namespace) -> int:
    """The devices' alerts (recording could not continue, or a session was cut off too long to resume): the
    ones nobody has acknowledged yet, or with --all every one; --ack records who acknowledged one."""
    from central.store import FileStore, StoredAlert

    cfg = _config(args)
    zone = _zone(cfg)
    store = FileStore(_store_root(args, cfg), create=False)
    if args.ack is not None:
        if not args.by or not args.by.strip():
            raise CentralError("--ack needs --by NAME: who acknowledges the alert (the head of the unit told, "
                               "the officers' written explanation asked for)")
        found = [a for a in store.alerts() if a.alert.id == args.ack]
        if not found:
            raise CentralError(f"no alert {args.ack}; `recorder central alerts --all` lists them")
        done = store.handle_alert(found[0].alert.device, args.ack, args.by.strip(), args.note or "")
        print(f"alert {args.ack} acknowledged by {done.handled.by if done.handled else args.by}")
        return 0
    shown = [a for a in store.alerts() if args.all or a.handled is None]

    def as_json(stored: StoredAlert) -> dict[str, Any]:
        a = stored.alert
        return {"id": a.id, "kind": a.kind, "device": a.device, "session": a.session, "unit": a.unit,
                "room": a.room, "location": a.location,
                "officers": [{"name": o.name, "certificate": o.certificate} for o in a.officers],
                "case": a.case, "matter": a.matter, "cause": a.cause, "detail": a.detail,
                "interrupted_at": a.interrupted_at, "time": a.time, "clock_synced": a.clock_synced,
                "attempts": a.attempts, "received": _local(stored.stored_ts, zone),
                "handled": None if stored.handled is None else dataclasses.asdict(stored.handled)}

    if args.json:
        print(json.dumps([as_json(a) for a in shown], indent=1, ensure_ascii=False))
    elif not shown:
        print("no alerts" if args.all else "no alerts waiting (--all lists the ones acknowledged)")
    else:
        rows = [["ID", "RECEIVED", "DEVICE", "ROOM", "WHAT", "CAUSE", "SINCE", "SESSION", "OFFICERS",
                 "HANDLED"]]
        for stored in shown:
            a = stored.alert
            rows.append([a.id, _local(stored.stored_ts, zone), a.device, a.room, a.headline,
                         f"{a.cause_label} {a.cause}", a.interrupted_at, a.session or "-",
                         ", ".join(f"{o.name} {o.certificate}" for o in a.officers),
                         "-" if stored.handled is None else f"{stored.handled.by} {stored.handled.at}"])
        print("\n".join(_table(rows)))
    # Non-zero while an alert waits, so a cron job or a monitoring check can page someone.
    return 1 if any(a.handled is None for a in shown) else 0


def cmd_devices(args: argparse.Namespace) -> int:
    """Fleet health: each enrolled device (and any other that reported), as its latest status says."""
    from central.fleet import fleet_rows
    from central.store import FileStore

    cfg = _config(args)
    zone = _zone(cfg)
    store = FileStore(_store_root(args, cfg), create=False)
    rows = fleet_rows(store)
    if args.json:
        print(json.dumps(rows, indent=1, ensure_ascii=False))
        return 0
    if not rows:
        print("no devices enrolled")
        return 0

    def local(iso: str) -> str:
        return dt.datetime.fromisoformat(iso).astimezone(zone).isoformat(sep=" ", timespec="seconds")

    def tested(row: dict[str, Any]) -> str:
        summary = row["selftest"]
        if summary is None:
            return "never"
        verdict = "passed" if summary["passed"] else "FAILED " + ",".join(summary["failed"])
        return f"{local(summary['time'])} {verdict}"

    def expiry(row: dict[str, Any]) -> str:
        return str(row["certificate_expires"])[:10] if row["certificate_expires"] else "-"

    table = [["DEVICE", "ONLINE", "SINCE", "STATE", "SESSION", "BACKLOG", "FREE", "CLOCK", "ALERTS", "LATE",
              "LAST FAULT", "SELF-TEST", "CERT UNTIL"]]
    for row in rows:
        if row["key_change_pending"]:
            row = {**row, "device": f"{row['device']} (NEW KEY {row['key_change_pending']}…: approve-key)"}
        if row["online"] is None:
            table.append([row["device"], "never seen", "-", "-", "-", "-", "-", "-", str(row["alerts_at_central"]),
                          "-", "-", tested(row), expiry(row)])
            continue
        backlog = f"{row.get('backlog_entries', '?')} / {row.get('backlog_bytes', 0) / 1e6:.1f} MB"
        if isinstance(row.get("oldest_unreceipted_s"), (int, float)):
            backlog += f" / {row['oldest_unreceipted_s'] / 3600:.1f} h"
        free = f"{row['free_bytes'] / 1e9:.1f} GB" if "free_bytes" in row else "-"
        synced = row.get("clock_synced")
        clock = "-" if synced is None else "synced" if synced else "NOT synced"
        alerts = f"{row['alerts_at_central']} (+{len(row.get('alerts', []))} sending)" if row.get("alerts") \
            else str(row["alerts_at_central"])
        table.append([row["device"], "yes" if row["online"] else "NO", local(row["since"]),
                      str(row.get("state", "-")) if row["online"] else "-", str(row.get("session") or "-"),
                      backlog if row["online"] else "-", free, clock, alerts, str(len(row.get("upload_alerts", []))),
                      str(row.get("last_fault") or "-"), tested(row), expiry(row)])
    print("\n".join(_table(table)))
    return 0


def _bookings(args: argparse.Namespace, cfg: config_mod.CentralConfig) -> tuple[Bookings, SessionIndex]:
    """Central's bookings over the store, with the index that names rooms enrolled by hand; the caller closes
    the index."""
    from central.build import build_bookings
    from central.store import FileStore

    index = _open_index(args, cfg)
    try:
        return build_bookings(cfg, FileStore(_store_root(args, cfg), create=False), index=index), index
    except BaseException:
        index.close()
        raise


def _cli_actor() -> Actor:
    import getpass

    from central.register import Actor

    return Actor(f"cli:{getpass.getuser()}", "")


def _by(args: argparse.Namespace) -> str:
    if not args.by.strip():
        raise CentralError("--by: say who makes the change (recorded with it)")
    return str(args.by.strip())


def _fields(args: argparse.Namespace, zone: zoneinfo.ZoneInfo, base: Fields | None) -> Fields:
    """The booking's fields from the options given, over `base` (the booking changed) where one is left out."""
    from central.bookings import Fields

    def given(name: str, default: Any) -> Any:
        value = getattr(args, name)
        return default if value is None else value

    start = _when(args.start, "--start", False, zone) if args.start else None
    end = _when(args.end, "--end", False, zone) if args.end else None
    if base is None:
        if start is None or end is None:
            raise CentralError("give the booking's --start and --end (no offset: the agency's time zone)")
        base = Fields(start, end)
    return Fields(start or base.start, end or base.end, given("case", base.case), given("matter", base.matter),
                  given("act", base.act), tuple(given("party", base.parties)),
                  tuple(given("officer", base.officers)), given("retention", base.retention),
                  given("auto_start", base.auto_start))


def cmd_book(args: argparse.Namespace) -> int:
    """Make a booking of a room (or, with --change, change one): prints its id."""
    import sys

    from central.bookings import Fields

    cfg = _config(args)
    zone = _zone(cfg)
    by = _by(args)
    bookings, index = _bookings(args, cfg)
    try:
        if args.change:
            if args.device:
                raise CentralError("--device: a booking stays in its room; to move it, cancel it and book the other "
                                   "room")
            _, old = bookings.find(args.change)
            kept = bookings.change(args.change, _fields(args, zone, Fields.of(old.booking)), _cli_actor(), by=by)
        else:
            if not args.device:
                raise CentralError("--device: name the room's device (recorder central devices lists them)")
            kept = bookings.make(args.device, _fields(args, zone, None), _cli_actor(), by=by)
    finally:
        index.close()
    b = kept.booking
    print(b.id)
    print(f"{kept.history[-1].change} booking {b.id} version {b.version}: {b.room}, {_clock(b.start, zone)} to "
          f"{_clock(b.end, zone)}, by {by}; the receiver sends the room its new set", file=sys.stderr)
    return 0


def cmd_cancel_booking(args: argparse.Namespace) -> int:
    cfg = _config(args)
    by = _by(args)
    bookings, index = _bookings(args, cfg)
    try:
        kept = bookings.cancel(args.booking, _cli_actor(), by=by)
    finally:
        index.close()
    b = kept.booking
    print(f"cancelled booking {b.id} ({b.room}, {_clock(b.start, _zone(cfg))}) by {by}; the room's next set leaves "
          "it out")
    return 0


def _clock(when: dt.datetime, zone: zoneinfo.ZoneInfo) -> str:
    return when.astimezone(zone).isoformat(sep=" ", timespec="minutes")


def _room_json(room: RoomBookings, kept_all: bool, now: dt.datetime, held: Any) -> dict[str, Any]:
    from central.bookings import signed_set

    found = signed_set(room)
    return {"device": room.device, "serial": room.serial,
            "issued": None if found is None else found.issued.isoformat(timespec="seconds"),
            "device_holds": held,
            "bookings": [{**k.booking.as_json(), "state": k.state(now), "history": [s.as_json() for s in k.history]}
                         for k in room.bookings if kept_all or k.pending(now)]}



def _held_serial(status: Any) -> int | None:
    """The serial of the set the device says (in its latest status, `bookings.serial`) it holds; None if it has not
    said."""
    said = status.fields.get("bookings") if status is not None else None
    serial = said.get("serial") if isinstance(said, dict) else None
    return serial if isinstance(serial, int) and not isinstance(serial, bool) else None


def cmd_bookings(args: argparse.Namespace) -> int:
    """What is booked in each room, and the serial of the set each was last sent."""
    from central.bookings import BookingRefused

    cfg = _config(args)
    zone = _zone(cfg)
    now = dt.datetime.now(zone)
    bookings, index = _bookings(args, cfg)
    try:
        rooms = [bookings.of(args.device)] if args.device else bookings.every()
        if args.device and not rooms[0].bookings:
            raise BookingRefused(f"--device: {args.device} has no bookings")
        names = {r.device: r for r in bookings.rooms()}
    finally:
        index.close()
    held = {room.device: _held_serial(bookings.store.device_status(room.device)) for room in rooms}
    if args.json:
        print(json.dumps([{**_room_json(r, args.all, now, held[r.device]),
                           "room": names[r.device].name if r.device in names else r.device,
                           "unit": names[r.device].unit if r.device in names else ""} for r in rooms],
                         indent=1, ensure_ascii=False))
        return 0
    if not rooms:
        print("no bookings")
        return 0
    for room in rooms:
        name = names.get(room.device)
        holds = f"; the device holds serial {held[room.device]}" if held[room.device] is not None else ""
        print(f"{room.device} ({name.unit + ' ' if name and name.unit else ''}{name.name if name else 'not enrolled'}):"
              f" set serial {room.serial} signed{holds}")
        table = [["BOOKING", "V", "START", "END", "CASE", "MATTER", "ACT", "RETENTION", "AUTO", "STATE", "MADE BY"]]
        for k in room.bookings:
            if not args.all and not k.pending(now):
                continue
            b = k.booking
            table.append([b.id, str(b.version), _clock(b.start, zone), _clock(b.end, zone), b.case or "-",
                          b.matter or "-", b.act or "-", b.retention, "yes" if b.auto_start else "no",
                          k.state(now) + (f" by {k.cancelled.by}" if k.cancelled else ""), k.made.by])
        if len(table) == 1:
            print("  nothing booked that is not over (--all lists every booking)")
        else:
            print("\n".join("  " + line for line in _table(table)))
    return 0


def cmd_reindex(args: argparse.Namespace) -> int:
    cfg = _config(args)
    index = _open_index(args, cfg)
    try:
        print(f"indexed {index.rebuild()} sessions into {index.path}")
    except sqlite3.Error as err:
        raise CentralError(f"session index {index.path}: {err}") from err
    finally:
        index.close()
    return 0


def cmd_key(args: argparse.Namespace) -> int:
    from provisioning.central_key import create_central_key, create_signing_key

    public = create_central_key(args.out)
    print(f"private key  {args.out} (keep it at central only)")
    print(f"public key   {public}")
    print(f'devices: [device] central_public_key = "{public}"')
    if args.signing_out:
        signing = create_signing_key(args.signing_out)
        print(f"signing key  {args.signing_out} (keep it at central only; [receiver] signing_key_file)")
        print(f'devices: [device] central_signing_key = "{signing}"')
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
    enrollment = ca.enrollment_paths()
    if args.enrollment_host or not enrollment.cert.exists():
        ca.issue_enrollment_server(args.enrollment_host)
        print(f"enrollment {enrollment.cert} (valid for {', '.join(broker_hosts(args.enrollment_host))})")
    if args.web_host:
        web = ca.issue_web_server(args.web_host)
        print(f"web        [web] tls_cert_file = \"{web.cert}\", tls_key_file = \"{web.key}\", hosts = "
              f"{json.dumps(args.web_host)} (staff's browsers trust {ca.ca_file})")
    if not ca.admins():
        admin = ca.issue_admin()
        print(f"admin      {admin.name}: {admin.cert}, {admin.key} (central's identity for adding and revoking "
              "devices at the broker)")
    for role, names, issue in (("device", args.device, ca.issue_device), ("receiver", args.receiver,
                                                                          ca.issue_receiver)):
        for name in names:
            issued = issue(name)
            print(f"{role:10} {name}: [mqtt.tls] ca_file = \"{ca.ca_file}\", cert_file = \"{issued.cert}\", "
                  f"key_file = \"{issued.key}\"")
    return 0


def cmd_broker_config(args: argparse.Namespace) -> int:
    from evidence.durable import atomic_write
    from mqtt.broker_config import BrokerSettings, find_plugin, render_conf, render_dynsec
    from mqtt.settings import MqttConfig
    from mqtt.tls import TlsFiles
    from provisioning.ca import CertificateAuthority

    try:
        prefix = MqttConfig(topic_prefix=args.prefix).topic_prefix
    except ConfigError as err:
        raise CentralError(f"--prefix: {err}") from err
    ca = CertificateAuthority.load(args.certs.resolve())
    broker = ca.broker_paths()
    if not broker.cert.exists():
        raise CentralError(f"{broker.cert} is missing: issue it with `recorder central certs --out {args.certs}`")
    receivers = ca.receivers()
    if not receivers:
        raise CentralError(f"no receiver certificate in {args.certs}: without one nothing may read entries or "
                           f"write receipts; issue one with `recorder central certs --out {args.certs} "
                           "--receiver NAME`")
    out = args.out.resolve()
    dynsec = (args.dynsec or out.with_name("dynamic-security.json")).resolve()
    if dynsec == out:
        raise CentralError(f"--dynsec: {dynsec} is the configuration file itself; name another")
    for path in {out.parent, dynsec.parent}:
        if not path.is_dir():
            raise CentralError(f"{path}: no such folder; create it first (mkdir -p {path})")
    plugin = args.plugin or find_plugin()
    if not plugin.is_file():
        raise CentralError(f"--plugin: {plugin} is not a file")
    if not ca.crl_file.exists():
        ca.write_crl()
    settings = BrokerSettings(port=args.port, bind=args.bind, tls=TlsFiles(ca.ca_file, broker.cert, broker.key),
                              dynsec_file=dynsec, crl_file=ca.crl_file, plugin=plugin,
                              persistence_dir=args.persistence_dir)
    if dynsec.exists():
        # The plugin's own file from now on: it holds every device added since. Only $CONTROL changes it.
        print(f"rights     {dynsec}: kept (the broker's plugin keeps it; `recorder central broker-sync` brings it "
              "in line with the enrolled and revoked devices)")
    else:
        atomic_write(dynsec, render_dynsec(prefix, receivers, ca.devices(), ca.admins()).encode(), mode=0o600)
        print(f"rights     {dynsec}: receivers {', '.join(receivers)}; admins {', '.join(ca.admins()) or 'none'}; "
              f"{len(ca.devices())} device(s) under {prefix}/, each to its own topics only")
    atomic_write(out, render_conf(settings).encode())
    print(f"config     {out}: port {args.port}, mutual TLS with {ca.ca_file}, revocation list {ca.crl_file}")
    print(f"run        mosquitto -c {out}  (its user must be able to read {broker.key} and write {dynsec})")
    return 0


def _enrollment(args: argparse.Namespace) -> Any:
    from central.enrollment import Enrollment
    from central.store import FileStore

    cfg = _config(args)
    return Enrollment(cfg, FileStore(_store_root(args, cfg)))


def _officer(text: str) -> Any:
    from provisioning.enrollment import Officer

    name, sep, certificate = text.partition(":")
    if not sep or not name.strip() or not certificate.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: give an officer as NAME:CERTIFICATE_NUMBER")
    return Officer(name.strip(), certificate.strip())


def _entry_officer(text: str) -> Any:
    from evidence.entry import Officer

    name, sep, certificate = text.partition(":")
    if not sep or not name.strip() or not certificate.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: give an officer as NAME:CERTIFICATE_NUMBER")
    return Officer(name.strip(), certificate.strip())


def cmd_token(args: argparse.Namespace) -> int:
    from provisioning.enrollment import Room

    enrollment = _enrollment(args)
    room = Room(args.device, args.unit, args.room, args.location, args.timezone, tuple(args.officer))
    issued = enrollment.issue_token(room, args.by, args.hours)
    settings = enrollment.config.enrollment
    host = settings.host or enrollment.config.mqtt.host
    print(f"token      {issued.token}")
    print(f"for        {room.device}: {room.unit}, {room.room}, {room.location}; issued by {args.by}; single use, "
          f"valid until {issued.expires}")
    print(f"on the box sudo recorder enroll https://{host}:{settings.port} {issued.token}")
    return 0


def cmd_enroll_server(args: argparse.Namespace) -> int:
    from central.enroll_server import EnrollServer

    enrollment = _enrollment(args)
    settings = enrollment.config.enrollment
    server = EnrollServer(enrollment, settings.listen, settings.port)
    stop = stop_on_signals()
    server.start(sync_every_s=settings.broker_sync_minutes * 60)
    log.info("taking enrollments on https://%s:%d (certificate pin %s)", settings.listen, server.port,
             enrollment.server_pin())
    stop.wait()
    server.stop()
    return 0


def cmd_approve_key(args: argparse.Namespace) -> int:
    key = _enrollment(args).approve_key(args.device, args.by, args.key)
    print(f"approved   {args.device}'s new key {key} (by {args.by}); its earlier keys stay on record, so its older "
          "sessions still verify. Run `recorder enroll` on the box again with its token.")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    for line in _enrollment(args).revoke(args.device, args.by, args.reason):
        print(f"revoked    {line}")
    return 0


def cmd_broker_sync(args: argparse.Namespace) -> int:
    change = _enrollment(args).broker_sync()
    print(change.said)
    return 0 if change.done else 1


def cmd_web(args: argparse.Namespace) -> int:
    from central.web.server import serve

    cfg = _config(args)
    serve(cfg, _store_root(args, cfg), args.listen, args.port)
    return 0


def _read_password(args: argparse.Namespace) -> str:
    import getpass
    import sys

    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise CentralError("the two passwords differ; nothing was changed")
    return first


def cmd_web_user(args: argparse.Namespace) -> int:
    """Create or change a staff account of the web application (the first administrator among them)."""
    import getpass

    from django.core.exceptions import ValidationError

    from central.web.server import prepare

    cfg = _config(args)
    prepare(cfg, _store_root(args, cfg))
    from django.db import transaction

    from central.web.access import audit
    from central.web.views.accounts import save_account

    password = _read_password(args) if args.password or args.password_stdin else ""
    try:
        with transaction.atomic():  # the change stands only if its audit record was written
            _, created = save_account(args.username, args.role, args.unit or "", password, not args.disable)
            audit(None, "account", args.username, {"created": created, "role": args.role, "unit": args.unit or "",
                                                    "active": not args.disable, "password_set": bool(password)},
                  username=f"cli:{getpass.getuser()}")
    except ValidationError as err:
        raise CentralError(f"{args.username}: " + "; ".join(err.messages)) from err
    print(f"{'created' if created else 'changed'} {args.username} ({args.role})")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """Check the access audit's chain and signatures (exit 1 if it is broken), or print it as CSV."""
    import csv
    import sys

    from central.audit import AUDIT_FILE, AuditLog
    from central.csv_cells import inert
    from provisioning.central_key import load_signing_key

    cfg = _config(args)
    if not cfg.receiver.signing_key_file and not args.key:
        raise CentralError("give --key (central's signing public key, base64) or receiver.signing_key_file")
    public = args.key or load_signing_key(Path(cfg.receiver.signing_key_file)).public_key_b64
    path = args.file or _store_root(args, cfg) / AUDIT_FILE
    if not path.is_file():
        raise CentralError(f"{path}: no access audit there")
    log_ = AuditLog(path, lambda _m: "", public, _zone(cfg))
    if args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(["seq", "time", "actor", "role", "action", "target", "detail", "address"])
        for r in log_.records():
            writer.writerow([r.seq, r.time, *map(inert, (r.actor, r.role, r.action, r.target,
                                                          json.dumps(r.detail, ensure_ascii=False), r.address))])
        return 0
    check = log_.check()
    if check.ok:
        print(f"audit holds: {check.records} records, chained and signed by {public[:12]}…; head {check.head}")
    else:
        print(f"AUDIT BROKEN: {check.records} records read")
        for problem in check.problems:
            print(f"  {problem}")
    if check.torn_tail:
        print("the last line is incomplete (central stopped while writing it); the next append moves it aside")
    return 0 if check.ok else 1


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """`recorder central …`, under the top-level parser's subcommands `sub`."""
    central = sub.add_parser("central", parents=[common], help="central's commands: receive, find, report",
                             description="Central's side: the receiver, enrolment, finding sessions, the late "
                                         "report, the index, central's key, certificates and the broker.")
    actions = central.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help_text: str, func: Any, store: bool = True) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(name, parents=[common], help=help_text,
                                                             description=help_text)
        if store:
            parser.add_argument("--config", type=Path,
                                help=f"central's configuration (default {config_mod.DEFAULT_FILE} if present)")
            parser.add_argument("--store", type=Path, help="central store folder (default receiver.store_dir)")
        parser.set_defaults(func=func)
        return parser

    serve = action("serve", "receive, verify and store what the devices send, and receipt it", cmd_serve)
    serve.add_argument("--host", help="the broker's address (default mqtt.host)")
    serve.add_argument("--port", type=_port, help="the broker's port (default mqtt.port)")

    enroll = action("enroll", "register a device's public signing key by hand (from `recorder identity` on it); "
                              "a changed key needs approve-key", cmd_enroll)
    enroll.add_argument("device", help="the device id (its device.id)")
    enroll.add_argument("key", help="its base64 Ed25519 public key")

    token = action("token", "a one-time enrollment token for a room's box (give it to the technician)", cmd_token)
    token.add_argument("--device", required=True, help="the box's device id (its MQTT topic and folder name)")
    token.add_argument("--unit", required=True, help="the unit the room belongs to")
    token.add_argument("--room", required=True, help="the room's name, as stamped on every frame")
    token.add_argument("--location", required=True, help="the room's address, as stamped on every frame")
    token.add_argument("--officer", action="append", default=[], type=_officer, metavar="NAME:CERT",
                       help="an officer who works in the room, with certificate number (repeatable)")
    token.add_argument("--timezone", default="Asia/Shanghai", help="the room's time zone (default Asia/Shanghai)")
    token.add_argument("--by", required=True, help="who issues the token (recorded)")
    token.add_argument("--hours", type=float, help="valid this long (default enrollment.token_hours)")

    action("enroll-server", "take the boxes' enrollment claims over HTTPS (enrollment.listen, enrollment.port)",
           cmd_enroll_server)

    approve = action("approve-key", "approve the changed signing key a box came back with (the old one stays on "
                                    "record)", cmd_approve_key)
    approve.add_argument("device", help="the device id whose new key waits (recorder central devices lists them)")
    approve.add_argument("--key", required=True, metavar="PREFIX",
                         help="the new key's first characters (8 or more), read on the box (recorder identity)")
    approve.add_argument("--by", required=True, help="who approves it (recorded)")

    revoke = action("revoke", "revoke a device (a stolen box): central refuses it, its certificate goes on the CRL, "
                              "the broker drops it", cmd_revoke)
    revoke.add_argument("device", help="the device id to revoke")
    revoke.add_argument("--by", required=True, help="who revokes it (recorded)")
    revoke.add_argument("--reason", required=True, help="why (recorded)")

    action("broker-sync", "make the broker's list of devices match central's enrolled and revoked devices",
           cmd_broker_sync)

    find = action("sessions", "list stored sessions matching every filter given (text matches if it contains "
                              "the value)", cmd_sessions)
    find.add_argument("--device", help="device number (exact)")
    find.add_argument("--officer", metavar="NAME_OR_CERT", help="an officer's name or certificate number")
    find.add_argument("--unit", help="part of the unit's name")
    find.add_argument("--case", help="part of the case reference or the matter")
    find.add_argument("--party", help="part of a party's name")
    find.add_argument("--from", dest="start", metavar="ISO",
                      help="in use at or after this date or time (no offset: the agency's time zone)")
    find.add_argument("--to", dest="end", metavar="ISO",
                      help="opened before this time, or by the end of this date (no offset: the agency's zone)")
    find.add_argument("--json", action="store_true", help="machine-readable output")

    late = action("late", "sessions late, at risk or past a warning of the upload deadline (exit 1 while any "
                          "is still incomplete)", cmd_late)
    late.add_argument("--limit-hours", metavar="H", help="the deadline after a recording ends (default "
                                                         "upload.deadline_hours)")
    late.add_argument("--warn-hours", metavar="H,H", help="warn about incomplete sessions this old (default "
                                                          "upload.warn_hours)")
    late.add_argument("--json", action="store_true", help="machine-readable output")

    alerts = action("alerts", "the devices' alerts that nobody has acknowledged yet (exit 1 while any waits)",
                    cmd_alerts)
    alerts.add_argument("--all", action="store_true", help="also the alerts already acknowledged")
    alerts.add_argument("--json", action="store_true", help="machine-readable output")
    alerts.add_argument("--ack", metavar="ID", help="acknowledge alert ID: record who took charge of it (needs --by)")
    alerts.add_argument("--by", metavar="NAME", help="with --ack: who acknowledges it")
    alerts.add_argument("--note", help="with --ack: what was done (e.g. head of unit told, explanation asked)")

    devices = action("devices", "fleet health: each device online or offline since when, its state, backlog, free "
                                "disk, clock, alerts and late sessions, as it last reported", cmd_devices)
    devices.add_argument("--json", action="store_true", help="machine-readable output")

    web = action("web", "serve the staff's web application (web.listen, web.port)", cmd_web)
    web.add_argument("--listen", help="address to listen on (default web.listen)")
    web.add_argument("--port", type=_port, help="port (default web.port)")

    user = action("web-user", "create or change a staff account of the web application (the first "
                              "administrator, for one)", cmd_web_user)
    user.add_argument("username", help="the account's log-in name (Chinese names work)")
    user.add_argument("--role", required=True, choices=config_mod.ROLES, help="what the account may do")
    user.add_argument("--unit", help="the unit of a viewer or supervisor (they see only its sessions)")
    user.add_argument("--password", action="store_true", help="set its password (asked twice)")
    user.add_argument("--password-stdin", action="store_true", help="set its password, read from one line of stdin")
    user.add_argument("--disable", action="store_true", help="disable the account (it cannot log in)")

    audit_cmd = action("audit", "check the access audit's chain and signatures (exit 1 if broken), or print it",
                       cmd_audit)
    audit_cmd.add_argument("--csv", action="store_true", help="print every record as CSV instead")
    audit_cmd.add_argument("--file", type=Path, help="the audit file (default audit.log in the store)")
    audit_cmd.add_argument("--key", help="central's signing public key, base64 (default: from "
                                         "receiver.signing_key_file)")

    book = action("book", "book a room (prints the booking's id), or with --change change a booking; the receiver "
                          "sends the room its new signed set", cmd_book)
    book.add_argument("--device", help="the room's device id (a new booking)")
    book.add_argument("--change", metavar="ID", help="change booking ID instead: the options given replace its fields")
    book.add_argument("--start", metavar="ISO", help="when it starts (no offset: the agency's time zone)")
    book.add_argument("--end", metavar="ISO", help="when it is expected to end (no offset: the agency's time zone)")
    book.add_argument("--case", help="the case reference")
    book.add_argument("--matter", help="the matter (事项), named in the notice and the closing statement")
    book.add_argument("--act", help="the enforcement act (执法行为), e.g. 询问 or 听证")
    book.add_argument("--party", action="append", metavar="NAME", help="a party (repeatable; with --change, the "
                                                                       "parties given replace the booking's)")
    book.add_argument("--officer", action="append", type=_entry_officer, metavar="NAME:CERT",
                      help="an officer, with certificate number (repeatable; with --change, they replace the "
                           "booking's)")
    book.add_argument("--retention", choices=RETENTION_CLASSES,
                      help="the retention class its session is to have at least (default everyday)")
    book.add_argument("--auto-start", action=argparse.BooleanOptionalAction, default=None,
                      help="start the session at the booked time without a button (pre-flight, then the notice)")
    book.add_argument("--by", required=True, metavar="NAME", help="who makes the booking or the change (recorded)")
    listed = action("bookings", "what is booked in each room, and the serial of the set each was last sent",
                    cmd_bookings)
    listed.add_argument("--device", help="one room's device id")
    listed.add_argument("--all", action="store_true", help="also bookings that are over or cancelled")
    listed.add_argument("--json", action="store_true", help="machine-readable output")
    cancel = action("cancel-booking", "cancel a booking: the room's next set leaves it out (it is kept on record)",
                    cmd_cancel_booking)
    cancel.add_argument("booking", metavar="ID", help="the booking's id (recorder central bookings lists them)")
    cancel.add_argument("--by", required=True, metavar="NAME", help="who cancels it (recorded)")

    action("reindex", "rebuild the session index from the stored sessions", cmd_reindex)
    kept = action("retention", "the retention report: each session's class, legal hold and when it expires",
                  cmd_retention)
    kept.add_argument("--expired", action="store_true", help="only the sessions whose retention has expired")
    kept.add_argument("--csv", action="store_true", help="as CSV")
    remove = action("remove", "remove an expired session's recordings (the records keeper's confirmation); its "
                              "entries, register and a signed tombstone stay", cmd_remove)
    remove.add_argument("device", help="the session's device id")
    remove.add_argument("session", help="the session id")
    remove.add_argument("--confirm", required=True, metavar="DEVICE/SESSION",
                        help="the session again, to confirm the removal")
    action("sweep", "judge every stored session again by the verifier's rules (exit 1 if any is broken); "
                    "`serve` does it every sweep.interval_hours", cmd_sweep)

    key = action("key", "create (or show) central's encryption key pair, and its receipt-signing key", cmd_key,
                 store=False)
    key.add_argument("--out", type=Path, required=True, help="where central's private key is kept (mode 0600)")
    key.add_argument("--signing-out", type=Path, metavar="FILE",
                     help="also create (or show) the key that signs receipts, kept here (mode 0600)")

    certs = action("certs", "a test CA and TLS certificates for the broker, devices and receivers", cmd_certs,
                   store=False)
    certs.add_argument("--out", type=Path, required=True, help="the CA's folder (created, or reused if it has one)")
    certs.add_argument("--device", action="append", default=[], metavar="ID",
                       help="issue a client certificate with CN = this device id (repeatable)")
    certs.add_argument("--receiver", action="append", default=[], metavar="NAME",
                       help="issue a client certificate with CN = this receiver name (repeatable)")
    certs.add_argument("--broker-host", action="append", default=[], metavar="HOST",
                       help="(re-)issue the broker's certificate for this name or address too (repeatable)")
    certs.add_argument("--enrollment-host", action="append", default=[], metavar="HOST",
                       help="(re-)issue central's enrollment certificate for this name or address too (repeatable)")
    certs.add_argument("--web-host", action="append", default=[], metavar="HOST",
                       help="issue the web application's HTTPS certificate for this name or address (repeatable)")

    broker = action("broker-config", "mosquitto.conf and the broker's rights for a mutual-TLS broker",
                    cmd_broker_config,
                    store=False)
    broker.add_argument("--certs", type=Path, required=True,
                        help="the CA folder of `recorder central certs`; its receiver certificates name the receivers")
    broker.add_argument("--port", type=_port, default=8883, help="listener port (default 8883)")
    broker.add_argument("--out", type=Path, required=True, help="the Mosquitto configuration file to write")
    broker.add_argument("--dynsec", type=Path,
                        help="the dynamic-security plugin's file (default: dynamic-security.json beside --out); "
                             "written only if absent")
    broker.add_argument("--plugin", type=Path, help="mosquitto_dynamic_security.so (default: found under /usr/lib)")
    broker.add_argument("--bind", help="address to listen on (default: every interface)")
    broker.add_argument("--prefix", default="recorders", help="the devices' mqtt.topic_prefix (default recorders)")
    broker.add_argument("--persistence-dir", type=Path, default=Path("/var/lib/mosquitto"),
                        help="where Mosquitto keeps its state (default /var/lib/mosquitto)")
