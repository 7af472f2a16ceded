"""Ed25519 public keys as the format writes them (base64 of the raw 32 bytes), and signature checks.

The one place that decides how a signature is checked: by `cryptography` (OpenSSL) when it imports, else by
the pure-Python evidence/ed25519.py, which accepts and refuses exactly the signatures OpenSSL does. So a
session and the access audit verify on a bare CPython (FORMAT §7.5), with the same verdicts. Verifiers hold a
`VerifyKey`, never a library's key class; only those that sign (and so have `cryptography`) hold one.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field

from evidence import ed25519
from evidence.errors import EvidenceError

# BACKEND says what checks signatures in this Python.
try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
except ImportError:
    BACKEND = "pure Python (evidence/ed25519.py)"
else:
    BACKEND = "cryptography"


def _checker(raw: bytes) -> Callable[[bytes, bytes], bool]:
    if BACKEND != "cryptography":
        return ed25519.PublicKey(raw).verify
    # OpenSSL takes any 32 bytes here and refuses, when verifying, a key that does not decode; so does
    # ed25519.PublicKey.
    key = Ed25519PublicKey.from_public_bytes(raw)

    def check(signature: bytes, message: bytes) -> bool:
        try:
            key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    return check


@dataclass(frozen=True)
class VerifyKey:
    """An Ed25519 public key to check signatures with: its raw 32 bytes (FORMAT §3.5)."""

    raw: bytes
    _check: Callable[[bytes, bytes], bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.raw) != 32:
            raise EvidenceError(f"an Ed25519 public key is 32 bytes, not {len(self.raw)}")
        object.__setattr__(self, "_check", _checker(self.raw))

    @classmethod
    def of(cls, key: Ed25519PublicKey) -> VerifyKey:
        """The public half of a key this side signs with (which it holds only with `cryptography`)."""
        return cls(key.public_bytes_raw())

    @property
    def b64(self) -> str:
        return base64.b64encode(self.raw).decode("ascii")

    def verify(self, signature: bytes, message: bytes) -> bool:
        """Whether `signature` (64 bytes) is this key's over `message`."""
        return len(signature) == 64 and self._check(signature, message)


def public_key_b64(key: Ed25519PublicKey) -> str:
    return base64.b64encode(key.public_bytes_raw()).decode("ascii")


def load_public_key_b64(text: str) -> VerifyKey:
    """Strict base64 of a raw 32-byte Ed25519 public key (FORMAT §3.5)."""
    try:
        return VerifyKey(base64.b64decode(text, validate=True))
    except (EvidenceError, ValueError) as err:  # binascii.Error is a ValueError; so is a non-ASCII text
        raise EvidenceError(f"not a base64 Ed25519 public key: {text[:60]!r}") from err


def verify_signature(key: VerifyKey, signature_b64: str, message: bytes) -> bool:
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except ValueError:
        return False
    return key.verify(signature, message)
