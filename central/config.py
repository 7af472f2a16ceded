"""Central's configuration tree (strict, as evidence/settings.py makes every tree): where the store is, who
this receiver is, the broker, the upload deadline and the agency's time zone.

    [central]   timezone: the zone times are shown and entered in (default Asia/Shanghai)
    [receiver]  store_dir, client_id, private_key_file, signing_key_file, share_group
    [enrollment] ca_dir, listen, port, broker_host, broker_port, token_hours: enrollment by token
    [mqtt]      as on the devices (mqtt/settings.py), with the receiver's own [mqtt.tls]
    [upload]    deadline_hours, warn_hours: the devices warn by the same numbers
    [web]       the staff's web application (central/web): address, database, approvals, log-in throttle
    [sweep]     interval_hours: how often the receiver's integrity sweep judges every stored session again
    [retention] everyday_months, long_term_years: how long sessions of each retention class are kept
"""

from __future__ import annotations

import dataclasses
import zoneinfo
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from evidence import layout
from evidence.deadline import UploadPolicy
from evidence.errors import ConfigError
from evidence.settings import NonEmpty, Port, Range, Section, TimeZone, build, read_toml
from mqtt.settings import MqttConfig


@dataclass(frozen=True)
class AgencyConfig(Section):
    timezone: Annotated[str, TimeZone()] = "Asia/Shanghai"
    """The agency's time zone: every time central shows or reads is in it, with its offset."""

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)


@dataclass(frozen=True)
class ReceiverConfig(Section):
    store_dir: Path = Path("/var/lib/recorder-central")
    client_id: Annotated[str, NonEmpty()] = "receiver-1"
    private_key_file: str = ""
    """Central's X25519 private key (PEM); with it the receiver keeps a decrypted working copy."""
    signing_key_file: str = ""
    """Central's Ed25519 key that signs receipts and alert acknowledgements (`recorder central key
    --signing-out`); empty sends them unsigned, which devices with `device.central_signing_key` refuse."""
    share_group: str = ""
    """MQTT 5 shared-subscription group: receivers sharing one store and one group split the load."""

    def validate(self) -> None:
        if not layout.DEVICE_ID.match(self.client_id):
            raise ConfigError(f"client_id: {self.client_id!r} must be 1-64 letters, digits, '.', '_' or '-' (it is the "
                              "receiver's MQTT client id, its certificate's name and part of every receipt)")
        group = self.share_group
        if group and (any(c in group for c in "/+#") or not group.isprintable()):
            raise ConfigError(f"share_group: {group!r} must be one topic level: no '/', '+', '#'")


TOKEN_HOURS = Range(0.1, 24 * 30)
"""How long an enrollment token may stay valid."""


@dataclass(frozen=True)
class EnrollmentConfig(Section):
    ca_dir: str = ""
    """The agency CA's folder (`recorder central certs`): it signs each box's certificate at enrollment."""
    listen: Annotated[str, NonEmpty()] = "0.0.0.0"
    port: Annotated[int, Port] = 8443
    """Where `recorder central enroll-server` takes the boxes' claims (HTTPS)."""
    host: str = ""
    """Central's address as the boxes reach it, printed with each token; empty: mqtt.host."""
    broker_host: str = ""
    """The broker's address as the boxes reach it; empty: mqtt.host."""
    broker_port: Annotated[int, Port] = 8883
    token_hours: Annotated[float, TOKEN_HOURS] = 24.0
    """How long an enrollment token stays valid."""
    broker_sync_minutes: Annotated[float, Range(0.01, 24 * 60)] = 10.0
    """`recorder central enroll-server` brings the broker's list of devices in line with central's records this
    often: a revocation or enrollment the broker missed (it was down) reaches it within this time."""


ROLES = ("viewer", "supervisor", "legal", "records", "technician", "admin")
"""The web application's roles (central/web/roles.py says what each may do)."""


@dataclass(frozen=True)
class WebConfig(Section):
    listen: Annotated[str, NonEmpty()] = "127.0.0.1"
    port: Annotated[int, Port] = 8080
    """Where `recorder central web` serves the staff's pages."""
    hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "[::1]")
    """The names and addresses staff reach the server by (Django's ALLOWED_HOSTS): a request naming another
    host is refused, so a page elsewhere cannot reach the server through a name it controls."""
    database: str = ""
    """Empty: an SQLite file beside the store (web.sqlite3). Or a PostgreSQL URL:
    postgresql://USER:PASSWORD@HOST:PORT/NAME (the password may instead come from ~/.pgpass)."""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    """HTTPS: the server's certificate chain and key (PEM). Both empty serves plain HTTP: only on loopback
    or behind a TLS proxy, since the pages carry recordings and passwords."""
    approval_hours: Annotated[float, Range(0.1, 24 * 30)] = 8.0
    """How long an approval to view a session lasts."""
    exempt_roles: tuple[str, ...] = ("supervisor", "legal")
    """Roles that view a session's content without an approval (ACCESS: supervisors may retrieve; the legal
    office makes every copy). Their viewing is audited all the same."""
    login_attempts: Annotated[int, Range(1, 100)] = 5
    lockout_minutes: Annotated[float, Range(0.1, 24 * 60)] = 15.0
    """After this many failed log-ins to one account (or four times as many from one address) within
    `lockout_minutes`, further attempts are refused until that long has passed since the last failure."""
    page_size: Annotated[int, Range(5, 500)] = 50
    threads: Annotated[int, Range(1, 64)] = 8
    """Requests served at once (a player streaming holds one only while a segment is sent)."""

    def validate(self) -> None:
        for role in self.exempt_roles:
            if role not in ROLES:
                raise ConfigError(f"exempt_roles: {role!r} is not a role ({', '.join(ROLES)})")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError("tls_cert_file, tls_key_file: give both for HTTPS, or neither for plain HTTP")
        if self.database and not self.database.startswith(("postgresql://", "postgres://")):
            raise ConfigError(f"database: {self.database[:40]!r} is not a PostgreSQL URL "
                              "(postgresql://USER:PASSWORD@HOST:PORT/NAME); leave it empty for SQLite")


@dataclass(frozen=True)
class SweepConfig(Section):
    interval_hours: Annotated[float, Range(0, 24 * 30)] = 24.0
    """`recorder central serve` judges every stored session again this often (NO-EDIT); 0: only on demand
    (`recorder central sweep`)."""


@dataclass(frozen=True)
class RetentionConfig(Section):
    everyday_months: Annotated[int, Range(6, 1200)] = 6
    """How long an everyday session is kept after it closed (RETENTION: at least 6 months; never less)."""
    long_term_years: Annotated[int, Range(10, 100)] = 30
    """How long a long-term session is kept (coercive measures, disputes or complaints, obstruction or
    assault of officers, mass or sudden incidents). The rules say "long-term" without a number; 10 years is
    this product's floor and 30 (archive practice for 长期) its default. An evidence session is kept as long
    as its case file, whatever this says."""

    def validate(self) -> None:
        if self.long_term_years * 12 <= self.everyday_months:
            raise ConfigError(f"long_term_years: {self.long_term_years} years is not longer than everyday_months "
                              f"({self.everyday_months} months); a long-term session must outlive an everyday one")


@dataclass(frozen=True)
class CentralConfig(Section):
    central: AgencyConfig = AgencyConfig()
    receiver: ReceiverConfig = ReceiverConfig()
    enrollment: EnrollmentConfig = EnrollmentConfig()
    mqtt: MqttConfig = dataclasses.field(default_factory=MqttConfig)
    upload: UploadPolicy = dataclasses.field(default_factory=UploadPolicy)
    web: WebConfig = WebConfig()
    sweep: SweepConfig = SweepConfig()
    retention: RetentionConfig = RetentionConfig()


DEFAULT_FILE = Path("/etc/recorder/central.toml")


def from_dict(data: dict[str, Any]) -> CentralConfig:
    return build(CentralConfig, data)


def load(path: Path | None) -> CentralConfig:
    """The file at `path`; without one, /etc/recorder/central.toml if it exists, else the defaults."""
    if path is None:
        if not DEFAULT_FILE.exists():
            return CentralConfig()
        path = DEFAULT_FILE
    data = read_toml(path)
    try:
        return from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def replace(config: CentralConfig, **sections: Any) -> CentralConfig:
    return dataclasses.replace(config, **sections)
