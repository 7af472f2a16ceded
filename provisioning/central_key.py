"""Central's encryption key pair: segments are sealed to its public half on every device; only central,
holding the private half, can open them."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from evidence.durable import atomic_write
from evidence.encryption import private_key_from_pem, private_key_pem, public_key_b64
from evidence.errors import EvidenceError
from provisioning.errors import ProvisioningError


def create_central_key(path: Path) -> str:
    """Make the key pair (private key 0600 at `path`) unless it exists; returns the public key, base64."""
    if path.exists():
        return public_key_b64(load_central_key(path).public_key())
    path.parent.mkdir(parents=True, exist_ok=True)
    key = X25519PrivateKey.generate()
    atomic_write(path, private_key_pem(key), mode=0o600)
    return public_key_b64(key.public_key())


def load_central_key(path: Path) -> X25519PrivateKey:
    try:
        return private_key_from_pem(path.read_bytes())
    except OSError as err:
        raise ProvisioningError(f"{path}: cannot read central's private key: {err.strerror}") from err
    except EvidenceError as err:
        raise ProvisioningError(f"{path}: {err}") from err
