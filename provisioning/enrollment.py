"""Enrollment by claim: the token a technician carries from central to the box, and the one request and
answer between them (PROTOCOL §13). Shared by the device (`recorder enroll`) and central (its enrollment
endpoint), each parsing what the other sends exactly once, here.

A token is `<id>.<secret>.<pin>`: `id` names it at central (8 hex digits), `secret` proves the holder may
use it (160 random bits, base32; central keeps only its SHA-256), and `pin` is the SHA-256 of central's
enrollment certificate (base32, 52 characters): the box, which trusts nothing yet, checks the server it
reached against the pin before it sends anything, so a token typed into a box on a hostile network reaches
central or nobody.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

from evidence import layout
from evidence.canonical import canonical, read_object
from evidence.encryption import public_key_from_b64
from evidence.errors import EvidenceError
from evidence.keys import load_public_key_b64
from provisioning.errors import ProvisioningError

TOKEN = re.compile(r"([0-9a-f]{8})\.([a-z2-7]{32})\.([a-z2-7]{52})\Z")
MAX_MESSAGE = 64 * 1024
"""Either message is a few kilobytes (a CSR, two certificates, a room); anything larger is refused unread."""
PATH = "/v1/enroll"


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def pin_of(certificate_der: bytes) -> str:
    """The pin of a server certificate (DER): its SHA-256 in base32."""
    return _b32(hashlib.sha256(certificate_der).digest())


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class Token:
    id: str
    secret: str
    pin: str

    @classmethod
    def new(cls, pin: str) -> Token:
        return cls(secrets.token_hex(4), _b32(secrets.token_bytes(20)), pin)

    @classmethod
    def parse(cls, text: str) -> Token:
        match = TOKEN.match(text.strip().lower())
        if match is None:
            raise ProvisioningError("the enrollment token is malformed: it is three parts joined by dots, 8 hex "
                                    "digits, 32 and 52 letters and digits, as `recorder central token` printed it; "
                                    "copy it whole")
        return cls(*match.groups())

    def __str__(self) -> str:
        return f"{self.id}.{self.secret}.{self.pin}"

    def matches(self, digest: str) -> bool:
        return hmac.compare_digest(secret_digest(self.secret), digest)


@dataclass(frozen=True)
class Officer:
    name: str
    certificate: str


@dataclass(frozen=True)
class Room:
    """What a room's box is told at enrollment: who it is, where, and who works there."""

    device: str
    unit: str
    room: str
    location: str
    timezone: str
    officers: tuple[Officer, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"device": self.device, "unit": self.unit, "room": self.room, "location": self.location,
                "timezone": self.timezone,
                "officers": [{"name": o.name, "certificate": o.certificate} for o in self.officers]}

    @classmethod
    def from_dict(cls, value: Any) -> Room:
        fields = {"device", "unit", "room", "location", "timezone", "officers"}
        if not isinstance(value, dict) or set(value) != fields:
            raise ProvisioningError(f"room must be an object of exactly {', '.join(sorted(fields))}")
        text = {k: value[k] for k in fields - {"officers"}}
        if not all(isinstance(v, str) for v in text.values()):
            raise ProvisioningError("room fields must be strings")
        if not layout.DEVICE_ID.match(text["device"]):
            raise ProvisioningError(f"room names device {text['device']!r}, which is not a device id")
        officers = value["officers"]
        if not isinstance(officers, list) or not all(
                isinstance(o, dict) and set(o) == {"name", "certificate"} and all(isinstance(v, str) and v.strip()
                                                                                for v in o.values())
                for o in officers):
            raise ProvisioningError("room officers must be a list of objects with a name and a certificate")
        return cls(text["device"], text["unit"], text["room"], text["location"], text["timezone"],
                   tuple(Officer(o["name"], o["certificate"]) for o in officers))


@dataclass(frozen=True)
class Request:
    """The box to central: the token's id and secret, its signing key, and a CSR for its TLS key."""

    token_id: str
    secret: str
    signing_key: str
    csr: str

    def encode(self) -> bytes:
        return canonical({"token": self.token_id, "secret": self.secret, "signing_key": self.signing_key,
                          "csr": self.csr})

    @classmethod
    def parse(cls, data: bytes) -> Request:
        value = read_object(data, MAX_MESSAGE, "enrollment request", ProvisioningError)
        if set(value) != {"token", "secret", "signing_key", "csr"} or not all(isinstance(v, str)
                                                                             for v in value.values()):
            raise ProvisioningError("enrollment request must be an object of exactly token, secret, signing_key and "
                                    "csr, all strings")
        if not re.fullmatch(r"[0-9a-f]{8}", value["token"]) or not re.fullmatch(r"[a-z2-7]{32}", value["secret"]):
            raise ProvisioningError("enrollment request token and secret are not a token's (8 hex digits; 32 "
                                    "base32 letters and digits)")
        try:
            load_public_key_b64(value["signing_key"])
        except EvidenceError as err:
            raise ProvisioningError(f"enrollment request signing_key: {err}") from err
        return cls(value["token"], value["secret"], value["signing_key"], value["csr"])


@dataclass(frozen=True)
class Answer:
    """Central to the box: its certificate, the CA, the broker, central's keys, and its room."""

    certificate: str
    ca: str
    broker_host: str
    broker_port: int
    topic_prefix: str
    central_public_key: str
    central_signing_key: str
    room: Room

    def encode(self) -> bytes:
        return canonical({"certificate": self.certificate, "ca": self.ca, "broker_host": self.broker_host,
                          "broker_port": self.broker_port, "topic_prefix": self.topic_prefix,
                          "central_public_key": self.central_public_key,
                          "central_signing_key": self.central_signing_key, "room": self.room.as_dict()})

    @classmethod
    def parse(cls, data: bytes) -> Answer:
        value = read_object(data, MAX_MESSAGE, "enrollment answer", ProvisioningError)
        fields = {"certificate", "ca", "broker_host", "broker_port", "topic_prefix", "central_public_key",
                  "central_signing_key", "room"}
        if set(value) != fields:
            raise ProvisioningError(f"enrollment answer must be an object of exactly {', '.join(sorted(fields))}")
        port = value["broker_port"]
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise ProvisioningError("enrollment answer broker_port must be a port number")
        strings = fields - {"broker_port", "room"}
        if not all(isinstance(value[k], str) for k in strings):
            raise ProvisioningError(f"enrollment answer {', '.join(sorted(strings))} must be strings")
        try:
            public_key_from_b64(value["central_public_key"])
            load_public_key_b64(value["central_signing_key"])
        except EvidenceError as err:
            raise ProvisioningError(f"enrollment answer carries a malformed central key: {err}") from err
        return cls(value["certificate"], value["ca"], value["broker_host"], port, value["topic_prefix"],
                   value["central_public_key"], value["central_signing_key"], Room.from_dict(value["room"]))
