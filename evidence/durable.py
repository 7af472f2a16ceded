"""Durable file commits: write to a temporary name, fsync, rename, fsync the directory.

A crash at any point leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from evidence.errors import StorageFault


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, data: bytes, mode: int, flags: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | flags, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        _write_synced(tmp, data, mode, os.O_TRUNC)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as err:
        raise StorageFault(f"could not commit {path}: {err.strerror or err}") from err


def write_once(path: Path, data: bytes, mode: int = 0o640) -> bool:
    """Commit `data` at `path` unless a file is there already, which is never replaced (write-once): a
    temporary file, flushed, then linked to its name (a link fails where a rename would replace), the folder
    flushed. False if `path` existed."""
    tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")
    try:
        _write_synced(tmp, data, mode, os.O_EXCL)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            tmp.unlink()
        fsync_dir(path.parent)
    except OSError as err:
        raise StorageFault(f"could not commit {path}: {err.strerror or err}") from err
    return True


def commit_rename(src: Path, dst: Path) -> None:
    """Make a file written in place (a closed segment) durable under its final name."""
    try:
        fsync_file(src)
        os.replace(src, dst)
        fsync_dir(dst.parent)
    except OSError as err:
        raise StorageFault(f"could not commit {dst}: {err.strerror or err}") from err


@functools.cache
def _syncfs() -> Callable[[int], int] | None:
    """Linux's syncfs(2), looked up on first use: one flush of a whole filesystem."""
    try:
        function: Callable[[int], int] = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    return function


def _flush(anchor: Path, files: Iterable[Path], dirs: Iterable[Path]) -> None:
    """Make `files` and the entries of `dirs` durable: with syncfs, one flush of `anchor`'s filesystem
    for all of them (and whatever else is dirty there); without it, an fsync of each."""
    syncfs = _syncfs()
    if syncfs is None:
        for path in files:
            fsync_file(path)
        for directory in dirs:
            fsync_dir(directory)
        return
    fd = os.open(anchor, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if syncfs(fd) != 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error), str(anchor))
    finally:
        os.close(fd)


def temporary_name(path: Path, writer: str) -> Path:
    """Where a group commit writes `path` before renaming it: hidden, and tagged with its writer."""
    return path.with_name(f".{path.name}.{hashlib.sha256(writer.encode()).hexdigest()[:8]}.tmp")


def group_commit(anchor: Path, writes: Sequence[tuple[Path, bytes]], moves: Sequence[tuple[Path, Path]] = (),
                 writer: str = "") -> None:
    """Commit many files at once, as `atomic_write` and `commit_rename` would one by one, with three flushes
    in all instead of two per file (group commit): write every file to its temporary name; flush; move the
    files written in place (`moves`: source, destination); flush; rename the temporary files; flush.

    So every moved file is durable under its new name before any written file (which may refer to it)
    appears. `anchor` is a folder on the filesystem of every path. Temporary names carry a tag of `writer`:
    writers sharing folders (receivers of one share group) never write the same temporary file, and a
    writer restarted after a crash reuses, and so replaces, the ones it left. A move whose source is gone and whose
    destination exists was made by another writer and counts as done. A failure raises StorageFault
    naming the file; files already renamed stay (each is whole), the rest are not there under their names
    and their temporary files are removed."""
    if not writes and not moves:
        return
    temps = [(temporary_name(path, writer), path, data) for path, data in writes]
    current = anchor
    try:
        for tmp, path, data in temps:
            current = path
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
        current = anchor
        _flush(anchor, [t for t, _, _ in temps] + [src for src, dst in moves if not dst.exists()], [])
        for src, current in moves:
            try:
                os.replace(src, current)
            except FileNotFoundError:
                if not current.exists():
                    raise
                # Another writer sharing the folder (a receiver of the same share group) moved it first.
        if moves:
            _flush(anchor, [], {dst.parent for _, dst in moves})
        for tmp, current, _ in temps:
            os.replace(tmp, current)
        current = anchor
        _flush(anchor, [], {path.parent for _, path, _ in temps})
    except OSError as err:
        for tmp, _, _ in temps:
            with contextlib.suppress(OSError):
                tmp.unlink()
        # The failing call names its file where it has one (an fsync or rename); else the step's file.
        raise StorageFault(f"could not commit {err.filename or current}: {err.strerror or err}") from err
