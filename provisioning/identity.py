"""The device's signing identity: an Ed25519 key made on the device and never leaving it."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from capture.durable import atomic_write
from provisioning.errors import ProvisioningError

_KEY_FILE = "device-ed25519.pem"


def public_key_b64(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def load_public_key_b64(text: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except ValueError as err:
        raise ProvisioningError(f"not a base64 Ed25519 public key: {text[:60]!r}") from err


def verify_signature(key: Ed25519PublicKey, signature_b64: str, message: bytes) -> bool:
    try:
        key.verify(base64.b64decode(signature_b64, validate=True), message)
    except (InvalidSignature, ValueError):
        return False
    return True


class DeviceIdentity:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key()
        self.public_key_b64 = public_key_b64(self.public_key)

    @classmethod
    def load_or_create(cls, keys_dir: Path) -> DeviceIdentity:
        path = keys_dir / _KEY_FILE
        if path.exists():
            try:
                key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            except ValueError as err:
                raise ProvisioningError(
                    f"{path} is not a readable Ed25519 key; restore it from the enrollment record "
                    "or re-enroll the device"
                ) from err
            if not isinstance(key, Ed25519PrivateKey):
                raise ProvisioningError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
            return cls(key)
        keys_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(keys_dir, 0o700)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        atomic_write(path, pem, mode=0o600)
        return cls(key)

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self._key.sign(message)).decode("ascii")
