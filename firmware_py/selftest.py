"""`recorder selftest`: a technician walks through every part of the box (DEVICE-CHECK).

Each step is said aloud (Chinese, as the room hears everything else) and printed; the technician answers
with the box's own buttons, so the test needs nobody at a keyboard. Steps, in order:

    buttons      START, STOP and MARK each pressed when asked (seen by the service's own button code)
    tally        each pattern shown; the technician confirms it with START (yes) or MARK (no)
    audio        a tone from the speaker is heard by the microphone, well above the room's own level
    camera       frames arrive, the picture is exposed (neither black nor white), it moves (not frozen), and
                 the stamp's band is drawn with a font large enough to read after encoding
    storage      a 32 MB write with fsync runs far faster than recording needs; free space holds a session
    clock        synchronised (NTP)
    power        no under-voltage; battery, if any, above 20 %
    broker       reached over mutual TLS (plain MQTT is a failure: it is not how a room box runs)
    central      a round trip: the signed report goes to central, which keeps it and answers, signed

It records no evidence session and writes nothing to the spool but the storage probe, which it removes. It
prints a checklist with the remedy for each failure and exits non-zero on any. Central keeps the report it
was sent (the checks before the round trip) as the device's latest self-test (`recorder central devices`).
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import paho.mqtt.client as paho

from capture.stamp import Stamper, StampFacts, find_cjk_font
from evidence.keys import load_public_key_b64
from firmware_py.config import Config
from firmware_py.preflight import bytes_needed, recording_hours
from firmware_py.prompts import Prompt, PromptCache
from firmware_py.voice import tone_pcm
from hal.audio.base import AudioBlock
from hal.buttons.base import ButtonName
from hal.camera.base import EncodedVideo, RgbFrame
from hal.errors import HalError
from hal.factory import Hal
from hal.tally.base import TallyPattern
from mqtt import protocol
from mqtt.client import make_client
from mqtt.errors import MqttError, ProtocolError
from provisioning.identity import DeviceIdentity

Check = protocol.SelfTestCheck
PROBE_BYTES = 32 * 1024 * 1024
MIN_FONT_PX = 12
"""Below this the stamp's characters do not survive H.264 at the bitrates a room uses."""


@dataclass(frozen=True)
class Timing:
    answer_s: float = 20.0
    """How long the technician has to press a button when asked."""
    camera_s: float = 2.0
    network_s: float = 10.0


TALLY_STEPS = (
    (TallyPattern.RECORDING, "指示灯常亮", "steady"),
    (TallyPattern.NOTICE, "指示灯慢闪", "slow blink"),
    (TallyPattern.FAULT, "指示灯快闪", "fast blink"),
)
BUTTON_WORDS = {ButtonName.START: "开始", ButtonName.STOP: "停止", ButtonName.MARK: "标记"}


class SelfTest:
    def __init__(self, config: Config, hal: Hal, prompts: PromptCache, identity: DeviceIdentity,
                 out: Callable[[str], None] = print, timing: Timing = Timing()) -> None:
        self._config = config
        self._hal = hal
        self._prompts = prompts
        self._identity = identity
        self._out = out
        self._timing = timing
        self._pressed: list[ButtonName] = []
        self._press = threading.Condition()

    # Talking to the technician ----------------------------------------------------------------------

    def _say(self, zh: str, en: str) -> None:
        self._out(f"  > {en}")
        try:
            pcm = self._prompts.load(Prompt(f"selftest-{zh}", zh, self._config.notice.voice_zh))
            self._hal.speaker.play(pcm)
        except (HalError, OSError, RuntimeError) as err:
            self._out(f"    (could not say it: {err})")

    def _on_button(self, name: ButtonName) -> None:
        with self._press:
            self._pressed.append(name)
            self._press.notify_all()

    def _next_press(self, wanted: set[ButtonName]) -> ButtonName | None:
        deadline = time.monotonic() + self._timing.answer_s
        with self._press:
            while True:
                for i, name in enumerate(self._pressed):
                    if name in wanted:
                        del self._pressed[: i + 1]
                        return name
                left = deadline - time.monotonic()
                if left <= 0 or not self._press.wait(left):
                    return None

    # The steps -------------------------------------------------------------------------------------

    def run(self) -> list[Check]:
        checks: list[Check] = []
        buttons = self._hal.buttons(self._on_button, self._on_button, self._on_button)
        try:
            for step in (self._buttons, self._tally, self._audio, self._camera, self._storage, self._clock,
                         self._power):
                found = step()
                checks += found
                for check in found:
                    self._out(_line(check))
        finally:
            buttons.close()
            self._hal.tally.show(TallyPattern.OFF)
        checks += self._network(checks)
        for check in checks[-2:]:
            self._out(_line(check))
        return checks

    def _buttons(self) -> list[Check]:
        pins = self._config.hal.pins
        found = []
        for name, pin in ((ButtonName.START, pins.start), (ButtonName.STOP, pins.stop), (ButtonName.MARK, pins.mark)):
            with self._press:
                self._pressed.clear()
            self._say(f"请按{BUTTON_WORDS[name]}键", f"press {name.value.upper()}")
            seen = self._next_press({name})
            found.append(Check(f"button {name.value}", seen is not None,
                               "seen" if seen else f"not pressed within {self._timing.answer_s:g} s",
                               "" if seen else f"check the button and its wiring to GPIO{pin} and ground "
                                               "(image/README.md, step 2)"))
        return found

    def _tally(self) -> list[Check]:
        found = []
        for pattern, zh, en in TALLY_STEPS:
            self._hal.tally.show(pattern)
            with self._press:
                self._pressed.clear()
            self._say(f"{zh}吗？是请按开始键，不是请按标记键", f"is the light: {en}? START yes, MARK no")
            answer = self._next_press({ButtonName.START, ButtonName.MARK})
            ok = answer is ButtonName.START
            detail = {ButtonName.START: "confirmed", ButtonName.MARK: "the technician saw something else",
                      None: "not confirmed in time"}[answer]
            found.append(Check(f"tally {en}", ok, detail, "" if ok else
                               f"check the LED, its resistor and its wiring to GPIO{self._config.hal.pins.tally}"))
        self._hal.tally.show(TallyPattern.OFF)
        return found

    def _audio(self) -> list[Check]:
        rate = self._config.audio.sample_rate
        blocks: list[tuple[float, AudioBlock]] = []
        lock = threading.Lock()

        def heard(block: AudioBlock) -> None:
            with lock:
                blocks.append((time.monotonic(), block))

        self._out("  > listening to the room, then to a tone from the speaker")
        try:
            self._hal.microphone.start(heard)
        except HalError as err:
            return [Check("audio", False, f"the microphone does not start: {err}",
                          "check the USB microphone (arecord -l) and /etc/asound.conf")]
        try:
            time.sleep(0.6)
            tone_start = time.monotonic()
            self._hal.speaker.play(tone_pcm((1000.0,) * 8, rate))
            tone_end = time.monotonic()
            time.sleep(0.2)
        except HalError as err:
            return [Check("audio", False, f"the speaker does not play: {err}",
                          "check the USB speaker (aplay -l) and /etc/asound.conf")]
        finally:
            self._hal.microphone.stop()
        with lock:
            quiet = [b.samples for t, b in blocks if t < tone_start]
            loud = [b.samples for t, b in blocks if tone_start + 0.1 < t <= tone_end]
        if not loud:
            return [Check("audio", False, "the microphone delivered nothing", "check the USB microphone")]
        room = _rms(quiet) if quiet else 0.0
        tone = _rms(loud)
        ok = tone >= 300 and tone >= 4 * max(room, 1.0)
        return [Check("audio", ok, f"room level {room:.0f}, tone heard at {tone:.0f} (RMS of 16-bit samples)",
                      "" if ok else "the microphone does not hear the speaker: check both are plugged in, the "
                                    "levels (alsamixer; sudo alsactl store) and that they face the room")]

    def _camera(self) -> list[Check]:
        fmt = self._hal.camera.format
        facts = StampFacts(self._config.device.room, self._config.device.location, self._config.device.id,
                           [(o.name, o.certificate) for o in self._config.session.officers], "selftest")
        stamper = Stamper(facts, self._hal.clock, fmt.width, fmt.height, find_cjk_font(), lambda: 0)
        frames: list[RgbFrame] = []
        lock = threading.Lock()

        def keep(frame: RgbFrame, pts_ns: int) -> None:
            stamper(frame, pts_ns)
            with lock:
                frames.append(frame.copy())
                del frames[:-int(fmt.fps * self._timing.camera_s) - 1]

        def encoded(packet: EncodedVideo) -> None:
            return None

        self._out("  > looking through the camera")
        try:
            self._hal.camera.start(keep, encoded)
            time.sleep(self._timing.camera_s)
        except HalError as err:
            return [Check("camera", False, f"the camera does not start: {err}",
                          "check the ribbon cable and that rpicam-hello --list-cameras lists the camera")]
        finally:
            self._hal.camera.stop()
        with lock:
            got = list(frames)
        seen = self._hal.camera.frames_seen()
        if len(got) < 2:
            return [Check("camera", False, f"{seen} frame(s) in {self._timing.camera_s:g} s",
                          "check the ribbon cable and that rpicam-hello --list-cameras lists the camera")]
        band = stamper.band_height
        picture = [f[band:].astype(np.int16) for f in got]
        luma = float(np.mean(picture[-1]))
        change = float(np.mean(np.abs(picture[-1] - picture[0])))
        stamp = got[-1][:band]
        lit = float(np.mean(stamp > 200))
        font_px = max(10, fmt.height // 26)
        return [
            Check("camera frames", seen >= fmt.fps * self._timing.camera_s / 2,
                  f"{seen} frames in {self._timing.camera_s:g} s at {fmt.fps} fps", "check the camera's cable"),
            Check("camera exposure", 20 <= luma <= 235, f"mean level {luma:.0f} of 255",
                  "too dark or too bright: check the lens cap, the room's light and the camera's position"),
            Check("camera not frozen", change > 0.5, f"mean change {change:.1f} over {self._timing.camera_s:g} s",
                  "the picture does not change: move in front of the camera and run again; if still frozen, "
                  "reseat the ribbon cable"),
            Check("camera stamp", font_px >= MIN_FONT_PX and 0.005 <= lit <= 0.5,
                  f"stamp band {band} px high, characters {font_px} px, {lit:.1%} of it lit",
                  f"the stamp is too small to read after encoding: use video.height of at least {MIN_FONT_PX * 26}"),
        ]

    def _storage(self) -> list[Check]:
        root = self._config.spool_dir
        probe = root / ".selftest-probe"
        try:
            root.mkdir(parents=True, exist_ok=True)
            data = os.urandom(1024 * 1024)
            started = time.monotonic()
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                for _ in range(PROBE_BYTES // len(data)):
                    os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            elapsed = max(time.monotonic() - started, 1e-6)
            free = self._hal.storage.free_bytes()
        except (OSError, HalError) as err:
            return [Check("storage", False, f"cannot write to {root}: {err}",
                          "check the spool disk is mounted on device.state_dir and writable (install.sh --status)")]
        finally:
            probe.unlink(missing_ok=True)
        speed = PROBE_BYTES / elapsed / 1e6
        need = (self._config.video.bitrate + 64_000) / 8 / 1e6
        session = bytes_needed(self._config.video.bitrate, self._config.session.max_minutes)
        hours = recording_hours(free, self._config.video.bitrate)
        return [
            Check("storage speed", speed >= 10 * need, f"{speed:.1f} MB/s written and flushed; recording needs "
                  f"{need:.2f} MB/s", "the disk is too slow: use a USB SSD (image/README.md, what you need)"),
            Check("storage space", free >= session, f"{free / 1e9:.1f} GB free, about {hours:.0f} h of recording",
                  "free space runs out: central's receipts let the box prune (spool.*); check that uploads "
                  "reach central"),
        ]

    def _clock(self) -> list[Check]:
        ok = self._hal.clock.is_synchronised()
        return [Check("clock", ok, "synchronised" if ok else "not synchronised",
                      "" if ok else "check NTP: timedatectl timesync-status; the site's time server (install.sh "
                                    "--ntp)")]

    def _power(self) -> list[Check]:
        state = self._hal.power.state()
        if state.under_voltage:
            return [Check("power", False, "the supply is under-voltage", "use the official power supply")]
        if state.battery_percent is not None and state.battery_percent < 20:
            return [Check("power", False, f"battery at {state.battery_percent:.0f} %", "charge the battery")]
        return [Check("power", True, "ok", "")]

    def _network(self, checks: list[Check]) -> list[Check]:
        """The broker over TLS, then the round trip: the signed report to central and its signed answer."""
        m = self._config.mqtt
        if m.tls is None:
            broker = Check("broker", False, f"{m.host}:{m.port} is plain MQTT",
                           "enroll the box (recorder enroll) so it talks to the broker over mutual TLS")
            return [broker, Check("central", False, "not tried without TLS", broker.remedy)]
        report_id = secrets.token_hex(8)
        payload = protocol.encode_selftest(report_id, self._config.device.id,
                                           dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), checks,
                                           self._identity.sign)
        connected, answered = threading.Event(), threading.Event()
        refused: list[str] = []
        central_key = (load_public_key_b64(self._config.device.central_signing_key)
                       if self._config.device.central_signing_key else None)

        def on_connect(client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
            if reason.is_failure:
                refused.append(str(reason))
                return
            client.subscribe(protocol.topic(m.topic_prefix, self._config.device.id, protocol.ALERT_ACK), qos=1)
            connected.set()

        def on_message(client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
            try:
                ack = protocol.decode_alert_ack(bytes(message.payload))
            except ProtocolError:
                return
            if ack.alert == report_id and (central_key is None or ack.signed_by(central_key)):
                answered.set()

        try:
            client = make_client(f"{self._config.device.id}-selftest", 5, m.tls)
        except MqttError as err:
            return [Check("broker", False, str(err), "check the [mqtt.tls] files (recorder enroll writes them)"),
                    Check("central", False, "not tried", "")]
        client.on_connect = on_connect
        client.on_message = on_message
        try:
            client.connect(m.host, m.port)
        except OSError as err:
            return [Check("broker", False, f"cannot reach {m.host}:{m.port}: {err}",
                          "check the network and mqtt.host/mqtt.port"), Check("central", False, "not tried", "")]
        client.loop_start()
        try:
            if not connected.wait(self._timing.network_s):
                why = refused[0] if refused else "no answer over TLS"
                return [Check("broker", False, f"{m.host}:{m.port}: {why}",
                              "check that the box is enrolled and not revoked, and the broker's CA (ca_file)"),
                        Check("central", False, "not tried", "")]
            broker = Check("broker", True, f"{m.host}:{m.port} over mutual TLS", "")
            client.publish(protocol.topic(m.topic_prefix, self._config.device.id, protocol.SELFTEST), payload, qos=1)
            ok = answered.wait(self._timing.network_s)
            return [broker, Check("central", ok, "central kept the report and answered, signed" if ok else
                                  f"no signed answer within {self._timing.network_s:g} s",
                                  "" if ok else "check that central's receiver runs (recorder central serve) and "
                                                "that this box is enrolled there")]
        finally:
            client.disconnect()
            client.loop_stop()


def _rms(blocks: list[Any]) -> float:
    samples = np.concatenate(blocks).astype(np.float64)
    return float(np.sqrt(np.mean(samples * samples))) if samples.size else 0.0


def _line(check: Check) -> str:
    mark = "PASS" if check.ok else "FAIL"
    remedy = f"\n         remedy: {check.remedy}" if not check.ok and check.remedy else ""
    return f"  {mark}  {check.name:18} {check.detail}{remedy}"

