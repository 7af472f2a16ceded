"""The agency's test certificate authority for mutual TLS between devices, receivers and the broker.

Until real provisioning exists, `recorder central certs` keeps one CA in a folder and issues from it:

    ca.crt, ca.key                      the CA (P-256); the key never needs to leave this folder
    broker.crt, broker.key              the broker's server certificate (SAN 127.0.0.1, localhost, extras)
    device-<ID>.crt, device-<ID>.key    one per device, CN = the device id
    receiver-<NAME>.crt, .key           one per central receiver, CN = the receiver name

The broker takes a client certificate's CN as its MQTT username, and its ACL grants rights by username
(mqtt/broker_config.py), so the CN is the whole identity. That is why a name may hold only one role here,
and why server and client certificates carry different extended key usages: a leaked broker key cannot
log in as a client, nor a device key serve as the broker.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
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
DEVICE, RECEIVER = "device", "receiver"


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
            return cls.load(directory), False
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
        return cls(directory, cert, key), True

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

    def receivers(self) -> list[str]:
        """The receiver names this CA has issued certificates for, from the certificates themselves."""
        names = []
        for path in sorted(self.directory.glob(f"{RECEIVER}-*.crt")):
            cert = read_certificate(path)
            if self.issued_by_me(cert):
                names.append(common_name(cert))
        return names

    def issue_broker(self, hosts: Iterable[str] = ()) -> Issued:
        """The broker's server certificate, valid for the loopback names and `hosts` (names or IP addresses)."""
        names: list[x509.GeneralName] = []
        for host in broker_hosts(hosts):
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        paths = self.broker_paths()
        self._issue(paths, "recorder-broker", ExtendedKeyUsageOID.SERVER_AUTH, x509.SubjectAlternativeName(names))
        return paths

    def issue_device(self, device_id: str) -> Issued:
        return self._issue_client(DEVICE, RECEIVER, device_id)

    def issue_receiver(self, name: str) -> Issued:
        return self._issue_client(RECEIVER, DEVICE, name)

    def _issue_client(self, role: str, other: str, name: str) -> Issued:
        # The CN becomes an MQTT username and, for devices, a topic level in the ACL's patterns; the device
        # id rules keep '+', '#' and '/' out of it.
        if not layout.DEVICE_ID.match(name):
            raise ProvisioningError(f"{role} name {name!r} must be 1-64 letters, digits, '.', '_' or '-', "
                                    "starting with a letter or digit")
        if self.leaf_paths(other, name).cert.exists():
            raise ProvisioningError(f"{name!r} is already a {other} in {self.directory}: the broker knows a "
                                    "client only by its name, so one name cannot hold both roles")
        paths = self.leaf_paths(role, name)
        self._issue(paths, name, ExtendedKeyUsageOID.CLIENT_AUTH, None)
        return paths

    def _issue(self, paths: Issued, cn: str, usage: x509.ObjectIdentifier,
               san: x509.SubjectAlternativeName | None) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        ca_ski = self._cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(min(now + dt.timedelta(days=LEAF_DAYS), self._cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        )
        if san is not None:
            builder = builder.add_extension(san, critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        _write_key(paths.key, key)
        _write(paths.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
