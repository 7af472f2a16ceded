"""The verifier on a bare Python (issue 11, ARCHIVE: anyone with Python verifies an export offline): Ed25519
signature checks by the pure-Python fallback (evidence/ed25519.py) against `cryptography`'s, over the same
signatures of one key, as a session's are.

pure_ed25519_verify_ms: milliseconds a signature, pure Python (one hour of recording is about 1,900).
cryptography_ed25519_verify_ms: the same with `cryptography` (OpenSSL).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from evidence.ed25519 import PublicKey

SIGNATURES = 1000


def run(workdir: Path) -> dict[str, Any]:
    del workdir  # nothing is written
    signer = Ed25519PrivateKey.generate()
    raw = signer.public_key().public_bytes_raw()
    signed = [(signer.sign(m), m) for m in (os.urandom(600) for _ in range(SIGNATURES))]
    pure = PublicKey(raw)
    pure.verify(*signed[0])  # the key's own table is built at its first use, once a session
    t = time.perf_counter()
    assert all(pure.verify(s, m) for s, m in signed)
    pure_s = time.perf_counter() - t
    native = signer.public_key()
    t = time.perf_counter()
    for s, m in signed:
        native.verify(s, m)
    native_s = time.perf_counter() - t
    return {"pure_ed25519_verify_ms": round(pure_s / SIGNATURES * 1e3, 3),
            "cryptography_ed25519_verify_ms": round(native_s / SIGNATURES * 1e3, 3)}
