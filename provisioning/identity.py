"""A signing identity: an Ed25519 key kept in a PEM file. The device's is made on the device and never leaves
it; central's, which signs receipts (provisioning/central_key.py), stays at central."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from evidence.durable import atomic_write
from evidence.errors import StorageFault
from evidence.keys import VerifyKey, public_key_b64
from provisioning.errors import ProvisioningError

_KEY_FILE = "device-ed25519.pem"


class DeviceIdentity:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = VerifyKey.of(private_key.public_key())
        self.public_key_b64 = public_key_b64(private_key.public_key())

    @classmethod
    def load(cls, keys_dir: Path) -> DeviceIdentity:
        """The device's key, which must exist (read-only: nothing is created)."""
        path = keys_dir / _KEY_FILE
        if not path.exists() and not path.is_symlink():
            raise ProvisioningError(f"{path}: the device has no signing key yet; the service makes it when it "
                                    "first starts (or run `recorder identity --create`)")
        return cls.from_file(path, "restore it from the enrollment record or re-enroll the device")

    @classmethod
    def from_file(cls, path: Path, remedy: str) -> DeviceIdentity:
        """The Ed25519 key in the PEM file `path`; the error says `remedy` when it is not one."""
        try:
            data = path.read_bytes()
        except OSError as err:
            raise ProvisioningError(f"{path}: cannot read the signing key: {err.strerror or err} (it must be a "
                                    "file readable by the service's user, mode 0600)") from err
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as err:
            raise ProvisioningError(f"{path} is not a readable Ed25519 key; {remedy}") from err
        if not isinstance(key, Ed25519PrivateKey):
            raise ProvisioningError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
        return cls(key)

    @classmethod
    def load_or_create(cls, keys_dir: Path) -> DeviceIdentity:
        path = keys_dir / _KEY_FILE
        if path.exists() or path.is_symlink():
            return cls.load(keys_dir)
        try:
            keys_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(keys_dir, 0o700)
        except OSError as err:
            raise ProvisioningError(f"{keys_dir}: cannot keep the device key there: {err}; check "
                                    "device.state_dir (it must be a folder the recorder user can write)") from err
        return cls.create_at(path, "check device.state_dir (it must be a folder the recorder user can write)")

    @classmethod
    def create_at(cls, path: Path, remedy: str) -> DeviceIdentity:
        """A new Ed25519 key, kept at `path` (mode 0600)."""
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:
            atomic_write(path, pem, mode=0o600)
        except (OSError, StorageFault) as err:
            raise ProvisioningError(f"{path}: cannot keep the signing key there: {err}; {remedy}") from err
        return cls(key)

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self._key.sign(message)).decode("ascii")
