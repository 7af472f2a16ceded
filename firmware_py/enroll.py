"""`recorder enroll URL TOKEN`: the box claims its place at central (PROTOCOL §13).

The box makes its own keys (the Ed25519 key that signs its evidence, and a P-256 key for TLS, each 0600
in `device.state_dir/keys`; neither ever leaves it), reaches central's enrollment endpoint, checks that
the server's certificate is the one the token pins before sending anything, and sends the token, its
signing key and a certificate request. Central answers with the box's certificate, the CA, the broker's
address and central's keys, and the room; the box writes those into its configuration file, which from
then on is a room box's: mutual TLS, sealed recordings, signed receipts. Run again with a new token, it
keeps its keys (so central sees the same box) and writes the configuration afresh.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from evidence.durable import atomic_write
from evidence.errors import ConfigError, StorageFault
from evidence.settings import read_toml
from firmware_py import config_file
from firmware_py.errors import ServiceError
from hal.factory import is_raspberry_pi
from provisioning.enrollment import MAX_MESSAGE, PATH, Answer, Request, Token, pin_of
from provisioning.errors import ProvisioningError
from provisioning.identity import DeviceIdentity

TLS_KEY, TLS_CERT, CA_CERT = "tls.key", "tls.crt", "ca.crt"
TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Enrolled:
    answer: Answer
    config: Path
    keys_dir: Path


def _tls_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The box's TLS key: made here once, kept (a second enrollment keeps the same key)."""
    if path.exists():
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as err:
            raise ServiceError(f"{path}: the box's TLS key cannot be read: {err}; move it away to make a new "
                               "one") from err
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ServiceError(f"{path} is not an EC key; move it away to make a new one")
        return key
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    _write(path, pem, 0o600)
    return key


def _write(path: Path, data: bytes, mode: int) -> None:
    try:
        atomic_write(path, data, mode=mode)
    except StorageFault as err:
        raise ServiceError(f"{path}: cannot write it: {err}") from err


def _csr(key: ec.EllipticCurvePrivateKey) -> str:
    # The subject is not used: central names the certificate after the device id it chose for the token.
    request = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "recorder-enrollment")]))
               .sign(key, hashes.SHA256()))
    return request.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _endpoint(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ServiceError(f"{url!r}: give central's enrollment address as https://HOST[:PORT] (as `recorder central "
                           "token` printed it)")
    try:
        return parts.hostname, parts.port or 8443
    except ValueError as err:
        raise ServiceError(f"{url!r}: the port is not a number") from err


def post(url: str, token: Token, body: bytes) -> bytes:
    """POST `body` to central's enrollment endpoint, having checked its certificate against the token's pin."""
    host, port = _endpoint(url)
    # No CA is trusted yet: the pin in the token is the trust, checked before a byte of the request goes out.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    connection = http.client.HTTPSConnection(host, port, timeout=TIMEOUT_S, context=context)
    try:
        connection.connect()
        assert isinstance(connection.sock, ssl.SSLSocket)
        presented = connection.sock.getpeercert(binary_form=True) or b""
        if pin_of(presented) != token.pin:
            raise ServiceError(f"the server at {host}:{port} is not central's enrollment endpoint (its certificate "
                               "does not match the token's pin): check the address; nothing was sent")
        connection.request("POST", PATH, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        data = response.read(MAX_MESSAGE + 1)
    except (OSError, http.client.HTTPException) as err:
        raise ServiceError(f"cannot reach central's enrollment endpoint at {host}:{port}: {err}; check the address "
                           "and that `recorder central enroll-server` runs there") from err
    finally:
        connection.close()
    if response.status != 200:
        try:
            message = json.loads(data)["error"]
        except (ValueError, KeyError, TypeError):
            message = data[:200].decode("utf-8", "replace")
        raise ServiceError(f"central refused the enrollment ({response.status}): {message}")
    return data


def enroll(url: str, token_text: str, config_path: Path, state_dir: Path | None = None) -> Enrolled:
    try:
        token = Token.parse(token_text)
    except ProvisioningError as err:
        raise ServiceError(str(err)) from err
    data: dict[str, Any] = read_toml(config_path) if config_path.exists() else {}
    device = data.setdefault("device", {})
    if state_dir is not None:
        device["state_dir"] = str(state_dir)
    keys_dir = Path(device.get("state_dir", "/var/lib/recorder")) / "keys"
    identity = DeviceIdentity.load_or_create(keys_dir)
    request = Request(token.id, token.secret, identity.public_key_b64, _csr(_tls_key(keys_dir / TLS_KEY)))
    try:
        answer = Answer.parse(post(url, token, request.encode()))
    except ProvisioningError as err:
        raise ServiceError(f"central's answer is malformed: {err}") from err
    _write(keys_dir / TLS_CERT, answer.certificate.encode("ascii"), 0o644)
    _write(keys_dir / CA_CERT, answer.ca.encode("ascii"), 0o644)
    room = answer.room
    device.update({"id": room.device, "unit": room.unit, "room": room.room, "location": room.location,
                   "timezone": room.timezone, "central_public_key": answer.central_public_key,
                   "central_signing_key": answer.central_signing_key})
    session = data.setdefault("session", {})
    if room.officers:
        session["officers"] = [{"name": o.name, "certificate": o.certificate} for o in room.officers]
    data["mqtt"] = {**data.get("mqtt", {}), "host": answer.broker_host, "port": answer.broker_port,
                    "topic_prefix": answer.topic_prefix,
                    "tls": {"ca_file": str(keys_dir / CA_CERT), "cert_file": str(keys_dir / TLS_CERT),
                            "key_file": str(keys_dir / TLS_KEY)}}
    if is_raspberry_pi():
        data.setdefault("hal", {})["backend"] = "pi"
    try:
        config_path.parent.mkdir(parents=True, exist_ok=True)
        config_file.write(config_path, data, f"Written by `recorder enroll` for {room.device} ({room.unit}, "
                                             f"{room.room}).\nEdit freely; `recorder run --check-config` checks it.")
    except (ConfigError, OSError) as err:
        raise ServiceError(f"{config_path}: {err}") from err
    _hand_to_service_user(keys_dir)
    return Enrolled(answer, config_path, keys_dir)


def _hand_to_service_user(keys_dir: Path) -> None:
    """Run as root (sudo), the files made here belong to root; the service runs as the owner of its state
    folder, which must read its own keys."""
    if os.geteuid() != 0:
        return
    owner = keys_dir.parent.stat()
    for path in [keys_dir, *keys_dir.iterdir()]:
        os.chown(path, owner.st_uid, owner.st_gid)

