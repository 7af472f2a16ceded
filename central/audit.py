"""Central's access audit file (FORMAT §12): appended by the web application and the commands, one signed
record per line, under an exclusive lock so several processes (the server's threads, a command) never
interleave or fork the chain.

Each append is written and fsynced before the action it records is answered; the file is owner-only
(0600). A line left incomplete by a crash is moved aside whole (`audit.log.torn-<offset>`), never dropped,
before the next record is appended.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from central.errors import CentralError
from evidence.audit import (
    AUDIT,
    AuditCheck,
    AuditRecord,
    LogKind,
    MalformedAudit,
    check_audit,
    make_record,
    parse_record,
)
from evidence.durable import atomic_write, fsync_dir
from evidence.entry import GENESIS
from evidence.keys import load_public_key_b64

AUDIT_FILE = "audit.log"
_TAIL = 64 * 1024


class AuditLog:
    def __init__(self, path: Path, sign: Callable[[bytes], str], public_key_b64: str,
                 zone: dt.tzinfo | None = None, kind: LogKind = AUDIT) -> None:
        self.path = path
        self.kind = kind
        self.sign = sign
        self.public_key_b64 = public_key_b64
        self.zone = zone
        if not path.exists():
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
                fsync_dir(path.parent)
            except OSError as err:
                raise CentralError(f"{path}: cannot make the {kind.name}: {err.strerror or err}") from err

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
        except OSError as err:
            raise CentralError(f"{self.path}: cannot open the {self.kind.name}: {err.strerror or err}") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)

    def _last(self, fd: int) -> tuple[int, str]:
        """The seq and hash of the last record, after moving a torn tail aside."""
        size = os.fstat(fd).st_size
        if size == 0:
            return -1, GENESIS
        start = max(0, size - _TAIL)
        tail = os.pread(fd, size - start, start)
        if not tail.endswith(b"\n"):
            cut = tail.rfind(b"\n") + 1
            torn_at = start + cut
            atomic_write(self.path.with_name(f"{self.path.name}.torn-{torn_at}"), tail[cut:], mode=0o600)
            os.truncate(fd, torn_at)
            os.fsync(fd)
            tail = tail[:cut]
            if not tail:
                return (-1, GENESIS) if torn_at == 0 else self._last(fd)
        line = tail[: -1].rsplit(b"\n", 1)[-1]
        try:
            record = parse_record(line, self.kind)
        except MalformedAudit as err:
            raise CentralError(f"{self.path}: its last record is damaged ({err}); nothing can be appended until "
                               "`recorder central audit --check` has been run and the file restored") from err
        return record.seq, record.hash

    def append(self, actor: str, role: str, action: str, target: str = "", detail: Mapping[str, Any] | None = None,
               address: str = "", precondition: Callable[[], None] | None = None) -> AuditRecord:
        """Append one record. `precondition` runs under the lock before it is written (and raises to refuse
        it), so a decision that depends on the records before it cannot race another writer's."""
        now = dt.datetime.now(self.zone or dt.UTC).astimezone(self.zone)
        with self._locked() as fd:
            seq, prev = self._last(fd)
            if precondition is not None:
                precondition()
            record = make_record(seq + 1, prev, now.isoformat(timespec="milliseconds"), actor, role, action,
                                 target, detail or {}, address, self.sign, self.kind)
            data = record.raw + b"\n"
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError as err:
                raise CentralError(f"{self.path}: cannot append to the {self.kind.name}: "
                                   f"{err.strerror or err}") from err
        return record

    def records(self) -> Iterator[AuditRecord]:
        """Every complete, well-formed record, oldest first (check() says whether the file holds)."""
        with self.path.open("rb") as f:
            for line in f:
                if line.endswith(b"\n"):
                    with contextlib.suppress(MalformedAudit):
                        yield parse_record(line[:-1], self.kind)

    def check(self) -> AuditCheck:
        with self.path.open("rb") as f:
            return check_audit(f, load_public_key_b64(self.public_key_b64), self.kind)
