"""The session ledger: every event and every segment, one signed entry each, chained by hash.

Entries are made by the evidence core (`evidence.entry.sign_entry`, which parses each back before it is
written, so the device never writes an entry the format refuses) and committed one file each, durably,
before anyone hears of them. See docs/FORMAT.md.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from capture.errors import CaptureError
from evidence import layout
from evidence.durable import atomic_write
from evidence.entry import FORMAT_VERSION, GENESIS, KINDS, Entry, parse_entry, sign_entry
from evidence.errors import EvidenceError
from evidence.merkle import CompactTree


class Signer(Protocol):
    public_key_b64: str

    def sign(self, message: bytes) -> str: ...


class WallClock(Protocol):
    def monotonic_ns(self) -> int: ...

    def is_synchronised(self) -> bool: ...

    def now(self) -> Any: ...


class Ledger:
    """Appends entries durably (one file each) and tells listeners; safe to call from any thread."""

    def __init__(
        self,
        session_dir: Path,
        device_id: str,
        session_id: str,
        signer: Signer,
        clock: WallClock,
        next_seq: int = 0,
        prev_hash: str = GENESIS,
        tree: CompactTree | None = None,
    ) -> None:
        self.session_dir = session_dir
        self.device_id = device_id
        self.session_id = session_id
        self._signer = signer
        self._clock = clock
        self._lock = threading.Lock()
        self._next_seq = next_seq
        self._prev = prev_hash
        self._listeners: list[Callable[[Entry], None]] = []
        self.tree = tree or CompactTree()
        """The Merkle tree of every entry so far (the closing entry carries its root)."""
        layout.make_dirs(session_dir)

    @classmethod
    def resume(cls, session_dir: Path, entries: list[Entry], signer: Signer, clock: WallClock) -> Ledger:
        """Continue a session's ledger after its `entries` (read from its files after a restart)."""
        if not entries:
            raise CaptureError(f"{session_dir} has no ledger entries to resume from")
        tree = CompactTree()
        for entry in entries:
            tree.append(bytes.fromhex(entry.hash))
        last = entries[-1]
        return cls(session_dir, last.device, last.session, signer, clock, last.seq + 1, last.hash, tree)

    def subscribe(self, listener: Callable[[Entry], None]) -> None:
        self._listeners.append(listener)

    @property
    def next_seq(self) -> int:
        return self._next_seq

    def append(self, kind: str, body: dict[str, Any]) -> Entry:
        if kind not in KINDS:
            raise CaptureError(f"unknown ledger entry kind {kind!r}")
        with self._lock:
            fields: dict[str, Any] = {
                "v": FORMAT_VERSION,
                "device": self.device_id,
                "session": self.session_id,
                "seq": self._next_seq,
                "kind": kind,
                "prev": self._prev,
                "time": self._clock.now().isoformat(timespec="milliseconds"),
                "mono_ns": self._clock.monotonic_ns(),
                "clock_synced": self._clock.is_synchronised(),
                "body": body,
            }
            try:
                entry = sign_entry(fields, self._signer.sign)
            except EvidenceError as err:
                raise CaptureError(f"the {kind} entry cannot be written: {err}") from err
            atomic_write(layout.entry_path(self.session_dir, entry.seq), entry.raw)
            self.tree.append(bytes.fromhex(entry.hash))
            self._prev = entry.hash
            self._next_seq += 1
        for listener in self._listeners:
            listener(entry)
        return entry


def read_entries(session_dir: Path) -> list[Entry]:
    """Every entry of a session folder, in order; raises OSError or MalformedEntry at the first bad one."""
    return [parse_entry(layout.entry_path(session_dir, seq).read_bytes()) for seq in layout.entry_seqs(session_dir)]
