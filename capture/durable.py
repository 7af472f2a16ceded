"""Durable file commits: write to a temporary name, fsync, rename, fsync the directory.

A crash at any point leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import os
from pathlib import Path

from capture.errors import StorageFault


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


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as err:
        raise StorageFault(f"could not commit {path}: {err.strerror or err}") from err


def commit_rename(src: Path, dst: Path) -> None:
    """Make a file written in place (a closed segment) durable under its final name."""
    try:
        fsync_file(src)
        os.replace(src, dst)
        fsync_dir(dst.parent)
    except OSError as err:
        raise StorageFault(f"could not commit {dst}: {err.strerror or err}") from err
