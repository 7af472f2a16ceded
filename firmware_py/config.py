"""The one configuration tree. Unknown keys and bad values are errors that name the field.

A TOML file maps onto these dataclasses section by section; every field has a default that works on
the simulator, so an empty file is a valid configuration for a laptop.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
import zoneinfo
from pathlib import Path
from typing import Any, Literal

from capture import layout
from capture.encryption import public_key_from_b64
from capture.errors import CaptureError
from firmware_py.errors import ConfigError
from mqtt.tls import TlsFiles

NOTICE_ZH = "为保护您的合法权益，监督我们的执法行为，本次执法将全程录音录像"
NOTICE_EN = (
    "To protect your lawful rights and to supervise our enforcement, "
    "this enforcement will be recorded in full, audio and video."
)
PREFLIGHT_CHECKS = ("storage", "camera", "microphone", "speaker", "clock", "power", "prompts")


@dataclasses.dataclass(frozen=True)
class Officer:
    name: str
    certificate: str


@dataclasses.dataclass(frozen=True)
class DeviceConfig:
    id: str = "SIM-0001"
    unit: str = "示例执法单位"
    room: str = "询问室一"
    location: str = "示例市示例路1号"
    timezone: str = "Asia/Shanghai"
    state_dir: Path = Path("/var/lib/recorder")
    central_public_key: str = ""
    """Central's X25519 public key (base64) that every segment is sealed to; empty records in the clear."""


@dataclasses.dataclass(frozen=True)
class SessionConfig:
    segment_seconds: float = 2.0
    stop_hold_seconds: float = 2.0
    max_minutes: int = 240
    continue_on: tuple[str, ...] = ("clock",)
    """Pre-flight failures that are announced but let the session start (marked in its record)."""
    case: str = ""
    matter: str = ""
    parties: tuple[str, ...] = ()
    mark_label: str = "出示执法证件 certificate shown"
    """What a MARK press records; officers press it when they show their enforcement certificates."""
    officers: tuple[Officer, ...] = (
        Officer("张三", "44000000001"),
        Officer("李四", "44000000002"),
    )


@dataclasses.dataclass(frozen=True)
class PinsConfig:
    start: int = 17
    stop: int = 27
    mark: int = 22
    tally: int = 5


@dataclasses.dataclass(frozen=True)
class HalConfig:
    backend: Literal["pi", "sim", "auto"] = "auto"
    pins: PinsConfig = PinsConfig()


@dataclasses.dataclass(frozen=True)
class VideoConfig:
    width: int = 640
    height: int = 360
    fps: int = 15
    bitrate: int = 800_000


@dataclasses.dataclass(frozen=True)
class AudioConfig:
    sample_rate: int = 16000


@dataclasses.dataclass(frozen=True)
class NoticeConfig:
    zh: str = NOTICE_ZH
    en: str = NOTICE_EN
    """Second prompt after the Chinese one; empty to play only the Chinese wording."""
    voice_zh: str = "cmn"
    voice_en: str = "en"
    words_per_minute: int = 170


@dataclasses.dataclass(frozen=True)
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    topic_prefix: str = "recorders"
    keepalive: int = 30
    retry_max_seconds: float = 30.0
    resend_seconds: float = 15.0
    """An entry without a receipt after this long is sent again (central stores duplicates once)."""
    tls: TlsFiles | None = None
    """[mqtt.tls] ca_file, cert_file, key_file: mutual TLS with this side's own certificate (a device's CN is
    its id, a receiver's its name); without the table, plain TCP."""


@dataclasses.dataclass(frozen=True)
class UploadConfig:
    deadline_hours: float = 24.0
    """Time from a recording's end by which central must hold all of it (24 h; or to the end of the day)."""
    warn_hours: tuple[float, ...] = (12.0, 20.0)


@dataclasses.dataclass(frozen=True)
class ReceiverConfig:
    store_dir: Path = Path("/var/lib/recorder-central")
    client_id: str = "receiver-1"
    private_key_file: str = ""
    """Central's X25519 private key (PEM); with it the receiver keeps a decrypted working copy."""
    share_group: str = ""
    """MQTT 5 shared-subscription group: receivers sharing one store and one group split the load."""


@dataclasses.dataclass(frozen=True)
class Config:
    device: DeviceConfig = DeviceConfig()
    session: SessionConfig = SessionConfig()
    hal: HalConfig = HalConfig()
    video: VideoConfig = VideoConfig()
    audio: AudioConfig = AudioConfig()
    notice: NoticeConfig = NoticeConfig()
    mqtt: MqttConfig = MqttConfig()
    upload: UploadConfig = UploadConfig()
    receiver: ReceiverConfig = ReceiverConfig()

    @property
    def spool_dir(self) -> Path:
        return self.device.state_dir / "spool"

    @property
    def keys_dir(self) -> Path:
        return self.device.state_dir / "keys"

    @property
    def prompt_dir(self) -> Path:
        return self.device.state_dir / "prompts"


def _convert(value: Any, hint: Any, field: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is types.UnionType:
        # Only `X | None`, for an optional table: TOML has no null, so a present value is always an X.
        (inner,) = (arg for arg in typing.get_args(hint) if arg is not type(None))
        return _convert(value, inner, field)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{field}: expected a table, got {type(value).__name__}")
        return _build(hint, value, field)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            choices = ", ".join(repr(a) for a in allowed)
            raise ConfigError(f"{field}: {value!r} is not one of {choices}")
        return value
    if origin is tuple:
        item_hint = typing.get_args(hint)[0]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{field}: expected a list, got {type(value).__name__}")
        return tuple(_convert(v, item_hint, f"{field}[{i}]") for i, v in enumerate(value))
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{field}: expected a path string")
        return Path(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{field}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{field}: expected a whole number, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{field}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{field}: unsupported type {hint!r}")


def _build(cls: Any, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        field = f"{prefix}.{key}" if prefix else key
        if key not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"{field}: unknown key (known keys here: {known})")
        kwargs[key] = _convert(value, hints[key], field)
    for f in dataclasses.fields(cls):
        if f.name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{prefix}.{f.name}: required" if prefix else f"{f.name}: required")
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{prefix or 'config'}: {err}") from err


def _positive(value: float, field: str) -> None:
    if value <= 0:
        raise ConfigError(f"{field}: must be greater than zero, got {value}")


def validate(config: Config) -> Config:
    """Checks that cross single fields; types were checked while building."""
    _positive(config.session.segment_seconds, "session.segment_seconds")
    _positive(config.session.stop_hold_seconds, "session.stop_hold_seconds")
    _positive(config.session.max_minutes, "session.max_minutes")
    for i, check in enumerate(config.session.continue_on):
        if check not in PREFLIGHT_CHECKS:
            raise ConfigError(
                f"session.continue_on[{i}]: {check!r} is not a pre-flight check "
                f"(one of {', '.join(PREFLIGHT_CHECKS)})"
            )
    if not config.session.officers:
        raise ConfigError("session.officers: at least one officer is required (name and certificate)")
    for i, officer in enumerate(config.session.officers):
        if not officer.name.strip() or not officer.certificate.strip():
            raise ConfigError(f"session.officers[{i}]: name and certificate must both be given")
    if not layout.DEVICE_ID.match(config.device.id):
        raise ConfigError(f"device.id: {config.device.id!r} must be 1-64 letters, digits, '.', '_' or '-', "
                          "starting with a letter or digit (it names folders and an MQTT topic level)")
    group = config.receiver.share_group
    if group and (any(c in group for c in "/+#") or not group.isprintable()):
        raise ConfigError(f"receiver.share_group: {group!r} must be one topic level: no '/', '+', '#'")
    prefix = config.mqtt.topic_prefix
    if not prefix or any(c in prefix for c in "/+#") or prefix.startswith("$"):
        raise ConfigError(f"mqtt.topic_prefix: {prefix!r} must be one topic level: "
                          "no '/', '+', '#', not starting with '$'")
    try:
        zoneinfo.ZoneInfo(config.device.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as err:
        raise ConfigError(f"device.timezone: {config.device.timezone!r} is not a known time zone") from err
    if config.device.central_public_key:
        try:
            public_key_from_b64(config.device.central_public_key)
        except CaptureError as err:
            raise ConfigError(f"device.central_public_key: {err}") from err
    _positive(config.upload.deadline_hours, "upload.deadline_hours")
    for i, hours in enumerate(config.upload.warn_hours):
        if not 0 < hours < config.upload.deadline_hours:
            raise ConfigError(f"upload.warn_hours[{i}]: {hours} must be between 0 and upload.deadline_hours "
                              f"({config.upload.deadline_hours})")
    _positive(config.video.width, "video.width")
    _positive(config.video.height, "video.height")
    if config.video.width % 2 or config.video.height % 2:
        raise ConfigError("video.width/video.height: must be even (H.264 4:2:0)")
    if not 1 <= config.video.fps <= 60:
        raise ConfigError(f"video.fps: must be 1..60, got {config.video.fps}")
    if config.audio.sample_rate not in (8000, 16000, 22050, 32000, 44100, 48000):
        raise ConfigError(f"audio.sample_rate: {config.audio.sample_rate} is not a supported AAC rate")
    _positive(config.mqtt.resend_seconds, "mqtt.resend_seconds")
    if not 1 <= config.mqtt.port <= 65535:
        raise ConfigError(f"mqtt.port: must be 1..65535, got {config.mqtt.port}")
    if config.mqtt.tls is not None:
        for f in dataclasses.fields(config.mqtt.tls):
            path = getattr(config.mqtt.tls, f.name)
            if not path.is_file():
                raise ConfigError(f"mqtt.tls.{f.name}: {path} does not exist (or is not a file)")
    return config


def from_dict(data: dict[str, Any]) -> Config:
    return validate(_build(Config, data, ""))


def load(path: Path) -> Config:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: no such configuration file") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from err
    try:
        return from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def replace(config: Config, **sections: Any) -> Config:
    """A copy with whole sections replaced; used by the demo and tests to build variants."""
    return validate(dataclasses.replace(config, **sections))
