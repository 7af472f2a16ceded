"""The agency's test certificate authority for mutual TLS between devices, receivers and the broker.

Until real provisioning exists, `recorder central certs` keeps one CA in a folder and issues from it:

    ca.crt, ca.key                      the CA (P-256); the key never needs to leave this folder
    broker.crt, broker.key              the broker's server certificate (SAN 127.0.0.1, localhost, extras)
    device-<ID>.crt, device-<ID>.key    one per device, CN = the device id (no key here when the device
                                        made its own and sent a CSR: provisioning/enrollment.py)
    receiver-<NAME>.crt, .key           one per central receiver, CN = the receiver name
    admin-<NAME>.crt, .key              central's identity for changing the broker's list of devices
    revoked.json, crl.pem               revoked certificates (serial, name, when, why) and the CRL the
                                        broker checks every client against

The broker takes a client certificate's CN as its MQTT username, and its ACL grants rights by username
(mqtt/broker_config.py), so the CN is the whole identity. That is why a name may hold only one role here,
and why server and client certificates carry different extended key usages: a leaked broker key cannot
log in as a client, nor a device key serve as the broker.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from evidence import layout
from evidence.durable import atomic_write
from evidence.errors import StorageFault
from provisioning.errors import ProvisioningError

CA_DAYS = 10 * 365
LEAF_DAYS = 3 * 365
_BACKDATE = dt.timedelta(minutes=5)
"""Devices whose clock is a little behind still accept a certificate issued just now."""
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
DEVICE, RECEIVER, ADMIN = "device", "receiver", "admin"
ROLES = (DEVICE, RECEIVER, ADMIN)
ADMIN_NAME = "central-admin"
CRL_DAYS = 30
"""A CRL is valid this long; it is written again on every revocation and by `recorder central crl`."""


@dataclass(frozen=True)
class Issued:
    name: str
    cert: Path
    key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    _write(path, pem, 0o600)


def _write(path: Path, data: bytes, mode: int) -> None:
    try:
        atomic_write(path, data, mode=mode)
    except StorageFault as err:
        raise ProvisioningError(str(err)) from err


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def common_name(cert: x509.Certificate) -> str:
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""


def read_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as err:
        raise ProvisioningError(f"cannot read {path}: {err.strerror or err}") from err
    except ValueError as err:
        raise ProvisioningError(f"{path} is not a PEM certificate") from err


def broker_hosts(extra: Iterable[str]) -> list[str]:
    """The names a broker certificate is valid for: loopback (the demo, the tests, a broker on the same box)
    and those the devices use to reach it."""
    return list(dict.fromkeys([*LOOPBACK_HOSTS, *extra]))


class CertificateAuthority:
    def __init__(self, directory: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.directory = directory
        self._cert = cert
        self._key = key

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.crt"

    @classmethod
    def load_or_create(cls, directory: Path, title: str = "Recorder agency test CA") -> tuple[
            CertificateAuthority, bool]:
        """The CA kept in `directory`, and whether it was made just now."""
        if (directory / "ca.crt").exists() or (directory / "ca.key").exists():
            ca = cls.load(directory)
            if not ca.crl_file.exists():
                ca.write_crl()
            return ca, False
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ProvisioningError(f"cannot create {directory}: {err.strerror or err}") from err
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(title))
            .issuer_name(_name(title))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        # Key first: a crash between the two writes leaves a key without a certificate, which `_load`
        # reports, rather than a certificate whose key is lost.
        _write_key(directory / "ca.key", key)
        _write(directory / "ca.crt", cert.public_bytes(serialization.Encoding.PEM), 0o644)
        ca = cls(directory, cert, key)
        ca.write_crl()  # the broker refuses to start without one
        return ca, True

    @classmethod
    def load(cls, directory: Path) -> CertificateAuthority:
        cert_path, key_path = directory / "ca.crt", directory / "ca.key"
        if not cert_path.exists() and not key_path.exists():
            raise ProvisioningError(f"no CA in {directory}: create one with `recorder central certs --out {directory}`")
        for path in (cert_path, key_path):
            if not path.exists():
                raise ProvisioningError(f"{path} is missing: the CA in {directory} is incomplete; restore it, or "
                                        "start a new CA in an empty folder (and re-issue every certificate)")
        cert = read_certificate(cert_path)
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except OSError as err:
            raise ProvisioningError(f"cannot read {key_path}: {err.strerror or err}") from err
        except (ValueError, TypeError) as err:
            raise ProvisioningError(f"{key_path} is not an unencrypted PEM private key") from err
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
            raise ProvisioningError(f"{key_path} is not the key of {cert_path}")
        return cls(directory, cert, key)

    def leaf_paths(self, role: str, name: str) -> Issued:
        # Not with_suffix: a device id may itself contain a dot.
        return Issued(name, self.directory / f"{role}-{name}.crt", self.directory / f"{role}-{name}.key")

    def broker_paths(self) -> Issued:
        return Issued("broker", self.directory / "broker.crt", self.directory / "broker.key")

    def issued_by_me(self, cert: x509.Certificate) -> bool:
        try:
            cert.verify_directly_issued_by(self._cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True

    @property
    def crl_file(self) -> Path:
        return self.directory / "crl.pem"

    def _holders(self, role: str) -> list[str]:
        """The names this CA has issued `role` certificates for, not revoked, from the certificates themselves."""
        revoked = {entry["serial"] for entry in self.revoked()}
        names = []
        for path in sorted(self.directory.glob(f"{role}-*.crt")):
            cert = read_certificate(path)
            if self.issued_by_me(cert) and cert.serial_number not in revoked:
                names.append(common_name(cert))
        return names

    def receivers(self) -> list[str]:
        return self._holders(RECEIVER)

    def devices(self) -> list[str]:
        return self._holders(DEVICE)

    def admins(self) -> list[str]:
        return self._holders(ADMIN)

    def revoked(self) -> list[dict[str, Any]]:
        path = self.directory / "revoked.json"
        if not path.exists():
            return []
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ProvisioningError(f"{path}: cannot read the revocation list: {err}; restore it from a backup "
                                    "(without it revoked devices would be let in again)") from err
        if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("serial"), int)
                                                    for e in entries):
            raise ProvisioningError(f"{path}: not a revocation list (a list of objects with an integer serial)")
        return entries

    def current_serial(self, role: str, name: str) -> int | None:
        path = self.leaf_paths(role, name).cert
        return read_certificate(path).serial_number if path.exists() else None

    def revoke(self, role: str, name: str, reason: str, by: str, serial: int | None = None) -> int | None:
        """Revoke certificate `serial` of `name` (by default its current `role` certificate): recorded, and in a
        new CRL. Returns the serial revoked; None if `name` has no certificate here."""
        serial = self.current_serial(role, name) if serial is None else serial
        if serial is None:
            return None
        entries = self.revoked()
        if all(e["serial"] != serial for e in entries):
            entries.append({"serial": serial, "role": role, "name": name, "reason": reason, "by": by,
                            "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})
            _write(self.directory / "revoked.json", (json.dumps(entries, indent=1) + "\n").encode(), 0o644)
        self.write_crl()
        return serial

    def write_crl(self) -> Path:
        """The CRL of every revoked certificate, signed now and valid CRL_DAYS (the broker reads it at start
        and on SIGHUP)."""
        now = dt.datetime.now(dt.UTC)
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self._cert.subject)
                   .last_update(now - _BACKDATE).next_update(now + dt.timedelta(days=CRL_DAYS)))
        for entry in self.revoked():
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(entry["serial"])
                .revocation_date(dt.datetime.fromisoformat(entry["time"])).build())
        crl = builder.sign(self._key, hashes.SHA256())
        _write(self.crl_file, crl.public_bytes(serialization.Encoding.PEM), 0o644)
        return self.crl_file

    def issue_broker(self, hosts: Iterable[str] = ()) -> Issued:
        """The broker's server certificate, valid for the loopback names and `hosts` (names or IP addresses)."""
        return self._issue_server(self.broker_paths(), "recorder-broker", hosts)

    def enrollment_paths(self) -> Issued:
        return Issued("enrollment", self.directory / "enrollment.crt", self.directory / "enrollment.key")

    def issue_enrollment_server(self, hosts: Iterable[str] = ()) -> Issued:
        """The server certificate of central's enrollment endpoint (provisioning/enrollment.py)."""
        return self._issue_server(self.enrollment_paths(), "recorder-enrollment", hosts)

    def web_paths(self) -> Issued:
        return Issued("web", self.directory / "web.crt", self.directory / "web.key")

    def issue_web_server(self, hosts: Iterable[str] = ()) -> Issued:
        """The HTTPS certificate of central's web application (`[web] tls_cert_file`, `tls_key_file`); staff's
        browsers trust it through the agency CA."""
        return self._issue_server(self.web_paths(), "recorder-central-web", hosts)

    def _issue_server(self, paths: Issued, cn: str, hosts: Iterable[str]) -> Issued:
        names: list[x509.GeneralName] = []
        for host in broker_hosts(hosts):
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        self._issue(paths, cn, ExtendedKeyUsageOID.SERVER_AUTH, x509.SubjectAlternativeName(names))
        return paths

    def issue_device(self, device_id: str) -> Issued:
        return self._issue_client(DEVICE, device_id)

    def issue_receiver(self, name: str) -> Issued:
        return self._issue_client(RECEIVER, name)

    def issue_admin(self, name: str = ADMIN_NAME) -> Issued:
        return self._issue_client(ADMIN, name)

    def _check_name(self, role: str, name: str) -> None:
        # The CN becomes an MQTT username and, for devices, a topic level in their rights; the device id
        # rules keep '+', '#' and '/' out of it.
        if not layout.DEVICE_ID.match(name):
            raise ProvisioningError(f"{role} name {name!r} must be 1-64 letters, digits, '.', '_' or '-', "
                                    "starting with a letter or digit")
        for other in ROLES:
            if other != role and self.leaf_paths(other, name).cert.exists():
                raise ProvisioningError(f"{name!r} is already a {other} in {self.directory}: the broker knows a "
                                        "client only by its name, so one name cannot hold two roles")

    def _issue_client(self, role: str, name: str) -> Issued:
        self._check_name(role, name)
        paths = self.leaf_paths(role, name)
        self._issue(paths, name, ExtendedKeyUsageOID.CLIENT_AUTH, None)
        return paths

    def sign_device_request(self, device_id: str, csr_pem: bytes) -> x509.Certificate:
        """A device certificate for the key the device made itself (its private key never leaves it). The
        request's signature proves the device holds that key; its subject is not used: the CN is `device_id`,
        which central decided. Kept here as device-<ID>.crt."""
        self._check_name(DEVICE, device_id)
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as err:
            raise ProvisioningError("the certificate request is not a PEM CSR") from err
        if not csr.is_signature_valid:
            raise ProvisioningError("the certificate request's signature does not verify")
        key = csr.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey | Ed25519PublicKey):
            raise ProvisioningError("the certificate request's key must be EC (P-256) or Ed25519")
        cert = self._certificate(key, device_id, ExtendedKeyUsageOID.CLIENT_AUTH, None)
        paths = self.leaf_paths(DEVICE, device_id)
        paths.key.unlink(missing_ok=True)  # a key once issued here for this name is no longer its key
        _write(paths.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        return cert

    def _certificate(self, public_key: ec.EllipticCurvePublicKey | Ed25519PublicKey, cn: str,
                     usage: x509.ObjectIdentifier, san: x509.SubjectAlternativeName | None) -> x509.Certificate:
        now = dt.datetime.now(dt.UTC)
        ca_ski = self._cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self._cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(min(now + dt.timedelta(days=LEAF_DAYS), self._cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        )
        if san is not None:
            builder = builder.add_extension(san, critical=False)
        return builder.sign(self._key, hashes.SHA256())

    def _issue(self, paths: Issued, cn: str, usage: x509.ObjectIdentifier,
               san: x509.SubjectAlternativeName | None) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._certificate(key.public_key(), cn, usage, san)
        _write_key(paths.key, key)
        _write(paths.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
