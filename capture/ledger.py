"""The session ledger: every event and every segment, one signed entry each, chained by hash.

An entry is canonical JSON (sorted keys, no spaces, UTF-8). Its hash is SHA-256(0x00 || canonical bytes
without "sig") — the RFC 6962 leaf prefix, so an entry hash can never collide with a Merkle node hash —
and each entry names the hash of the one before in "prev". "sig" is Ed25519 over
SIGN_CONTEXT || canonical bytes without "sig". See docs/FORMAT.md.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from capture import layout
from capture.durable import atomic_write
from capture.errors import CaptureError

FORMAT_VERSION = 1
GENESIS = "0" * 64
SIGN_CONTEXT = b"room-recorder/ledger/v1\x00"
LEAF_PREFIX = b"\x00"
MAX_ENTRY_BYTES = 64 * 1024

KINDS = ("open", "event", "segment", "interruption", "close")


class Signer(Protocol):
    public_key_b64: str

    def sign(self, message: bytes) -> str: ...


class WallClock(Protocol):
    def monotonic_ns(self) -> int: ...

    def is_synchronised(self) -> bool: ...

    def now(self) -> Any: ...


def canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def unsigned(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k != "sig"}


def entry_hash(entry: dict[str, Any]) -> str:
    return hashlib.sha256(LEAF_PREFIX + canonical(unsigned(entry))).hexdigest()


def signed_message(entry: dict[str, Any]) -> bytes:
    return SIGN_CONTEXT + canonical(unsigned(entry))


def parse_entry(data: bytes) -> dict[str, Any]:
    """Parse one stored or received entry; raises CaptureError naming what is malformed."""
    if len(data) > MAX_ENTRY_BYTES:
        raise CaptureError(f"entry is {len(data)} bytes, over the {MAX_ENTRY_BYTES}-byte limit")
    try:
        entry = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CaptureError(f"entry is not UTF-8 JSON: {err}") from err
    if not isinstance(entry, dict):
        raise CaptureError("entry is not a JSON object")
    required = {"v": int, "device": str, "session": str, "seq": int, "kind": str, "prev": str,
                "time": str, "mono_ns": int, "clock_synced": bool, "body": dict, "sig": str}
    for key, typ in required.items():
        if not isinstance(entry.get(key), typ) or (typ is int and isinstance(entry.get(key), bool)):
            raise CaptureError(f"entry field {key!r} is missing or not a {typ.__name__}")
    extra = set(entry) - set(required)
    if extra:
        raise CaptureError(f"entry has unknown fields: {', '.join(sorted(extra))}")
    if entry["kind"] not in KINDS:
        raise CaptureError(f"entry kind {entry['kind']!r} is not one of {', '.join(KINDS)}")
    if entry["v"] != FORMAT_VERSION:
        raise CaptureError(f"entry format version {entry['v']} is not supported (expected {FORMAT_VERSION})")
    if entry["seq"] < 0:
        raise CaptureError("entry seq is negative")
    if not layout.DEVICE_ID.match(entry["device"]) or not layout.SESSION_ID.match(entry["session"]):
        raise CaptureError("entry device or session id is malformed")
    return entry


@dataclass(frozen=True)
class Appended:
    seq: int
    entry: dict[str, Any]
    hash: str


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
    ) -> None:
        self.session_dir = session_dir
        self.device_id = device_id
        self.session_id = session_id
        self._signer = signer
        self._clock = clock
        self._lock = threading.Lock()
        self._next_seq = next_seq
        self._prev = prev_hash
        self._listeners: list[Callable[[Appended], None]] = []
        self.hashes: list[str] = []
        """Hash of every entry so far, in order: the leaves of the session's Merkle tree."""
        layout.make_dirs(session_dir)

    @classmethod
    def resume(cls, session_dir: Path, signer: Signer, clock: WallClock) -> Ledger:
        """Continue a session's ledger from its files alone (after a restart)."""
        seqs = layout.entry_seqs(session_dir)
        if not seqs:
            raise CaptureError(f"{session_dir} has no ledger entries to resume from")
        entries = [parse_entry(layout.entry_path(session_dir, s).read_bytes()) for s in seqs]
        last = entries[-1]
        ledger = cls(session_dir, last["device"], last["session"], signer, clock, last["seq"] + 1, entry_hash(last))
        ledger.hashes = [entry_hash(e) for e in entries]
        return ledger

    def subscribe(self, listener: Callable[[Appended], None]) -> None:
        self._listeners.append(listener)

    @property
    def next_seq(self) -> int:
        return self._next_seq

    def append(self, kind: str, body: dict[str, Any]) -> Appended:
        if kind not in KINDS:
            raise CaptureError(f"unknown ledger entry kind {kind!r}")
        with self._lock:
            entry: dict[str, Any] = {
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
            entry["sig"] = self._signer.sign(signed_message(entry))
            atomic_write(layout.entry_path(self.session_dir, self._next_seq), canonical(entry))
            appended = Appended(self._next_seq, entry, entry_hash(entry))
            self.hashes.append(appended.hash)
            self._prev = appended.hash
            self._next_seq += 1
        for listener in self._listeners:
            listener(appended)
        return appended
