"""Central's decrypted working copy of a sealed segment, next to the sealed original.

The sealed file stays exactly as the device made it (the evidence, byte for byte); the working copy in
`plain/` is what people view, checked against the plaintext hash in the device's signed seal.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from capture import layout
from capture.durable import atomic_write
from capture.encryption import MAGIC, open_sealed
from capture.errors import CaptureError

PLAIN = "plain"


def write_working_copy(session_dir: Path, body: dict[str, Any], key: X25519PrivateKey) -> Path | None:
    """Decrypt the stored segment and commit its plaintext; None if it was not sealed (recorded in the
    clear). Raises CaptureError if it does not decrypt or does not match its seal."""
    sealed = layout.media_path(session_dir, str(body["file"]))
    data = sealed.read_bytes()
    if not data.startswith(MAGIC):
        return None
    opened = open_sealed(data, key)
    expected = body.get("plain_sha256")
    if expected is not None and hashlib.sha256(opened.plaintext).hexdigest() != expected:
        raise CaptureError(f"{sealed.name}: decrypted plaintext does not match the seal's plain_sha256")
    target = session_dir / PLAIN / sealed.name
    target.parent.mkdir(exist_ok=True)
    atomic_write(target, opened.plaintext)
    return target
