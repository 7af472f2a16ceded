"""Enrollment at central: one-time tokens for rooms, the claim that turns a box into an enrolled device,
approving a changed key, and revoking a device (DEVICE-CHECK, TAMPER-PROOF-IT, NO-LEAK).

A token is made for one device id and its room (unit, room, location, officers) by a named technician; it
is single use and expires. Claiming it (`claim`, behind central's HTTPS endpoint, central/enroll_server.py)
checks the token, refuses a changed signing key until an operator approves it (the old key stays on record:
central/store.py), has the CA sign the box's own TLS key, records who issued the token and when it was used,
and adds the device to the broker's rights. The token records live in `<store>/enrollment/tokens/<id>.json`
(mode 0600): they hold the SHA-256 of the secret, never the secret.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from central.config import TOKEN_HOURS, CentralConfig
from central.errors import CentralError, KeyChangeRefused
from central.store import FileStore
from evidence import layout
from evidence.durable import atomic_write
from evidence.encryption import public_key_b64
from evidence.errors import ConfigError, RecorderError
from evidence.settings import TimeZone, check
from mqtt.broker_admin import BrokerAdmin
from mqtt.tls import TlsFiles
from provisioning.ca import ADMIN, DEVICE, CertificateAuthority, read_certificate
from provisioning.central_key import load_central_key, load_signing_key
from provisioning.enrollment import Answer, Request, Room, Token, pin_of, secret_digest
from provisioning.errors import ProvisioningError

log = logging.getLogger(__name__)


class ClaimRefused(CentralError):
    """The claim is refused; `status` is the HTTP status that says why (403 token, 409 key waits)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class BrokerChange:
    done: bool
    said: str


@dataclass(frozen=True)
class IssuedToken:
    token: Token
    expires: str


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Enrollment:
    """Central's enrollment records, its CA and its hand on the broker, for one store."""

    def __init__(self, config: CentralConfig, store: FileStore) -> None:
        self.config = config
        self.store = store
        self._lock = threading.Lock()
        setting = config.enrollment.ca_dir
        if not setting:
            raise CentralError("enrollment.ca_dir is not set: name the CA folder made by `recorder central certs` "
                               "in central's configuration")
        self.ca = CertificateAuthority.load(Path(setting))
        self.tokens_dir = store.root / "enrollment" / "tokens"

    # Tokens -----------------------------------------------------------------------------------------

    def server_pin(self) -> str:
        paths = self.ca.enrollment_paths()
        if not paths.cert.exists():
            raise CentralError(f"{paths.cert} is missing: issue central's enrollment certificate with `recorder "
                               f"central certs --out {self.ca.directory} --enrollment-host HOST`")
        return pin_of(read_certificate(paths.cert).public_bytes(serialization.Encoding.DER))

    def issue_token(self, room: Room, by: str, hours: float | None = None) -> IssuedToken:
        """A token for `room`'s box. Everything the box will be told is checked here, as the box's own
        configuration will check it (a bad time zone or device id would fail only there, on the Pi)."""
        if not by.strip():
            raise CentralError("--by: name the technician the token is issued to or by (it is recorded)")
        if not layout.DEVICE_ID.match(room.device):
            raise CentralError(f"--device: {room.device!r} is not a valid device id (1-64 letters, digits, '.', '_' "
                               "or '-'; it names the box's folders and its MQTT topic)")
        try:
            check(room.timezone, "--timezone", TimeZone())
            if hours is not None:
                check(hours, "--hours", TOKEN_HOURS)
        except ConfigError as err:
            raise CentralError(str(err)) from err
        if self.store.revocation(room.device) is not None:
            raise CentralError(f"device {room.device} was revoked; give the replacement box a new device id")
        pin = self.server_pin()
        token = Token.new(pin)
        while self._token_path(token.id).exists():  # a 32-bit id: a collision must not replace a token
            token = Token.new(pin)
        now = _now()
        expires = now + dt.timedelta(hours=hours if hours is not None else self.config.enrollment.token_hours)
        record: dict[str, Any] = {"id": token.id, "secret_sha256": secret_digest(token.secret), "room": room.as_dict(),
                  "issued_by": by, "issued": now.isoformat(timespec="seconds"),
                  "expires": expires.isoformat(timespec="seconds"), "used": None}
        self.tokens_dir.mkdir(parents=True, exist_ok=True)
        self._write_token(record)
        return IssuedToken(token, record["expires"])

    def _token_path(self, token_id: str) -> Path:
        return self.tokens_dir / f"{token_id}.json"

    def _write_token(self, record: dict[str, Any]) -> None:
        atomic_write(self._token_path(record["id"]), json.dumps(record, ensure_ascii=False, indent=1).encode(),
                     mode=0o600)

    # The claim --------------------------------------------------------------------------------------

    def claim(self, request: Request, peer: str) -> Answer:
        """Enroll the box that holds a valid token. Raises ClaimRefused with what to do."""
        with self._lock:  # one claim at a time: a token is used once even if two boxes race for it
            record = self._valid_token(request)
            room = Room.from_dict(record["room"])
            device = room.device
            keys = self._central_keys()  # before anything is changed: without them there is no answer to give
            self._check_key(device, request.signing_key, record)
            previous = self.ca.current_serial(DEVICE, device)
            try:
                cert = self.ca.sign_device_request(device, request.csr.encode("ascii", "replace"))
            except ProvisioningError as err:
                raise ClaimRefused(400, str(err)) from err
            now = _now().isoformat(timespec="seconds")
            try:
                self.store.enroll(device, request.signing_key, {
                    "via": "token", "token": record["id"], "token_issued_by": record["issued_by"],
                    "token_issued": record["issued"], "serial": cert.serial_number,
                    "certificate_expires": cert.not_valid_after_utc.isoformat(timespec="seconds"),
                    "room": record["room"], "peer": peer})
            except CentralError as err:
                # Revoked (or its key changed) since the checks above: the certificate just signed must not work.
                self.ca.revoke(DEVICE, device, f"issued during a refused claim: {err}", record["issued_by"],
                               cert.serial_number)
                raise ClaimRefused(409 if isinstance(err, KeyChangeRefused) else 403, str(err)) from err
            if previous is not None and previous != cert.serial_number:
                # The box has a new TLS key: its old certificate (on a lost card, perhaps) is no longer valid.
                self.ca.revoke(DEVICE, device, "superseded by a new enrollment", record["issued_by"], previous)
            record["used"] = {"time": now, "peer": peer, "serial": cert.serial_number,
                              "signing_key": request.signing_key}
            self._write_token(record)
        log.info("enrolled %s (%s, %s) from %s with token %s issued by %s; certificate serial %x", device, room.unit,
                 room.room, peer, record["id"], record["issued_by"], cert.serial_number)
        self.broker_add(device)
        return self._answer(room, cert.public_bytes(serialization.Encoding.PEM).decode("ascii"), keys)

    def _valid_token(self, request: Request) -> dict[str, Any]:
        unknown = ClaimRefused(403, "the enrollment token is not known here (mistyped, or for another central)")
        if not request.token_id.isalnum() or len(request.token_id) != 8:
            raise unknown
        path = self._token_path(request.token_id)
        if not path.exists():
            raise unknown
        try:
            record = json.loads(path.read_bytes())
        except (OSError, ValueError) as err:
            raise ClaimRefused(500, f"the record of token {request.token_id} cannot be read: {err}") from err
        if not Token(request.token_id, request.secret, "").matches(str(record.get("secret_sha256"))):
            raise unknown
        if record.get("used"):
            raise ClaimRefused(403, f"the enrollment token was already used ({record['used']['time']}); ask central "
                                    "for a new one")
        if dt.datetime.fromisoformat(record["expires"]) <= _now():
            raise ClaimRefused(403, f"the enrollment token expired at {record['expires']}; ask central for a new one")
        device = str(record.get("room", {}).get("device", ""))
        if self.store.revocation(device) is not None:
            raise ClaimRefused(403, f"device {device} was revoked; its id cannot be enrolled again")
        return dict(record)

    def _check_key(self, device: str, key: str, record: dict[str, Any]) -> None:
        """A box that comes back with another signing key is not enrolled silently: the store keeps the key as
        pending (its rule: central/store.py) and the claim waits for an operator's approval."""
        current = self.store.device_key(device)
        if current is not None and current != key:
            try:
                self.store.enroll(device, key, {"via": "token", "token": record["id"],
                                                "token_issued_by": record["issued_by"]})
            except KeyChangeRefused as err:
                raise ClaimRefused(409, f"{err}; then run `recorder enroll` again with the same token") from err

    def _central_keys(self) -> tuple[str, str, str]:
        """Central's encryption and signing public keys and the CA certificate, for the answer."""
        receiver = self.config.receiver
        if not receiver.private_key_file or not receiver.signing_key_file:
            raise ClaimRefused(500, "central has no encryption or signing key configured (receiver.private_key_file, "
                                    "receiver.signing_key_file): a box enrolled now would record in the clear")
        try:
            encryption = public_key_b64(load_central_key(Path(receiver.private_key_file)).public_key())
            signing = load_signing_key(Path(receiver.signing_key_file)).public_key_b64
            ca = self.ca.ca_file.read_text(encoding="ascii")
        except (RecorderError, OSError, UnicodeDecodeError) as err:
            raise ClaimRefused(500, f"central's keys cannot be read: {err}") from err
        return encryption, signing, ca

    def _answer(self, room: Room, certificate: str, keys: tuple[str, str, str]) -> Answer:
        encryption, signing, ca = keys
        settings = self.config.enrollment
        return Answer(certificate, ca, settings.broker_host or self.config.mqtt.host, settings.broker_port,
                      self.config.mqtt.topic_prefix, encryption, signing, room)

    # Keys and revocation ----------------------------------------------------------------------------

    def approve_key(self, device: str, by: str, key_prefix: str) -> str:
        """Approve the changed key waiting for `device`, which must begin with `key_prefix` (at least 8 characters,
        read off the box itself): whoever else claimed with the same token since cannot be approved by mistake."""
        pending = self.store.pending_key(device)
        if pending is None:
            raise CentralError(f"device {device} has no changed key waiting for approval")
        if len(key_prefix) < 8 or not str(pending["key"]).startswith(key_prefix):
            raise CentralError(f"--key: the key waiting for {device} begins {str(pending['key'])[:12]}, not "
                               f"{key_prefix!r}: read the box's key with `recorder identity` on it (at least 8 "
                               "characters); if they differ, the claim did not come from that box")
        self.store.enroll(device, pending["key"], {k: v for k, v in pending.items() if k not in ("key", "enrolled",
                                                                                               "retired")},
                          approved_by=by)
        return str(pending["key"])

    def revoke(self, device: str, by: str, reason: str) -> list[str]:
        """Revoke `device` everywhere central can: its records, its certificate (CRL) and the broker's rights.
        Returns what was done, in words."""
        if not by.strip() or not reason.strip():
            raise CentralError("--by and --reason: say who revokes the device and why (both are recorded)")
        done = []
        self.store.revoke(device, by, reason)
        done.append(f"central refuses everything {device} sends from now on")
        serial = self.ca.revoke(DEVICE, device, reason, by)
        if serial is not None:
            done.append(f"certificate {serial:x} is on the revocation list {self.ca.crl_file} (the broker reads it "
                        "when reloaded: systemctl reload mosquitto)")
        done.append(self._broker(lambda admin: admin.remove_device(device),
                                 f"the broker disconnected {device} and grants it nothing").said)
        return done

    def broker_add(self, device: str) -> BrokerChange:
        return self._broker(lambda admin: admin.add_device(device), f"the broker lets {device} publish its uploads")

    def broker_sync(self) -> BrokerChange:
        if not (self.store.root / "devices").is_dir():
            # A store path that is wrong or not mounted lists no device: syncing would take every box off.
            return BrokerChange(False, f"the broker was NOT changed: {self.store.root / 'devices'} is missing "
                                       "(check receiver.store_dir)")
        allowed = [d for d in self.store.enrolled() if self.store.revocation(d) is None]
        result: list[str] = []

        def sync(admin: BrokerAdmin) -> None:
            synced = admin.sync(allowed)
            result.append(f"added {', '.join(synced.added) or 'none'}; removed {', '.join(synced.removed) or 'none'}")

        change = self._broker(sync, "the broker's rights match central's records")
        return BrokerChange(change.done, f"{change.said}: {result[0]}" if result else change.said)

    def _broker(self, action: Any, success: str) -> BrokerChange:
        admins = self.ca.admins()
        if not admins:
            return BrokerChange(False, "the broker was not changed: the CA has no admin certificate (recorder central "
                                       "certs issues one); then run `recorder central broker-sync`")
        paths = self.ca.leaf_paths(ADMIN, admins[0])
        mqtt = self.config.mqtt
        try:
            with BrokerAdmin(mqtt.host, mqtt.port, TlsFiles(self.ca.ca_file, paths.cert, paths.key),
                             mqtt.topic_prefix) as admin:
                action(admin)
        except RecorderError as err:
            log.error("broker not changed: %s", err)
            return BrokerChange(False, f"the broker was NOT changed ({err}); run `recorder central broker-sync` "
                                       "once it is reachable")
        return BrokerChange(True, success)
