"""Simulated storage: the host's disk, optionally capped so a scenario can fill it."""

from __future__ import annotations

from pathlib import Path

from hal.storage.base import DiskStorage


def _tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


class SimStorage(DiskStorage):
    def __init__(self, root: Path, capacity_bytes: int | None = None) -> None:
        super().__init__(root)
        self.capacity_bytes = capacity_bytes

    def used_bytes(self) -> int:
        return _tree_size(self.root) if self.root.exists() else 0

    def free_bytes(self) -> int:
        real = super().free_bytes()
        if self.capacity_bytes is None:
            return real
        return max(0, min(real, self.capacity_bytes - self.used_bytes()))
