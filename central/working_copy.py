"""Central's decrypted working copy of a sealed segment, kept by the store beside the sealed original.

The sealed file stays exactly as the device made it (the evidence, byte for byte); the working copy is
what people view, checked against the plaintext hash in the device's signed seal.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from central.errors import CentralError
from central.store import CentralStore
from evidence.encryption import MAGIC, open_sealed
from evidence.entry import Segment


def write_working_copy(store: CentralStore, device: str, session: str, segment: Segment,
                       key: X25519PrivateKey) -> bool:
    """Decrypt the stored segment and keep its plaintext; False if it was not sealed (recorded in the
    clear). Raises CentralError or EvidenceError if it does not decrypt or does not match its seal."""
    data = store.read_media(device, session, segment.file)
    if not data.startswith(MAGIC):
        return False
    opened = open_sealed(data, key)
    if segment.plain_sha256 is not None and hashlib.sha256(opened.plaintext).hexdigest() != segment.plain_sha256:
        raise CentralError(f"{segment.file}: decrypted plaintext does not match the seal's plain_sha256")
    store.write_working_copy(device, session, segment.file, opened.plaintext)
    return True
