"""Central's keys: the encryption key pair (segments are sealed to its public half on every device; only
central, holding the private half, can open them), and the signing key its receipts are signed with."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from evidence.durable import atomic_write
from evidence.encryption import private_key_from_pem, private_key_pem, public_key_b64
from evidence.errors import EvidenceError
from provisioning.errors import ProvisioningError
from provisioning.identity import DeviceIdentity


def create_central_key(path: Path) -> str:
    """Make the key pair (private key 0600 at `path`) unless it exists; returns the public key, base64."""
    if path.exists():
        return public_key_b64(load_central_key(path).public_key())
    path.parent.mkdir(parents=True, exist_ok=True)
    key = X25519PrivateKey.generate()
    atomic_write(path, private_key_pem(key), mode=0o600)
    return public_key_b64(key.public_key())


def create_signing_key(path: Path) -> str:
    """Central's Ed25519 key that signs receipts and alert acknowledgements (PROTOCOL §4.3, §4.6), made at
    `path` (0600) unless it exists; returns its public key, base64, for the devices'
    `device.central_signing_key`."""
    if path.exists():
        return load_signing_key(path).public_key_b64
    path.parent.mkdir(parents=True, exist_ok=True)
    key = DeviceIdentity.create_at(path, "give receiver.signing_key_file a place central's user can write")
    return key.public_key_b64


def load_signing_key(path: Path) -> DeviceIdentity:
    return DeviceIdentity.from_file(path, "make one with `recorder central key --signing-out FILE`")


def load_central_key(path: Path) -> X25519PrivateKey:
    try:
        return private_key_from_pem(path.read_bytes())
    except OSError as err:
        raise ProvisioningError(f"{path}: cannot read central's private key: {err.strerror}") from err
    except EvidenceError as err:
        raise ProvisioningError(f"{path}: {err}") from err
