"""A whole recorder system on one machine: a Mosquitto, central's receiver and store, and a device on the
simulated hardware. `recorder demo`, the tests and the benchmarks all assemble it here (as gpiozero ships
its own test fixtures), so what they exercise is what ships.

Configurations come in pairs: the device's (firmware_py/config.py) and central's (central/config.py),
sharing one central key pair made in the work folder, as a deployment would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from central import config as central_config
from central.bookings import Fields, Kept
from central.build import build_bookings, build_receiver
from central.enroll_server import EnrollServer
from central.enrollment import Enrollment
from central.receiver import Receiver
from central.register import Actor
from central.store import FileStore
from evidence.booking import Booking, BookingSet, make_booking_set
from evidence.durable import atomic_write
from evidence.entry import Officer
from evidence.settings import read_toml
from firmware_py import config as config_mod
from firmware_py import config_file
from firmware_py.service import Service, wait_for_state
from firmware_py.state_machine import State
from hal.buttons.base import ButtonName
from mqtt import protocol
from mqtt.broker import LocalBroker, free_port
from mqtt.client import make_client
from mqtt.tls import TlsFiles
from provisioning.ca import CertificateAuthority, Issued
from provisioning.central_key import create_central_key, create_signing_key, load_signing_key

FAST: dict[str, dict[str, Any]] = {
    "session": {"segment_seconds": 1.0, "stop_hold_seconds": 0.5, "max_minutes": 10, "explanation_seconds": 2.0,
                "menu_seconds": 1.5},
    "notice": {"en": "", "words_per_minute": 320, "closing_statement": False},
    "video": {"width": 320, "height": 240, "fps": 10, "bitrate": 300_000},
    "mqtt": {"retry_max_seconds": 2},
}
"""Settings for tests: short notice, short segments, short STOP hold, short explanation and menu after a
break, small video, and no closing statement (the tests that check it turn it on: it adds some 3 s to
every session's end)."""


def configs(workdir: Path, host: str, port: int, device: dict[str, dict[str, Any]] | None = None,
            central: dict[str, dict[str, Any]] | None = None) -> tuple[config_mod.Config, central_config.CentralConfig]:
    """The device's and central's configuration for a system in `workdir`: segments sealed to a central key
    pair kept there, the device's state in `device/`, central's store in `central/`. `device` and `central`
    add or override settings, section by section."""
    key_file, signing_file = workdir / "central-key.pem", workdir / "central-signing-key.pem"
    public = create_central_key(key_file)
    signing = create_signing_key(signing_file)
    device_data: dict[str, dict[str, Any]] = {
        "device": {"state_dir": str(workdir / "device"), "central_public_key": public,
                   "central_signing_key": signing},
        "hal": {"backend": "sim"},
        "mqtt": {"host": host, "port": port},
    }
    central_data: dict[str, dict[str, Any]] = {
        "receiver": {"store_dir": str(workdir / "central"), "private_key_file": str(key_file),
                     "signing_key_file": str(signing_file)},
        "mqtt": {"host": host, "port": port},
    }
    for data, extra in ((device_data, device), (central_data, central)):
        for section, values in (extra or {}).items():
            data.setdefault(section, {}).update(values)
    return config_mod.from_dict(device_data), central_config.from_dict(central_data)


def fast(extra: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """FAST with `extra` merged in, section by section."""
    merged = {section: dict(values) for section, values in FAST.items()}
    for section, values in (extra or {}).items():
        merged.setdefault(section, {}).update(values)
    return merged


def with_pki(directory: Path, device: config_mod.Config, central: central_config.CentralConfig,
             ) -> tuple[config_mod.Config, central_config.CentralConfig, CertificateAuthority]:
    """A CA in `directory` with certificates for the broker, the device, the receiver and central's broker
    admin: both configurations with their own [mqtt.tls], and the CA (for `pki_broker`)."""
    ca, _ = CertificateAuthority.load_or_create(directory)
    ca.issue_broker()
    ca.issue_admin()

    def tls(issued: Issued) -> TlsFiles:
        return TlsFiles(ca.ca_file, issued.cert, issued.key)

    device_tls = tls(ca.issue_device(device.device.id))
    central_tls = tls(ca.issue_receiver(central.receiver.client_id))
    return (config_mod.replace(device, mqtt=dataclasses.replace(device.mqtt, tls=device_tls)),
            central_config.replace(central, mqtt=dataclasses.replace(central.mqtt, tls=central_tls)), ca)


def pki_broker(workdir: Path, ca: CertificateAuthority, port: int | None = None,
               prefix: str = "recorders") -> LocalBroker:
    """A local Mosquitto as `recorder central broker-config` sets one up: mutual TLS with `ca`'s broker
    certificate and revocation list, and every receiver, admin and (unrevoked) device the CA has issued."""
    broker = ca.broker_paths()
    return LocalBroker(workdir, port=port, tls=TlsFiles(ca.ca_file, broker.cert, broker.key), crl_file=ca.crl_file,
                       receivers=ca.receivers(), devices=ca.devices(), admins=ca.admins(), prefix=prefix)


@dataclass
class Rig:
    config: config_mod.Config
    central: central_config.CentralConfig
    service: Service
    store: FileStore
    receiver: Receiver | None

    def pin(self, button: ButtonName) -> int:
        return int(getattr(self.config.hal.pins, button.value))

    def tap(self, button: ButtonName, seconds: float = 0.05) -> None:
        assert self.service.hal.sim is not None
        self.service.hal.sim.pins.tap(self.pin(button), seconds)

    def wait_state(self, state: State, timeout: float = 30.0) -> None:
        if not wait_for_state(self.service, state, timeout):
            controller = self.service.controller
            raise TimeoutError(f"device never reached {state.value}; it is {controller.machine.state.value}, "
                               f"last fault {controller.last_fault}")

    def record(self, seconds: float, during: Callable[[], None] | None = None) -> str:
        """One whole session: START, notice, `seconds` of recording (with `during` called), STOP held."""
        self.tap(ButtonName.START)
        self.wait_state(State.RECORDING)
        if during is not None:
            during()
        time.sleep(seconds)
        self.tap(ButtonName.STOP, self.config.session.stop_hold_seconds + 0.3)
        self.wait_state(State.IDLE)
        return self.service.controller.timings.sessions_closed[-1]

    def people(self, present: bool) -> None:
        """People come into the room (`True`) or all leave, as the simulated room sensor sees it (room.sensor)."""
        assert self.service.hal.sim is not None
        self.service.hal.sim.people(present)

    def publish_bookings(self, bookings: Sequence[Booking], serial: int, device: str | None = None) -> BookingSet:
        """`bookings` as central sends them: a set signed with central's signing key, published retained on the
        device's bookings topic (PROTOCOL §14). `device` names another device in the set (to see it refused)."""
        found = signed_bookings(Path(self.central.receiver.signing_key_file), device or self.config.device.id,
                                serial, bookings)
        publish_retained(self.central, protocol.topic(self.config.mqtt.topic_prefix, self.config.device.id,
                                                      protocol.BOOKINGS), found.raw)
        return found

    def book(self, start: dt.datetime, minutes: float, **fields: Any) -> Kept:
        """A booking of this rig's room made at central, as staff make one (central/bookings.py: signed, kept,
        audited), once the receiver has published its set; `fields` as central.bookings.Fields takes them."""
        bookings = build_bookings(self.central, self.store)
        kept = bookings.make(self.config.device.id, Fields(start, start + dt.timedelta(minutes=minutes), **fields),
                             Actor("rig", "admin"))
        serial = bookings.of(self.config.device.id).serial
        if self.receiver is None or not self.receiver.wait_bookings(self.config.device.id, serial, 10):
            raise TimeoutError(f"the receiver did not publish booking set {serial} within 10 s")
        return kept

    def central_dir(self, session: str) -> Path:
        """Central's copy of the session, once the receiver has done its follow-up work (working copies,
        index), which comes after the receipts."""
        if self.receiver is not None and not self.receiver.settle(60):
            raise TimeoutError("the receiver did not finish its working copies")
        return self.store.session_dir(self.config.device.id, session)

    def close(self) -> None:
        self.service.stop()
        if self.receiver is not None:
            self.receiver.stop()


def booking(start: dt.datetime, minutes: float, *, auto_start: bool = False, act: str = "询问",
            matter: str = "张某涉嫌盗窃案", case: str = "A-2026-0042", parties: tuple[str, ...] = ("张某",),
            officers: tuple[Officer, ...] = (Officer("王五", "44000000009"),), retention: str = "evidence",
            room: str = "询问室一", booking_id: str | None = None, version: int = 1) -> Booking:
    """A booking from `start` for `minutes`, with sample details, as central's staff would make one."""
    return Booking(booking_id or secrets.token_hex(8), version, room, start, start + dt.timedelta(minutes=minutes),
                   case, matter, act, parties, officers, retention, auto_start)


def signed_bookings(signing_key_file: Path, device: str, serial: int, bookings: Sequence[Booking]) -> BookingSet:
    """The set of `bookings` for `device`, signed with central's signing key (the receipts' key) at
    `signing_key_file`."""
    identity = load_signing_key(signing_key_file)
    return make_booking_set(device, serial, dt.datetime.now(dt.UTC), bookings, identity.sign)


def publish_retained(central: central_config.CentralConfig, topic: str, payload: bytes, timeout: float = 10.0) -> None:
    """Publish `payload` retained at QoS 1 on `topic` as central does, over central's MQTT settings (its own TLS
    identity with them), and wait until the broker has it."""
    client = make_client(f"rig-{secrets.token_hex(4)}", 1, central.mqtt.tls)
    client.connect(central.mqtt.host, central.mqtt.port)
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=1, retain=True)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise TimeoutError(f"the broker at {central.mqtt.host}:{central.mqtt.port} did not take {topic}")
    finally:
        client.disconnect()
        client.loop_stop()


def start_receiver(central: central_config.CentralConfig, store: FileStore) -> Receiver:
    receiver = build_receiver(central, store)
    receiver.start()
    if not receiver.connected.wait(10):
        receiver.stop()
        raise TimeoutError(f"the receiver could not reach the broker at {central.mqtt.host}:{central.mqtt.port}")
    return receiver


def make_rig(device: config_mod.Config, central: central_config.CentralConfig, with_receiver: bool = True) -> Rig:
    """Central's receiver (if asked for) and the device's service, started, with the device enrolled."""
    store = FileStore(central.receiver.store_dir)
    receiver = start_receiver(central, store) if with_receiver else None
    try:
        service = Service(device)
    except BaseException:
        if receiver is not None:
            receiver.stop()
        raise
    store.enroll(device.device.id, service.identity.public_key_b64)
    service.start()
    return Rig(device, central, service, store, receiver)


@dataclass
class DeployedCentral:
    """Central as a deployment runs it, on loopback: the agency CA, central's keys, a Mosquitto with mutual
    TLS, the revocation list and the dynamic-security plugin (no device yet), the receiver, and the
    enrollment endpoint. Boxes join it with `recorder enroll` (the tests, `bench_provision`)."""

    workdir: Path
    config: central_config.CentralConfig
    ca: CertificateAuthority
    store: FileStore
    enrollment: Enrollment
    server: EnrollServer
    broker: LocalBroker
    receiver: Receiver

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.port}"

    def close(self) -> None:
        self.server.stop()
        self.receiver.stop()
        self.broker.stop()


def start_deployed_central(workdir: Path, broker_sync_s: float | None = None) -> DeployedCentral:
    ca, _ = CertificateAuthority.load_or_create(workdir / "ca")
    ca.issue_broker()
    ca.issue_enrollment_server()
    ca.issue_admin()
    receiver_tls = ca.issue_receiver("receiver-1")
    create_central_key(workdir / "central-key.pem")
    create_signing_key(workdir / "central-signing-key.pem")
    broker = pki_broker(workdir / "broker", ca)
    broker.start()
    config = central_config.from_dict({
        "receiver": {"store_dir": str(workdir / "central"), "private_key_file": str(workdir / "central-key.pem"),
                     "signing_key_file": str(workdir / "central-signing-key.pem")},
        "mqtt": {"host": "127.0.0.1", "port": broker.port,
                 "tls": {"ca_file": str(ca.ca_file), "cert_file": str(receiver_tls.cert),
                         "key_file": str(receiver_tls.key)}},
        "enrollment": {"ca_dir": str(ca.directory), "listen": "127.0.0.1", "port": free_port(),
                       "broker_port": broker.port},
    })
    store = FileStore(config.receiver.store_dir)
    try:
        receiver = start_receiver(config, store)
        try:
            enrollment = Enrollment(config, store)
            server = EnrollServer(enrollment, config.enrollment.listen, config.enrollment.port)
        except BaseException:
            receiver.stop()
            raise
    except BaseException:
        broker.stop()
        raise
    server.start(broker_sync_s)
    return DeployedCentral(workdir, config, ca, store, enrollment, server, broker, receiver)


def enrolled_config(path: Path, extra: dict[str, dict[str, Any]] | None = None) -> config_mod.Config:
    """The configuration `recorder enroll` wrote at `path`, on the simulated hardware, with FAST settings (and
    `extra`) on top: what the box would run, made quick for a test."""
    data = read_toml(path)
    for section, values in fast({"hal": {"backend": "sim"}, **(extra or {})}).items():
        data.setdefault(section, {}).update(values)
    return config_mod.from_dict(data)


@dataclass
class WebServer:
    """`recorder central web` running in its own process, on a free loopback port."""

    process: subprocess.Popen[bytes]
    url: str
    config_file: Path
    log_file: Path

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def recorder_command(*args: str) -> list[str]:
    """The `recorder` command line run with this interpreter (no reliance on PATH)."""
    return [sys.executable, "-c", "import sys; from firmware_py.cli import main; sys.exit(main())", *args]


def web_config_file(central: central_config.CentralConfig, path: Path, web: dict[str, Any] | None = None) -> Path:
    """A central configuration file for the web application over `central`'s store and keys."""
    data: dict[str, Any] = {
        "central": {"timezone": central.central.timezone},
        "receiver": {"store_dir": str(central.receiver.store_dir),
                     "private_key_file": central.receiver.private_key_file,
                     "signing_key_file": central.receiver.signing_key_file},
        "upload": {"deadline_hours": central.upload.deadline_hours, "warn_hours": list(central.upload.warn_hours)},
        "web": {"listen": "127.0.0.1", "port": free_port(), **(web or {})},
    }
    central_config.from_dict(data)
    atomic_write(path, config_file.render(data, "central's web application, written by the rig").encode())
    return path


def web_user(config: Path, username: str, role: str, password: str, unit: str = "") -> None:
    """Create an account from the command line (`recorder central web-user`), as an installer makes the first
    administrator."""
    command = recorder_command("central", "web-user", username, "--role", role, "--password-stdin",
                               "--config", str(config), *(["--unit", unit] if unit else []))
    done = subprocess.run(command, input=password.encode() + b"\n", capture_output=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"recorder central web-user {username}: {done.stderr.decode(errors='replace')}")


def start_web(central: central_config.CentralConfig, workdir: Path, web: dict[str, Any] | None = None,
              admin: tuple[str, str] | None = None) -> WebServer:
    """The web application over `central`'s store, serving on a free port once it answers; `admin` (name,
    password) is created first, from the command line."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = web_config_file(central, workdir / "central-web.toml", web)
    if admin is not None:
        web_user(config, admin[0], "admin", admin[1])
    port = int(read_toml(config)["web"]["port"])
    log_file = workdir / "web.log"
    with log_file.open("ab") as log:
        process = subprocess.Popen(recorder_command("central", "web", "--config", str(config)), stdout=log,
                                   stderr=subprocess.STDOUT)
    url = f"{'https' if (web or {}).get('tls_cert_file') else 'http'}://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the web application stopped: {log_file.read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return WebServer(process, url, config, log_file)
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise TimeoutError(f"the web application did not answer on {url}")


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                  "--disable-background-networking", "--disable-component-update",
                  "--autoplay-policy=no-user-gesture-required")
"""Debian's Chromium, headless and quiet: no calls home (the machines here have no way out, and they would
only be refused), and media may play without a click, as a supervisor's wall screen would."""


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Playwright's Chromium browser, Debian's build launched by its path (Playwright downloads none here); a
    dev dependency, imported only when asked for."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        raise FileNotFoundError(f"{CHROMIUM}: install Debian's chromium (make setup does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_FLAGS))
        try:
            yield browser
        finally:
            browser.close()
