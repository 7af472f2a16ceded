"""Central's storage, behind one interface (`CentralStore`): nothing outside it builds a path into it, so
an object store with write-once retention (S3 Object Lock) can take the filesystem's place without
touching the receiver, the index or the web application.

`FileStore`'s layout under its root:
    devices/<device>.pub                     enrolled device key (base64 Ed25519 public key, then "\\n")
    sessions/<device>/<session>/entries/...  the session, in the same layout as the device spool
    sessions/<device>/<session>/media/...
    sessions/<device>/<session>/plain/...    decrypted working copies
    .staging/<device>/<session>/<file>       media chunks being assembled, not yet sealed by an entry
    alerts/<device>/<id>.json                a device's signed alert as received (evidence/alert.py)
    alerts/<device>/<id>.handled.json        who at central dealt with it, when, and what they noted
    devices/<device>.status.json             the device's latest status, as central/fleet.py reads it
    devices/<device>.presence.jsonl          each time it went online or offline, appended (for the statistics)
    register/<device>/<session>.files/<sha256><suffix>  files a register record names (a scanned, signed
                                             written explanation), write-once, 0640
    bookings/<device>.json                   the room's bookings, the last serial and set signed for it
                                             (central/bookings.py), 0640, replaced whole under bookings/.lock
    index.sqlite3                            the session index (central/index.py), derived from sessions/
Every commit is write-temp, flush, rename, flush (a group commit per batch of entries, evidence/durable.py).
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from central.errors import CentralError, KeyChangeRefused
from central.fleet import DeviceStatus, Presence
from evidence import layout
from evidence.alert import ALERT_ID, Alert, MalformedAlert, parse_alert
from evidence.durable import atomic_write, fsync_dir, group_commit, write_once
from evidence.entry import Entry, parse_entry
from evidence.errors import MalformedEntry, StorageFault
from evidence.hashing import EMPTY_SHA256, sha256_file
from evidence.layout import SessionFiles, SessionFolder
from mqtt.protocol import MediaChunk

PLAIN = "plain"
_EXPORT_NAME = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,100}\.iso\Z")
_SUFFIX = re.compile(r"\.[a-z0-9]{1,8}\Z")
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Commit:
    """One entry to store: its bytes as received and, for a segment, the media file it seals."""

    device: str
    session: str
    seq: int
    data: bytes
    media_file: str | None


@dataclasses.dataclass(frozen=True)
class StoredEntry:
    data: bytes
    stored_ts: float
    """When central stored it (POSIX seconds): the time its commit made it durable."""


@dataclasses.dataclass(frozen=True)
class Handling:
    """Someone at central dealt with an alert."""

    by: str
    at: str
    note: str


@dataclasses.dataclass(frozen=True)
class StoredAlert:
    alert: Alert
    stored_ts: float
    handled: Handling | None


class CentralStore(abc.ABC):
    @abc.abstractmethod
    def store_alert(self, alert: Alert) -> bool:
        """Keep a device's alert (durably, before it is acknowledged); False if it was already kept."""

    @abc.abstractmethod
    def alerts(self) -> list[StoredAlert]:
        """Every alert kept, oldest first."""

    @abc.abstractmethod
    def handle_alert(self, device: str, alert_id: str, by: str, note: str) -> StoredAlert:
        """Record that `by` dealt with the alert; CentralError if there is no such alert or it was handled."""

    @abc.abstractmethod
    def record_status(self, status: DeviceStatus) -> None:
        """Keep a device's latest status (monitoring, not evidence)."""

    @abc.abstractmethod
    def device_status(self, device: str) -> DeviceStatus | None: ...

    @abc.abstractmethod
    def presence(self, device: str) -> list[Presence]:
        """Each time the device went online or offline, as `record_status` kept it, oldest first; empty for a
        device never heard from since the history was first kept."""

    @abc.abstractmethod
    def record_selftest(self, device: str, report: bytes) -> None:
        """Keep a device's latest self-test report as it signed it (monitoring, not evidence)."""

    @abc.abstractmethod
    def latest_selftest(self, device: str) -> bytes | None: ...

    @abc.abstractmethod
    def enrolled(self) -> list[str]:
        """The devices with an enrolled key, in order."""

    @abc.abstractmethod
    def enroll(self, device: str, key_b64: str, record: dict[str, Any] | None = None,
               approved_by: str = "") -> bool:
        """Enroll `key_b64` as `device`'s signing key; False if it was already. A different key than the one
        enrolled is refused (KeyChangeRefused, and kept as pending) unless `approved_by` names the operator
        who approved the change; the old key stays on record (`device_keys`). `record` says how (who issued
        the token, the room, the certificate's serial...)."""

    @abc.abstractmethod
    def device_key(self, device: str) -> str | None:
        """The key `device` signs with now; None if it is not enrolled, or was revoked."""

    @abc.abstractmethod
    def device_keys(self, device: str) -> list[dict[str, Any]]:
        """Every key ever enrolled for `device`, oldest first, each with its record (`key`, `enrolled`,
        `retired`...): a session recorded under an older key still verifies against it."""

    def session_key(self, device: str, session: str) -> str | None:
        """The key to anchor `session` to: the one its `open` entry names if that was ever enrolled for the
        device (a session recorded before a key change), else the current key (and the verifier says the
        session's key is unknown)."""
        known = {k["key"] for k in self.device_keys(device)}
        data = self.get_entry(device, session, 0)
        if data is not None:
            try:
                opening = parse_entry(data).opening
            except MalformedEntry:
                opening = None
            if opening is not None and opening.device_key in known:
                return opening.device_key
        return self.device_key(device)

    def entries(self, device: str, session: str, whole: bool = True) -> list[Entry]:
        """The session's stored entries from seq 0, parsed. `whole`: every one stored, or CentralError naming
        the first missing (with a later one stored) or unreadable; else as far as they go without a gap."""
        entries: list[Entry] = []
        while (data := self.get_entry(device, session, len(entries))) is not None:
            try:
                entries.append(parse_entry(data))
            except MalformedEntry as err:
                if whole:
                    raise CentralError(f"entry {len(entries)} of {device}/{session} cannot be read ({err})") from err
                break
        if whole and any(seq >= len(entries) for seq in self.session_files(device, session).entry_seqs()):
            raise CentralError(f"entry {len(entries)} of {device}/{session} is missing, and later ones are stored")
        return entries

    @abc.abstractmethod
    def pending_key(self, device: str) -> dict[str, Any] | None:
        """A changed key that tried to enroll and waits for an operator's approval."""

    @abc.abstractmethod
    def revoke(self, device: str, by: str, reason: str) -> None:
        """From now on nothing from `device` is accepted; its keys stay on record for what it sent before."""

    @abc.abstractmethod
    def revocation(self, device: str) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    def stage_chunk(self, device: str, chunk: MediaChunk) -> None: ...

    @abc.abstractmethod
    def staged_matches(self, device: str, session: str, file: str, sha256: str, size: int) -> bool: ...

    @abc.abstractmethod
    def sweep_staging(self, older_than_s: float) -> int:
        """Remove staged chunks untouched for `older_than_s` (forged, or left by a segment stored since);
        the device resends whatever it still needs. Returns the files removed."""

    @abc.abstractmethod
    def get_entry(self, device: str, session: str, seq: int) -> bytes | None: ...

    @abc.abstractmethod
    def read_entry(self, device: str, session: str, seq: int) -> StoredEntry | None:
        """The stored entry with its storage time; None if not stored; OSError if it cannot be read."""

    @abc.abstractmethod
    def stored_time(self, device: str, session: str, seq: int) -> float | None:
        """When the entry was stored (as `read_entry` says), without reading it; None if it is not stored."""

    @abc.abstractmethod
    def commit(self, batch: Sequence[Commit], writer: str) -> None:
        """Durably store a batch of entries, each with the staged media it seals, if any: every media file
        is durable before any entry that seals it appears. All or part of a batch may be stored when this
        raises; each stored file is whole, and what is missing is stored again when resent. `writer` (the
        receiver's client id) keeps receivers sharing the store out of each other's temporary files."""

    @abc.abstractmethod
    def sessions(self) -> Iterator[tuple[str, str]]:
        """Every stored session, as (device, session), in order."""

    @abc.abstractmethod
    def session_files(self, device: str, session: str) -> SessionFiles:
        """The stored session as the verifier reads it."""

    @abc.abstractmethod
    def read_media(self, device: str, session: str, file: str) -> bytes: ...

    @abc.abstractmethod
    def has_working_copy(self, device: str, session: str, file: str) -> bool: ...

    @abc.abstractmethod
    def read_working_copy(self, device: str, session: str, file: str) -> bytes: ...

    @abc.abstractmethod
    def write_working_copy(self, device: str, session: str, file: str, data: bytes) -> None: ...

    @abc.abstractmethod
    def state_file(self, name: str) -> Path:
        """A local file for state derived from the store (the session index)."""

    @abc.abstractmethod
    def register_file(self, device: str, session: str, create: bool = True) -> Path:
        """The session's register (FORMAT §13): central's signed decisions about it, appended by
        central/register.py. With `create` its folder is made; the file may not exist yet."""

    @abc.abstractmethod
    def registers(self) -> Iterator[tuple[str, str]]:
        """Every session that has a register, in order."""

    @abc.abstractmethod
    def kept_exports(self, device: str, session: str) -> list[str]:
        """The names of the export packages kept of the session (FORMAT §14), in order."""

    @abc.abstractmethod
    def remove_exports(self, device: str, session: str) -> None:
        """Delete the export packages kept of the session: after its retention expired (central/retention.py,
        the tombstone naming them written first), a copy of the recording goes with it."""

    @abc.abstractmethod
    def remove_originals(self, device: str, session: str, files: Sequence[str]) -> None:
        """Delete these segment files of the session and their working copies; its entries stay. Only
        central/retention.py calls it, after it has written the signed `removal` record (the tombstone) that
        names exactly these files, for a session whose retention has expired."""

    @abc.abstractmethod
    def keep_attachment(self, device: str, session: str, data: bytes, suffix: str) -> str:
        """Keep a file that a register record names (a scanned, signed written explanation), under its SHA-256
        and `suffix` (such as ".pdf"), write-once and durable; returns the SHA-256. Keeping the same bytes
        again changes nothing."""

    @abc.abstractmethod
    def read_attachment(self, device: str, session: str, sha256: str) -> bytes:
        """A kept attachment's bytes, checked against its SHA-256; CentralError if none is kept under it."""

    @abc.abstractmethod
    def bookings_locked(self) -> contextlib.AbstractContextManager[None]:
        """Held while a booking is changed (central/bookings.py): one change at a time, from any thread of any
        process, so none is lost and no serial is signed twice."""

    @abc.abstractmethod
    def read_bookings(self, device: str) -> bytes | None:
        """The room's bookings record as last written; None if no booking was ever made for it."""

    @abc.abstractmethod
    def write_bookings(self, device: str, data: bytes) -> None:
        """Replace the room's bookings record durably (under `bookings_locked`)."""

    @abc.abstractmethod
    def booked_devices(self) -> list[str]:
        """The devices that have a bookings record, in order."""

    @abc.abstractmethod
    def bookings_stamps(self) -> dict[str, tuple[int, int, int]]:
        """For each device with a bookings record, a stamp that differs after every write: what the receiver
        looks at four times a second to publish a changed set (a listing and a stat per room)."""


def _holds(path: Path, sha256: str, size: int) -> bool:
    """The file is there, whole, with this content. The file alone says how far it got, so receivers
    sharing the store (and one restarted mid-segment) see each other's chunks. Until the size is right
    there is nothing to hash; after that a mismatch means a chunk in the middle is still missing."""
    try:
        if path.stat().st_size != size:
            return False
    except FileNotFoundError:
        return False
    digest, actual = sha256_file(path)
    return digest == sha256 and actual == size


class FileStore(CentralStore):
    def __init__(self, root: Path, create: bool = True) -> None:
        """The store in `root`; with `create` False (for commands that only read it) nothing is made."""
        self.root = root
        self._keys: dict[str, tuple[tuple[int, int, int], str]] = {}
        if create:
            try:
                # Owner and group only (NO-LEAK): the store holds recordings, names and the access audit.
                root.mkdir(mode=0o750, parents=True, exist_ok=True)
                for sub in ("devices", "sessions", ".staging"):
                    (root / sub).mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise CentralError(f"{root}: cannot make the central store there: {err.strerror or err}; give "
                                   "receiver.store_dir a folder central's user can write") from err

    @classmethod
    def holds_a_store(cls, root: Path) -> bool:
        """Whether `root` is a FileStore's folder (it has its sessions/ folder)."""
        return (root / "sessions").is_dir()

    @classmethod
    def locate(cls, session_path: Path) -> tuple[FileStore, str, str] | None:
        """The store, device and session a folder is, if it is a session inside a FileStore."""
        path = session_path.resolve()
        root = path.parent.parent.parent
        if (path.parent.parent.name != "sessions" or not layout.SESSION_ID.match(path.name)
                or not (root / "devices").is_dir()):
            return None
        return cls(root, create=False), path.parent.name, path.name

    def _device_file(self, device: str, suffix: str) -> Path:
        if not layout.DEVICE_ID.match(device):
            raise CentralError(f"{device!r} is not a device id")
        return self.root / "devices" / f"{device}{suffix}"

    def _read_json(self, path: Path) -> Any:
        try:
            return json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise CentralError(f"{path}: cannot read this device record: {err}; restore it from a backup") from err

    def _write_json(self, path: Path, value: Any) -> None:
        atomic_write(path, json.dumps(value, ensure_ascii=False, indent=1).encode() + b"\n")

    @contextlib.contextmanager
    def _devices_locked(self) -> Iterator[None]:
        """Enrolling and revoking, from any process (the enrollment server, `recorder central revoke`), one at a
        time: a revocation can never land between an enrollment's check and its write."""
        (self.root / "devices").mkdir(parents=True, exist_ok=True)
        with open(self.root / "devices" / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def enroll(self, device: str, key_b64: str, record: dict[str, Any] | None = None,
               approved_by: str = "") -> bool:
        with self._devices_locked():
            return self._enroll(device, key_b64, record, approved_by)

    def _enroll(self, device: str, key_b64: str, record: dict[str, Any] | None, approved_by: str) -> bool:
        if self.revocation(device) is not None:
            raise CentralError(f"device {device} was revoked: it cannot be enrolled again under that id; give the "
                               "replacement box a new device id")
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        current = self.device_key(device)
        if current == key_b64:
            return False
        entry = {"key": key_b64, "enrolled": now, **(record or {}), "retired": None}
        if current is not None:
            if not approved_by:
                self._write_json(self._device_file(device, ".pending.json"), entry)
                raise KeyChangeRefused(
                    f"device {device} already has a key, enrolled {self._since(device)}; a different key "
                    f"({key_b64[:12]}…) is not taken silently (a new card, or an impostor?): an operator who has "
                    f"seen that key on the box (recorder identity) approves it with `recorder central approve-key "
                    f"{device} --key {key_b64[:12]} --by NAME`, and sessions signed with the old key keep "
                    "verifying against it")
            entry["approved_by"] = approved_by
        history = self.device_keys(device)
        for old in history:
            if old.get("retired") is None:
                old["retired"] = now
        self._write_json(self._device_file(device, ".keys.json"), [*history, entry])
        atomic_write(self._device_file(device, ".pub"), key_b64.encode() + b"\n")
        self._device_file(device, ".pending.json").unlink(missing_ok=True)
        return True

    def _since(self, device: str) -> str:
        enrolled = [k.get("enrolled") for k in self.device_keys(device) if k.get("retired") is None]
        return f"on {enrolled[-1]}" if enrolled and enrolled[-1] else "before key records were kept"

    def device_keys(self, device: str) -> list[dict[str, Any]]:
        history = self._read_json(self._device_file(device, ".keys.json"))
        if isinstance(history, list):
            return [k for k in history if isinstance(k, dict) and isinstance(k.get("key"), str)]
        # Enrolled before key records were kept: the current key is the whole history.
        current = self._current_key(device)
        return [] if current is None else [{"key": current, "enrolled": None, "retired": None}]

    def pending_key(self, device: str) -> dict[str, Any] | None:
        pending = self._read_json(self._device_file(device, ".pending.json"))
        return pending if isinstance(pending, dict) else None

    def revoke(self, device: str, by: str, reason: str) -> None:
        with self._devices_locked():
            if self.revocation(device) is None:
                now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
                self._write_json(self._device_file(device, ".revoked.json"), {"by": by, "reason": reason, "time": now})
            self._device_file(device, ".pub").unlink(missing_ok=True)
            self._keys.pop(device, None)

    def revocation(self, device: str) -> dict[str, Any] | None:
        revoked = self._read_json(self._device_file(device, ".revoked.json"))
        return revoked if isinstance(revoked, dict) else None

    def enrolled(self) -> list[str]:
        folder = self.root / "devices"
        return sorted(p.stem for p in folder.glob("*.pub") if layout.DEVICE_ID.match(p.stem)) if folder.is_dir() else []

    def _status_path(self, device: str) -> Path:
        if not layout.DEVICE_ID.match(device):
            raise CentralError(f"{device!r} is not a device id")
        return self.root / "devices" / f"{device}.status.json"

    def record_status(self, status: DeviceStatus) -> None:
        data = {"online": status.online, "since": status.since, "received": status.received, "fields": status.fields}
        atomic_write(self._status_path(status.device), json.dumps(data, ensure_ascii=False).encode())
        # Judged against the history itself, not the receiver's memory, so a restarted receiver (or a second
        # one of a group) adds no line for a state already kept.
        last = self._last_presence(status.device)
        if last is None or last.online != status.online:
            self._append_presence(status)

    def _presence_path(self, device: str) -> Path:
        return self._status_path(device).with_name(f"{device}.presence.jsonl")

    @staticmethod
    def _presence_line(line: bytes) -> Presence | None:
        try:
            value = json.loads(line)
            since = dt.datetime.fromisoformat(value["since"])
            online = value["online"]
        except (ValueError, KeyError, TypeError):
            return None
        return Presence(since, online) if isinstance(online, bool) and since.tzinfo is not None else None

    def presence(self, device: str) -> list[Presence]:
        path = self._presence_path(device)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as err:
            raise CentralError(f"{path}: cannot read the device's presence history: {err.strerror or err}") from err
        # Only whole lines: a crash mid-append leaves a torn one, which holds nothing.
        return [p for line in data.split(b"\n")[:-1] if (p := self._presence_line(line)) is not None]

    def _last_presence(self, device: str) -> Presence | None:
        path = self._presence_path(device)
        try:
            with path.open("rb") as f:
                size = f.seek(0, os.SEEK_END)
                start = max(0, size - 4096)
                f.seek(start)
                lines = f.read().split(b"\n")[:-1]
        except FileNotFoundError:
            return None
        except OSError as err:
            raise StorageFault(f"{path}: cannot read the device's presence history: {err.strerror or err}") from err
        for line in reversed(lines[1:] if start else lines):  # the first may be cut off by the seek
            last = self._presence_line(line)
            if last is not None:
                return last
        return None

    def _append_presence(self, status: DeviceStatus) -> None:
        path = self._presence_path(status.device)
        line = json.dumps({"since": status.since, "online": status.online}).encode() + b"\n"
        try:
            created = not path.exists()
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line  # a torn last line stays a line of its own, not a prefix of this one
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                fsync_dir(path.parent)
        except OSError as err:
            raise StorageFault(f"could not append to {path}: {err.strerror or err}") from err

    def record_selftest(self, device: str, report: bytes) -> None:
        atomic_write(self._device_file(device, ".selftest.json"), report)

    def latest_selftest(self, device: str) -> bytes | None:
        try:
            return self._device_file(device, ".selftest.json").read_bytes()
        except FileNotFoundError:
            return None

    def device_status(self, device: str) -> DeviceStatus | None:
        path = self._status_path(device)
        try:
            data = json.loads(path.read_bytes())
            return DeviceStatus(device, bool(data["online"]), dict(data["fields"]), str(data["received"]),
                                str(data["since"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.error("%s: the kept status cannot be read: %s; it is written again at the next status", path, err)
            return None

    def device_key(self, device: str) -> str | None:
        return self._current_key(device)

    def _current_key(self, device: str) -> str | None:
        path = self.root / "devices" / f"{device}.pub"
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        # Asked twice per segment: read again only when the file changed (enrolment replaces it whole).
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._keys.get(device)
        if cached is None or cached[0] != stamp:
            try:
                cached = (stamp, path.read_text(encoding="ascii").strip())
            except (OSError, UnicodeDecodeError) as err:
                raise CentralError(f"{path}: cannot read {device}'s enrolled key: {err}; enroll it again "
                                   "(recorder central enroll)") from err
            self._keys[device] = cached
        return cached[1]

    def session_dir(self, device: str, session: str) -> Path:
        """The session's folder (a FileStore's own layout; other stores have none)."""
        return self.root / "sessions" / device / session

    def _staging(self, device: str, session: str, file: str) -> Path:
        return self.root / ".staging" / device / session / file

    def stage_chunk(self, device: str, chunk: MediaChunk) -> None:
        if layout.media_path(self.session_dir(device, chunk.session), chunk.file).exists():
            return  # already sealed and stored: a resend after a lost receipt; the entry gets its receipt again
        path = self._staging(device, chunk.session, chunk.file)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            written = os.pwrite(fd, chunk.data, chunk.offset)
            if written != len(chunk.data):
                raise OSError(f"short write staging {path}")
            if hasattr(os, "posix_fadvise"):
                # Start writing the chunk to disk now (Linux starts writeback of dirty pages on DONTNEED),
                # so the commit's flush finds little left to write: receiving overlaps with the disk.
                os.posix_fadvise(fd, chunk.offset, written, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)

    def staged_matches(self, device: str, session: str, file: str, sha256: str, size: int) -> bool:
        path = self._staging(device, session, file)
        try:
            if path.stat().st_size > size:
                # Chunks beyond the segment's end (forged, or from another segment of that name): it can never
                # match. Start again, so the device's resend completes the segment.
                path.unlink()
        except FileNotFoundError:
            pass
        if size == 0 and sha256 == EMPTY_SHA256 and not path.exists():
            # An empty segment (recovered after a crash) has no chunk to send; stage it as it is. If a
            # staging file exists, chunks came for it: it is judged like any other below.
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
            return True
        # A receiver stopped between committing the segment and its entry leaves the segment already in
        # place: it counts as staged, so the resent entry can still be stored.
        return _holds(path, sha256, size) or _holds(layout.media_path(self.session_dir(device, session), file),
                                                    sha256, size)

    def sweep_staging(self, older_than_s: float) -> int:
        cutoff = time.time() - older_than_s
        removed = 0
        for path in (self.root / ".staging").glob("*/*/*"):
            try:
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue  # another receiver of the group committed or swept it meanwhile
        return removed

    def get_entry(self, device: str, session: str, seq: int) -> bytes | None:
        stored = self.read_entry(device, session, seq)
        return None if stored is None else stored.data

    def read_entry(self, device: str, session: str, seq: int) -> StoredEntry | None:
        try:
            with layout.entry_path(self.session_dir(device, session), seq).open("rb") as f:
                return StoredEntry(f.read(), os.fstat(f.fileno()).st_mtime)
        except FileNotFoundError:
            return None

    def stored_time(self, device: str, session: str, seq: int) -> float | None:
        try:
            return layout.entry_path(self.session_dir(device, session), seq).stat().st_mtime
        except FileNotFoundError:
            return None

    def commit(self, batch: Sequence[Commit], writer: str) -> None:
        writes: list[tuple[Path, bytes]] = []
        moves: list[tuple[Path, Path]] = []
        for item in batch:
            session_dir = self.session_dir(item.device, item.session)
            for sub in (layout.ENTRIES, layout.MEDIA):
                (session_dir / sub).mkdir(parents=True, exist_ok=True)
            if item.media_file is not None:
                staged = self._staging(item.device, item.session, item.media_file)
                final = layout.media_path(session_dir, item.media_file)
                # Never over a stored segment: once in place (a receiver may have died before its entry),
                # a later staging copy, perhaps partial, must not replace it.
                if staged.exists() and not final.exists():
                    moves.append((staged, final))
                elif not final.exists():
                    # Judged staged, then gone (swept): never store an entry without its media.
                    raise StorageFault(f"{staged}: the staged segment of entry {item.seq} disappeared before it "
                                       "was stored; the device's resend stores it")
            writes.append((layout.entry_path(session_dir, item.seq), item.data))
        # One group commit for the batch: a few filesystem flushes instead of several fsyncs per entry.
        group_commit(self.root, writes, moves, writer)

    def sessions(self) -> Iterator[tuple[str, str]]:
        sessions = self.root / "sessions"
        for device_dir in sorted(sessions.iterdir()) if sessions.is_dir() else []:
            if device_dir.is_dir() and layout.DEVICE_ID.match(device_dir.name):
                for session_dir in sorted(device_dir.iterdir()):
                    if session_dir.is_dir() and layout.SESSION_ID.match(session_dir.name):
                        yield device_dir.name, session_dir.name

    def session_files(self, device: str, session: str) -> SessionFiles:
        return SessionFolder(self.session_dir(device, session))

    def read_media(self, device: str, session: str, file: str) -> bytes:
        return layout.media_path(self.session_dir(device, session), file).read_bytes()

    def _working_copy(self, device: str, session: str, file: str) -> Path:
        return self.session_dir(device, session) / PLAIN / file

    def has_working_copy(self, device: str, session: str, file: str) -> bool:
        return self._working_copy(device, session, file).exists()

    def read_working_copy(self, device: str, session: str, file: str) -> bytes:
        return self._working_copy(device, session, file).read_bytes()

    def write_working_copy(self, device: str, session: str, file: str, data: bytes) -> None:
        target = self._working_copy(device, session, file)
        target.parent.mkdir(mode=0o750, exist_ok=True)
        # Owner and group only: the decrypted copy is the recording in the clear.
        atomic_write(target, data, mode=0o640)

    def state_file(self, name: str) -> Path:
        return self.root / name

    def register_file(self, device: str, session: str, create: bool = True) -> Path:
        if not layout.DEVICE_ID.match(device) or not layout.SESSION_ID.match(session):
            raise CentralError(f"{device!r}/{session!r} is not a device and session id")
        folder = self.root / "register" / device
        if create and not folder.is_dir():
            try:
                for level in (folder.parent, folder):
                    if not level.is_dir():
                        level.mkdir(mode=0o750, exist_ok=True)
                        fsync_dir(level.parent)
            except OSError as err:
                raise CentralError(f"{folder}: cannot make the register's folder: {err.strerror or err}") from err
        return folder / f"{session}.log"

    def export_path(self, device: str, session: str, name: str) -> Path:
        """Where an export package of the session is kept (exports/<device>/<session>/<name>, 0750 folders):
        the copy central keeps of every copy it hands out (ACCESS)."""
        if not _EXPORT_NAME.match(name):
            raise CentralError(f"{name!r} is not an export package's name (letters, digits, '.', '_', '-'; .iso)")
        folder = self._exports_dir(device, session)
        try:
            for level in (folder.parent.parent, folder.parent, folder):
                if not level.is_dir():
                    level.mkdir(mode=0o750, exist_ok=True)  # another export may make it too
                    fsync_dir(level.parent)
        except OSError as err:
            raise CentralError(f"{folder}: cannot make the exports folder: {err.strerror or err}") from err
        return folder / name

    def registers(self) -> Iterator[tuple[str, str]]:
        root = self.root / "register"
        for device_dir in sorted(root.iterdir()) if root.is_dir() else []:
            if device_dir.is_dir() and layout.DEVICE_ID.match(device_dir.name):
                for file in sorted(device_dir.glob("*.log")):
                    if layout.SESSION_ID.match(file.stem):
                        yield device_dir.name, file.stem

    def _exports_dir(self, device: str, session: str) -> Path:
        if not layout.DEVICE_ID.match(device) or not layout.SESSION_ID.match(session):
            raise CentralError(f"{device!r}/{session!r} is not a device and session id")
        return self.root / "exports" / device / session

    def kept_exports(self, device: str, session: str) -> list[str]:
        folder = self._exports_dir(device, session)
        return sorted(p.name for p in folder.glob("*.iso")) if folder.is_dir() else []

    def remove_exports(self, device: str, session: str) -> None:
        folder = self._exports_dir(device, session)
        for name in self.kept_exports(device, session):
            try:
                (folder / name).unlink()
            except FileNotFoundError:
                continue
            except OSError as err:
                raise CentralError(f"{folder / name}: cannot remove it after the session's retention expired: "
                                   f"{err.strerror or err}") from err
        if folder.is_dir():
            fsync_dir(folder)

    def remove_originals(self, device: str, session: str, files: Sequence[str]) -> None:
        folder = self.session_dir(device, session)
        touched = set()
        bad = [f for f in files if not layout.MEDIA_NAME.match(f)]
        if bad:
            raise CentralError(f"{bad[0]!r} is not a segment file's name: only segment files are ever removed")
        for file in files:
            for path in (layout.media_path(folder, file), self._working_copy(device, session, file)):
                try:
                    path.unlink()
                except FileNotFoundError:
                    continue  # removed by an earlier attempt that stopped part way
                except OSError as err:
                    raise CentralError(f"{path}: cannot remove it after its retention expired: "
                                       f"{err.strerror or err}") from err
                touched.add(path.parent)
        for parent in touched:
            fsync_dir(parent)

    def _attachments(self, device: str, session: str) -> Path:
        return self.register_file(device, session).with_name(f"{session}.files")

    def keep_attachment(self, device: str, session: str, data: bytes, suffix: str) -> str:
        if not _SUFFIX.match(suffix):
            raise CentralError(f"{suffix!r} is not a file suffix such as '.pdf'")
        digest = hashlib.sha256(data).hexdigest()
        folder = self._attachments(device, session)
        path = folder / f"{digest}{suffix}"
        try:
            if not folder.is_dir():
                folder.mkdir(mode=0o750, exist_ok=True)
                fsync_dir(folder.parent)
            if path.exists():
                if sha256_file(path)[0] != digest:
                    raise CentralError(f"{path}: the file kept under this hash no longer matches it; have the "
                                       "store looked at (nothing was written)")
                return digest
            write_once(path, data)  # False: the same bytes, kept by a concurrent upload
        except (OSError, StorageFault) as err:
            raise CentralError(f"{path}: cannot keep the attachment: {err}") from err
        return digest

    def read_attachment(self, device: str, session: str, sha256: str) -> bytes:
        if not _SHA256.match(sha256):
            raise CentralError(f"{sha256!r} is not a SHA-256 (64 lowercase hex digits)")
        folder = self._attachments(device, session)
        found = sorted(folder.glob(f"{sha256}.*")) if folder.is_dir() else []
        if not found:
            raise CentralError(f"no attachment {sha256} is kept with session {device}/{session}")
        try:
            data = found[0].read_bytes()
        except OSError as err:
            raise CentralError(f"{found[0]}: cannot read the attachment: {err.strerror or err}") from err
        if hashlib.sha256(data).hexdigest() != sha256:
            raise CentralError(f"{found[0]}: the attachment no longer matches its SHA-256; have the store looked at")
        return data

    def _bookings_path(self, device: str) -> Path:
        if not layout.DEVICE_ID.match(device):
            raise CentralError(f"{device!r} is not a device id")
        return self.root / "bookings" / f"{device}.json"

    @contextlib.contextmanager
    def bookings_locked(self) -> Iterator[None]:
        folder = self.root / "bookings"
        try:
            if not folder.is_dir():
                folder.mkdir(mode=0o750, exist_ok=True)
                fsync_dir(self.root)
            # A descriptor of its own each time: flock then keeps out the other threads of this process too.
            fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o640)
        except OSError as err:
            raise CentralError(f"{folder}: cannot make or lock the bookings folder: {err.strerror or err}") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def read_bookings(self, device: str) -> bytes | None:
        path = self._bookings_path(device)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise CentralError(f"{path}: cannot read the room's bookings: {err.strerror or err}") from err

    def write_bookings(self, device: str, data: bytes) -> None:
        # Owner and group only: bookings name parties and cases.
        atomic_write(self._bookings_path(device), data, mode=0o640)

    def booked_devices(self) -> list[str]:
        return sorted(self.bookings_stamps())

    def bookings_stamps(self) -> dict[str, tuple[int, int, int]]:
        stamps: dict[str, tuple[int, int, int]] = {}
        try:
            names = os.listdir(self.root / "bookings")
        except FileNotFoundError:
            return stamps
        for name in names:
            device = name[:-5]
            if name.endswith(".json") and layout.DEVICE_ID.match(device):
                try:
                    st = os.stat(self.root / "bookings" / name)
                except FileNotFoundError:
                    continue
                # Each write replaces the file (a new inode), so the stamp changes even within a clock tick.
                stamps[device] = (st.st_ino, st.st_mtime_ns, st.st_size)
        return stamps

    def _alert_path(self, device: str, alert_id: str, suffix: str = ".json") -> Path:
        if not layout.DEVICE_ID.match(device) or not ALERT_ID.match(alert_id):
            raise CentralError(f"no alert {device}/{alert_id}: a device id and a 16-digit alert id are expected")
        return self.root / "alerts" / device / f"{alert_id}{suffix}"

    def store_alert(self, alert: Alert) -> bool:
        path = self._alert_path(alert.device, alert.id)
        try:
            kept = path.read_bytes()
        except FileNotFoundError:
            if not path.parent.is_dir():
                # A device's first alert: its folder is made durable too, before the alert is acknowledged.
                path.parent.mkdir(parents=True, exist_ok=True)
                fsync_dir(path.parent.parent)
                fsync_dir(self.root)
            atomic_write(path, alert.raw)
            return True
        if kept != alert.raw:
            # Alert ids are random: another alert under a kept one's id is forged or broken. The first stays.
            raise CentralError(f"alert {alert.device}/{alert.id} differs from the one kept under that id; the kept "
                               "one stays")
        return False

    def alerts(self) -> list[StoredAlert]:
        found: list[StoredAlert] = []
        for path in sorted((self.root / "alerts").glob("*/*.json")):
            if path.name.endswith(".handled.json"):
                continue
            try:
                alert = parse_alert(path.read_bytes())
                found.append(StoredAlert(alert, path.stat().st_mtime, self._handling(alert.device, alert.id)))
            except (OSError, MalformedAlert, ValueError, KeyError, TypeError) as err:
                # One damaged file must not hide every other alert: it is named, and the rest are listed.
                log.error("%s: the kept alert cannot be read: %s; the other alerts are listed", path, err)
        return sorted(found, key=lambda a: (a.stored_ts, a.alert.id))

    def _handling(self, device: str, alert_id: str) -> Handling | None:
        try:
            value = json.loads(self._alert_path(device, alert_id, ".handled.json").read_bytes())
        except FileNotFoundError:
            return None
        return Handling(str(value["by"]), str(value["at"]), str(value["note"]))

    def handle_alert(self, device: str, alert_id: str, by: str, note: str) -> StoredAlert:
        path = self._alert_path(device, alert_id)
        try:
            alert = parse_alert(path.read_bytes())
        except FileNotFoundError as err:
            raise CentralError(f"no alert {alert_id} from {device}; `recorder central alerts` lists them") from err
        except (OSError, MalformedAlert) as err:
            raise CentralError(f"{path}: the kept alert cannot be read: {err}") from err
        if self._handling(device, alert_id) is not None:
            raise CentralError(f"alert {alert_id} was already acknowledged; see `recorder central alerts --all`")
        handling = Handling(by, dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), note)
        atomic_write(self._alert_path(device, alert_id, ".handled.json"),
                     json.dumps(dataclasses.asdict(handling), ensure_ascii=False).encode())
        return StoredAlert(alert, path.stat().st_mtime, handling)
