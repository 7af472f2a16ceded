"""Central's storage, behind one interface so an object store can take the filesystem's place.

Filesystem layout under the store root:
    devices/<device>.pub                     enrolled device key (base64 Ed25519 public key)
    sessions/<device>/<session>/entries/...  the session, in the same layout as the device spool
    sessions/<device>/<session>/media/...
    .staging/<device>/<session>/<file>       media chunks being assembled, not yet sealed by an entry
    index.sqlite3                            the session index (mqtt/index.py), derived from sessions/
Every commit is write-temp, flush, rename, flush (a group commit per batch of entries, capture/durable.py).
"""

from __future__ import annotations

import abc
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from capture import layout
from capture.durable import atomic_write, group_commit
from capture.sealer import sha256_file
from mqtt.protocol import MediaChunk

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True)
class Commit:
    """One entry to store: its bytes as received and, for a segment, the media file it seals."""

    device: str
    session: str
    seq: int
    data: bytes
    media_file: str | None


class CentralStore(abc.ABC):
    @abc.abstractmethod
    def enroll(self, device: str, key_b64: str) -> None: ...

    @abc.abstractmethod
    def device_key(self, device: str) -> str | None: ...

    @abc.abstractmethod
    def stage_chunk(self, device: str, chunk: MediaChunk) -> None: ...

    @abc.abstractmethod
    def staged_matches(self, device: str, session: str, file: str, sha256: str, size: int) -> bool: ...

    @abc.abstractmethod
    def get_entry(self, device: str, session: str, seq: int) -> bytes | None: ...

    @abc.abstractmethod
    def commit(self, batch: Sequence[Commit], writer: str) -> None:
        """Durably store a batch of entries, each with the staged media it seals, if any: every media file
        is durable before any entry that seals it appears. All or part of a batch may be stored when this
        raises; each stored file is whole, and what is missing is stored again when resent. `writer` (the
        receiver's client id) keeps receivers sharing the store out of each other's temporary files."""

    @abc.abstractmethod
    def session_dir(self, device: str, session: str) -> Path: ...


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
    def __init__(self, root: Path) -> None:
        self.root = root
        self._keys: dict[str, tuple[tuple[int, int, int], str]] = {}
        for sub in ("devices", "sessions", ".staging"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    def enroll(self, device: str, key_b64: str) -> None:
        atomic_write(self.root / "devices" / f"{device}.pub", key_b64.encode() + b"\n")

    def device_key(self, device: str) -> str | None:
        path = self.root / "devices" / f"{device}.pub"
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        # Asked twice per segment: read again only when the file changed (enrolment replaces it whole).
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._keys.get(device)
        if cached is None or cached[0] != stamp:
            cached = (stamp, path.read_text().strip())
            self._keys[device] = cached
        return cached[1]

    def session_dir(self, device: str, session: str) -> Path:
        return self.root / "sessions" / device / session

    def _staging(self, device: str, session: str, file: str) -> Path:
        return self.root / ".staging" / device / session / file

    def stage_chunk(self, device: str, chunk: MediaChunk) -> None:
        if layout.media_path(self.session_dir(device, chunk.session), chunk.file).exists():
            return  # already sealed and stored: a resend after a lost receipt; the entry gets its receipt again
        path = self._staging(device, chunk.session, chunk.file)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
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

    def get_entry(self, device: str, session: str, seq: int) -> bytes | None:
        path = layout.entry_path(self.session_dir(device, session), seq)
        return path.read_bytes() if path.exists() else None

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
            writes.append((layout.entry_path(session_dir, item.seq), item.data))
        # One group commit for the batch: a few filesystem flushes instead of several fsyncs per entry.
        group_commit(self.root, writes, moves, writer)
