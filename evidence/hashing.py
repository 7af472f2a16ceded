"""SHA-256 of files and streams, read in large chunks."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_CHUNK = 1 << 20


def sha256_stream(stream: BinaryIO) -> tuple[str, int]:
    """Hex SHA-256 and size of what is left to read in `stream`."""
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def sha256_file(path: Path) -> tuple[str, int]:
    with path.open("rb") as f:
        return sha256_stream(f)
