"""The device's configuration tree (evidence/settings.py makes it strict: unknown keys and bad values are
errors that name the field, and numbers must be finite and within their limits).

A TOML file maps onto these dataclasses section by section; every field has a default that works on the
simulator, so an empty file is a valid configuration for a laptop. `[mqtt]` and `[upload]` are the
sections central's configuration (central/config.py) shares.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any, Literal

from evidence import layout
from evidence.deadline import UploadPolicy
from evidence.encryption import public_key_from_b64
from evidence.errors import ConfigError, EvidenceError
from evidence.keys import load_public_key_b64
from evidence.settings import NonEmpty, Range, Section, TimeZone, build, read_toml
from mqtt.settings import MqttConfig

NOTICE_ZH = "为保护您的合法权益，监督我们的执法行为，本次执法将全程录音录像"
NOTICE_EN = (
    "To protect your lawful rights and to supervise our enforcement, "
    "this enforcement will be recorded in full, audio and video."
)
PREFLIGHT_CHECKS = ("storage", "camera", "microphone", "speaker", "clock", "power", "prompts")
Pin = Annotated[int, Range(0, 27)]
"""A BCM GPIO number of the Raspberry Pi's 40-pin header."""


@dataclasses.dataclass(frozen=True)
class Officer(Section):
    name: Annotated[str, NonEmpty()]
    certificate: Annotated[str, NonEmpty()]


@dataclasses.dataclass(frozen=True)
class DeviceConfig(Section):
    id: str = "SIM-0001"
    unit: str = "示例执法单位"
    room: str = "询问室一"
    location: str = "示例市示例路1号"
    timezone: Annotated[str, TimeZone()] = "Asia/Shanghai"
    state_dir: Path = Path("/var/lib/recorder")
    central_public_key: str = ""
    """Central's X25519 public key (base64) that every segment is sealed to; empty records in the clear."""
    central_signing_key: str = ""
    """Central's Ed25519 public key (base64): a receipt or alert acknowledgement counts only if it signed it.
    Empty trusts unsigned ones (a lab set-up; the service warns)."""
    lab_setup: bool = False
    """A lab box, never a room: on the `pi` backend the service starts even with the weaknesses of
    firmware_py/weaknesses.py (plain MQTT, no central keys). Without it, it refuses."""

    def validate(self) -> None:
        if not layout.DEVICE_ID.match(self.id):
            raise ConfigError(f"id: {self.id!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a "
                              "letter or digit (it names folders and an MQTT topic level)")
        if self.central_public_key:
            try:
                public_key_from_b64(self.central_public_key)
            except EvidenceError as err:
                raise ConfigError(f"central_public_key: {err}") from err
        if self.central_signing_key:
            try:
                load_public_key_b64(self.central_signing_key)
            except EvidenceError as err:
                raise ConfigError(f"central_signing_key: {err} (it is printed by `recorder central key "
                                  "--signing-out FILE`)") from err


@dataclasses.dataclass(frozen=True)
class SessionConfig(Section):
    segment_seconds: Annotated[float, Range(0.5, 60)] = 2.0
    stop_hold_seconds: Annotated[float, Range(0.1, 10)] = 2.0
    max_minutes: Annotated[int, Range(1, 24 * 60)] = 240
    continue_on: tuple[str, ...] = ("clock",)
    """Pre-flight failures that are announced but let the session start (marked in its record)."""
    case: str = ""
    matter: str = ""
    parties: tuple[str, ...] = ()
    mark_label: str = "出示执法证件 certificate shown"
    """What a MARK press records; officers press it when they show their enforcement certificates."""
    input_timeout_seconds: Annotated[float, Range(0.2, 30)] = 1.0
    """An input silent this long while recording (no frame; no sound, or only digital silence) is a fault."""
    resume_retry_seconds: Annotated[float, Range(0.1, 60)] = 0.5
    """After a break, how often the device tries to start recording again."""
    cannot_continue_after_seconds: Annotated[float, Range(1, 24 * 3600)] = 120.0
    """After a break that has not cleared for this long, recording cannot continue: said, alerted, closed."""
    explanation_seconds: Annotated[float, Range(1, 600)] = 45.0
    """After resuming, how long the officer has to state the reason aloud (START ends it sooner)."""
    menu_seconds: Annotated[float, Range(1, 120)] = 8.0
    """How long the reason menu waits for a button after speaking before it keeps the detected cause."""
    resume_within_minutes: Annotated[int, Range(0, 24 * 60)] = 30
    """After a restart (a crash, a power cut, an update), a session left open no longer ago than this is taken
    up again; an older one is closed. 0: never; a stopped service then closes its session."""
    notice_again: bool = True
    """Give the recording notice again after the explanation (always when the break cut it short)."""
    officers: tuple[Officer, ...] = (
        Officer("张三", "44000000001"),
        Officer("李四", "44000000002"),
    )

    def validate(self) -> None:
        for i, check in enumerate(self.continue_on):
            if check not in PREFLIGHT_CHECKS:
                raise ConfigError(f"continue_on[{i}]: {check!r} is not a pre-flight check (one of "
                                  f"{', '.join(PREFLIGHT_CHECKS)})")
        if not self.officers:
            raise ConfigError("officers: at least one officer is required (name and certificate)")


@dataclasses.dataclass(frozen=True)
class PinsConfig(Section):
    start: Pin = 17
    stop: Pin = 27
    mark: Pin = 22
    tally: Pin = 5

    def validate(self) -> None:
        seen: dict[int, str] = {}
        for f in dataclasses.fields(self):
            pin = getattr(self, f.name)
            if pin in seen:
                raise ConfigError(f"{f.name}: GPIO {pin} is already the {seen[pin]} pin; every button and the tally "
                                  "need a pin of their own")
            seen[pin] = f.name


@dataclasses.dataclass(frozen=True)
class HalConfig(Section):
    backend: Literal["pi", "sim", "auto"] = "auto"
    pins: PinsConfig = PinsConfig()


@dataclasses.dataclass(frozen=True)
class VideoConfig(Section):
    width: Annotated[int, Range(64, 4096)] = 640
    height: Annotated[int, Range(64, 4096)] = 360
    fps: Annotated[int, Range(1, 60)] = 15
    bitrate: Annotated[int, Range(50_000, 50_000_000)] = 800_000

    def validate(self) -> None:
        for name in ("width", "height"):
            if getattr(self, name) % 2:
                raise ConfigError(f"{name}: must be even (H.264 4:2:0), got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class AudioConfig(Section):
    sample_rate: int = 16000

    def validate(self) -> None:
        if self.sample_rate not in (8000, 16000, 22050, 32000, 44100, 48000):
            raise ConfigError(f"sample_rate: {self.sample_rate} is not a supported AAC rate "
                              "(8000, 16000, 22050, 32000, 44100, 48000)")


@dataclasses.dataclass(frozen=True)
class NoticeConfig(Section):
    zh: Annotated[str, NonEmpty()] = NOTICE_ZH
    en: str = NOTICE_EN
    """Second prompt after the Chinese one; empty to play only the Chinese wording."""
    voice_zh: Annotated[str, NonEmpty()] = "cmn"
    voice_en: Annotated[str, NonEmpty()] = "en"
    words_per_minute: Annotated[int, Range(80, 450)] = 170
    closing_statement: bool = True
    """On STOP, say "this recording ends at …" into the recording before it closes."""


@dataclasses.dataclass(frozen=True)
class SpoolConfig(Section):
    keep_receipted_days: Annotated[float, Range(0, 3650)] = 30.0
    """A closed session whose every entry has central's signed receipt is removed from the device this many days
    after it closed (never without those receipts: see capture/pruning.py)."""
    free_space_floor_sessions: Annotated[float, Range(0, 100)] = 2.0
    """And earlier, oldest first, while free space is below what this many sessions of session.max_minutes
    need at the configured bitrate."""


Minutes = Annotated[float, Range(0.01, 24 * 60)]
"""A span of the room's reminders, in minutes: fractions allowed (a test's few seconds), at most a day."""


@dataclasses.dataclass(frozen=True)
class RoomConfig(Section):
    """The room around the box: its bookings from central and its sensor (ROOM, NO-RECORD)."""

    sensor: Literal["none", "door", "presence"] = "none"
    """`door`: a door contact, closed while the room's door is shut (the room counts as in use); `presence`: a
    PIR presence sensor (the room counts as in use while it reports someone). `none`: no reminders."""
    sensor_pin: Pin = 6
    booking_lead_minutes: Annotated[float, Range(0, 24 * 60)] = 15.0
    """A session started this long before a booking's start belongs to it (officers come in a little early)."""
    remind_after_minutes: Minutes = 5.0
    """People in the room and no session open this long: the device says so (press START to record)."""
    alert_after_minutes: Minutes = 10.0
    """And still so this long after the reminder (or after the overrun prompt): an alert to central."""
    overrun_minutes: Minutes = 30.0
    """A session still recording this long after its booking's end, with nobody in the room: a spoken prompt
    to end it (then the alert, alert_after_minutes later)."""


@dataclasses.dataclass(frozen=True)
class Config(Section):
    device: DeviceConfig = DeviceConfig()
    session: SessionConfig = SessionConfig()
    hal: HalConfig = HalConfig()
    video: VideoConfig = VideoConfig()
    audio: AudioConfig = AudioConfig()
    notice: NoticeConfig = NoticeConfig()
    spool: SpoolConfig = SpoolConfig()
    mqtt: MqttConfig = dataclasses.field(default_factory=MqttConfig)
    upload: UploadPolicy = dataclasses.field(default_factory=UploadPolicy)
    room: RoomConfig = RoomConfig()

    def validate(self) -> None:
        if self.room.sensor == "none":
            return
        pins = self.hal.pins
        for f in dataclasses.fields(pins):
            if getattr(pins, f.name) == self.room.sensor_pin:
                raise ConfigError(f"room.sensor_pin: GPIO {self.room.sensor_pin} is already the hal.pins.{f.name} "
                                  "pin; the room sensor needs a pin of its own")

    @property
    def bookings_file(self) -> Path:
        return self.device.state_dir / "bookings.json"

    @property
    def spool_dir(self) -> Path:
        return self.device.state_dir / "spool"

    @property
    def keys_dir(self) -> Path:
        return self.device.state_dir / "keys"

    @property
    def prompt_dir(self) -> Path:
        return self.device.state_dir / "prompts"


def from_dict(data: dict[str, Any]) -> Config:
    return build(Config, data)


def load(path: Path) -> Config:
    data = read_toml(path)
    try:
        return from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def replace(config: Config, **sections: Any) -> Config:
    """A copy with whole sections replaced; used by the demo and tests to build variants."""
    return dataclasses.replace(config, **sections)
