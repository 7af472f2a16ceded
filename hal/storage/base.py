"""The storage the spool lives on: how much room is left and whether it still takes writes."""

from __future__ import annotations

import abc
import os
import shutil
from pathlib import Path

from hal.errors import HalError


class Storage(abc.ABC):
    def __init__(self, root: Path) -> None:
        self.root = root

    @abc.abstractmethod
    def free_bytes(self) -> int: ...

    def check_writable(self) -> None:
        """Write, fsync and remove a probe file; a card that has gone read-only fails here, not mid-session."""
        probe = self.root / ".write-probe"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"probe")
                os.fsync(fd)
            finally:
                os.close(fd)
            probe.unlink()
        except OSError as err:
            raise HalError(f"storage at {self.root} does not take writes: {err.strerror}") from err


class DiskStorage(Storage):
    def free_bytes(self) -> int:
        self.root.mkdir(parents=True, exist_ok=True)
        return shutil.disk_usage(self.root).free
