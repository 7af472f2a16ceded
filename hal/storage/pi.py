"""Storage on the board: the filesystem the spool directory is on."""

from hal.storage.base import DiskStorage as PiStorage

__all__ = ["PiStorage"]
