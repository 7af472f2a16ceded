"""Central's configuration tree (strict, as evidence/settings.py makes every tree): where the store is, who
this receiver is, the broker, the upload deadline and the agency's time zone.

    [central]   timezone: the zone times are shown and entered in (default Asia/Shanghai)
    [receiver]  store_dir, client_id, private_key_file, signing_key_file, share_group
    [enrollment] ca_dir, listen, port, broker_host, broker_port, token_hours: enrollment by token
    [mqtt]      as on the devices (mqtt/settings.py), with the receiver's own [mqtt.tls]
    [upload]    deadline_hours, warn_hours: the devices warn by the same numbers
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


@dataclass(frozen=True)
class CentralConfig(Section):
    central: AgencyConfig = AgencyConfig()
    receiver: ReceiverConfig = ReceiverConfig()
    enrollment: EnrollmentConfig = EnrollmentConfig()
    mqtt: MqttConfig = dataclasses.field(default_factory=MqttConfig)
    upload: UploadPolicy = dataclasses.field(default_factory=UploadPolicy)


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
