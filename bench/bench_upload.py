"""Upload costs (issue: store-and-forward to central over MQTT), on loopback through a real Mosquitto.

- upload_throughput_ratio_vs_raw: end-to-end bytes/s from a device spool to central's receipted copy (the
  real Uploader over a prepared spool whose entries are all pending; the real Receiver in a process of its
  own, as at central, staging, verifying, storing durably, keeping the decrypted working copy, indexing
  and receipting), divided by plain paho publishing the same bytes from the same files (same chunks, QoS 1,
  the uploader's client settings) to a plain subscriber in a process of its own, through the same broker,
  in the same run (median of three). Target >= 0.8. Both MB/s figures are reported, and the end-to-end
  figure with two receivers sharing the load in an MQTT 5 share group.
- upload_disk_durable_mb_s: the disk's ceiling for what central must do before a receipt (write the same
  segment files durably, group commits of 16), and upload_throughput_ratio_vs_ceiling: the end-to-end
  figure against the lower of that and the raw paho figure. The plain subscriber writes nothing, so the
  raw figure is no ceiling for a receiver that must store durably before it receipts.
- live_lag_p50_s / live_lag_p99_s: a real service recording on the simulator (default picture, 2-second
  segments) for BENCH_LIVE_SECONDS (60): from each segment's ledger entry being written on the device to
  central's receipt for it arriving there (both file times on the device). Target p99 <= 1 s.
- backlog_drain_mb_s: one hour of recording at the default bitrate (1800 two-second segments), all pending
  after an outage, drained to central; next to the raw paho figure for the same bytes.

The prepared spools hold real segments: BENCH_MEDIA_SECONDS (20) of the default 640x360 picture at 15 fps
and 800 kbit/s, with grain so that x264 spends its bitrate as on a real scene, encoded and sealed to
central's key by the real segmenter and sealer on a virtual clock; then replicated (hard links) under new
segment entries signed with the device key and chained by the real ledger, so that central verifies and
decrypts every one of them. BENCH_UPLOAD_SEGMENTS (600) and BENCH_BACKLOG_SECONDS (3600) set the sizes.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import multiprocessing.connection
import multiprocessing.synchronize
import os
import shutil
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho

from bench.bench_capture import BLOCK, SR, _record
from capture.ledger import Ledger
from capture.recording import SessionMeta, close_session, opening_body
from capture.spool import Spool
from central import config as central_config
from central.build import build_receiver
from central.store import FileStore
from evidence import layout
from evidence.durable import group_commit
from evidence.entry import Segment, parse_entry
from evidence.layout import new_session_id
from evidence.verify import verify_session
from firmware_py import rig as rig_mod
from firmware_py.service import Service
from firmware_py.state_machine import State
from hal.audio.base import AudioBlock
from hal.buttons.base import ButtonName
from hal.camera.base import EncodedVideo, VideoFormat
from hal.camera.sim import colour_bars
from hal.camera.x264 import X264Encoder
from hal.clock.sim import SimClock
from mqtt import protocol
from mqtt.broker import LocalBroker
from mqtt.client import make_client
from mqtt.uploader import Uploader
from provisioning.central_key import create_central_key, create_signing_key, load_central_key
from provisioning.identity import DeviceIdentity

DEVICE = "BENCH-1"
PREFIX = "recorders"
FMT = VideoFormat(640, 360, 15, 800_000)
"""The default picture (firmware_py.config.VideoConfig)."""
SEGMENT_SECONDS = 2.0
MB = 1e6


# ---- prepared spools ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """Real sealed segments to replicate: their files and their segment entry bodies."""

    files: list[Path]
    bodies: list[dict[str, Any]]


def _encoded(seconds: float) -> tuple[list[EncodedVideo], list[AudioBlock]]:
    """The default picture with grain (so x264 spends its bitrate, as on a real scene), a keyframe every
    segment as the camera gives when the segmenter asks, and a quiet room's sound."""
    encoder = X264Encoder(FMT)
    bars = colour_bars(FMT)
    noise = np.random.default_rng(3)
    frame_ns = 1_000_000_000 // FMT.fps
    per_segment = int(SEGMENT_SECONDS * FMT.fps)
    video: list[EncodedVideo] = []
    for n in range(int(seconds * FMT.fps)):
        frame = bars.astype(np.int16) + noise.integers(-12, 12, bars.shape)
        frame[FMT.height // 2 :, (n * 7) % FMT.width :][:48, :48] = 255
        if n % per_segment == 0:
            encoder.request_keyframe()
        video.extend(encoder.encode(np.clip(frame, 0, 255).astype(np.uint8), n * frame_ns))
    video.extend(encoder.flush())
    rng = np.random.default_rng(1)
    audio = [AudioBlock(np.clip(rng.normal(0, 40, BLOCK), -32768, 32767).astype(np.int16), b * BLOCK * 10**9 // SR)
             for b in range(int(seconds * SR / BLOCK))]
    return video, audio


def _real_segments(workdir: Path, central_pem: Path, seconds: float) -> Source:
    create_central_key(central_pem)
    video, audio = _encoded(seconds)
    ledger, sealer = _record(workdir, FMT, video, audio, load_central_key(central_pem))
    bodies = [dict(a.body) for a in sealer.sealed]
    # The last segment is cut short by the end of the media; keep whole ones.
    bodies = [b for b in bodies if b["end_ns"] - b["start_ns"] >= SEGMENT_SECONDS * 1e9 * 0.9] or bodies
    return Source([layout.media_path(ledger.session_dir, b["file"]) for b in bodies], bodies)


def _synthesise(spool: Path, identity: DeviceIdentity, central_pem: Path, source: Source, segments: int,
                per_session: int = 1800) -> int:
    """Sessions of `segments` segments in total, replicating `source`'s files (hard links: the spool's bytes
    are the source's) under new entries signed with the device key. Returns the media bytes."""
    clock = SimClock("Asia/Shanghai")
    recipient = load_central_key(central_pem).public_key()
    meta = SessionMeta("示例执法单位", "询问室一", "示例市示例路1号", DEVICE, (("张三", "44000000001"),), "", "", ())
    total = 0
    made = 0
    start = dt.datetime(2026, 11, 22, 0, 0, tzinfo=dt.UTC)
    while made < segments:
        count = min(per_session, segments - made)
        session = new_session_id(start + dt.timedelta(hours=made // per_session))
        ledger = Ledger(spool / session, DEVICE, session, identity, clock)
        ledger.append("open", opening_body(meta, identity.public_key_b64, SEGMENT_SECONDS, FMT, SR, recipient, 0,
                                           {"preflight_warnings": [], "clock_synced": True}))
        sealed: list[Segment] = []
        t = 0
        for n in range(count):
            k = n % len(source.files)
            body = dict(source.bodies[k])
            length = body["end_ns"] - body["start_ns"]
            body.update(index=n + 1, file=layout.media_name(n + 1), start_ns=t, end_ns=t + length)
            t += length
            target = layout.media_path(ledger.session_dir, body["file"])
            try:
                os.link(source.files[k], target)
            except OSError:
                shutil.copyfile(source.files[k], target)
            segment = ledger.append("segment", body).segment
            assert segment is not None
            sealed.append(segment)
            total += segment.bytes
        close_session(ledger, "bench", "stop_button", sealed)
        made += count
    return total


# ---- central, and the plain subscriber: each in a process of its own, as they would be ----------------

_spawn = multiprocessing.get_context("spawn")


def _serve_receiver(config: dict[str, Any], ready: multiprocessing.synchronize.Event,
                    stop: multiprocessing.synchronize.Event) -> None:
    receiver = build_receiver(central_config.from_dict(config))
    receiver.start()
    if receiver.connected.wait(10):
        ready.set()
    stop.wait()
    receiver.stop()


def _central_config(store: Path, port: int, central_pem: Path, name: str, group: str) -> dict[str, Any]:
    # Central signs every receipt, as deployed: its signing key sits next to its encryption key (as the rig
    # keeps them, so a device made by the rig trusts it).
    signing = central_pem.with_name("central-signing-key.pem")
    create_signing_key(signing)
    return {"mqtt": {"host": "127.0.0.1", "port": port},
            "receiver": {"store_dir": str(store), "client_id": name, "private_key_file": str(central_pem),
                         "share_group": group, "signing_key_file": str(signing)}}


class Central:
    """The reference receiver(s) storing into `store`, each in its own process, as deployed: with central's
    private key (so each segment's decrypted working copy is kept) and, if several, in one share group."""

    def __init__(self, store: Path, port: int, central_pem: Path, device: str, device_key: str,
                 receivers: int = 1) -> None:
        FileStore(store).enroll(device, device_key)
        self._stop = _spawn.Event()
        self._ready = [_spawn.Event() for _ in range(receivers)]
        group = "bench" if receivers > 1 else ""
        self._procs = [_spawn.Process(target=_serve_receiver, daemon=True, args=(
            _central_config(store, port, central_pem, f"bench-receiver-{n}", group), ready, self._stop))
            for n, ready in enumerate(self._ready)]

    def __enter__(self) -> Central:
        for proc in self._procs:
            proc.start()
        if not all(ready.wait(30) for ready in self._ready):
            raise RuntimeError("a receiver did not connect")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for proc in self._procs:
            proc.join(30)


def _serve_subscriber(port: int, expect: int, ready: multiprocessing.synchronize.Event,
                      done: multiprocessing.connection.Connection) -> None:
    count = 0
    finished = threading.Event()

    def on_connect(client: paho.Client, *_: Any) -> None:
        client.subscribe("bench/raw/#", qos=1)

    def on_subscribe(*_: Any) -> None:
        ready.set()

    def on_message(client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        nonlocal count
        count += 1
        if count == expect:
            done.send(time.monotonic())
            finished.set()

    client = make_client("bench-subscriber", 2)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    finished.wait(1800)
    client.disconnect()
    client.loop_stop()


# ---- the two transfers ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Transfer:
    seconds: float
    media_bytes: int

    @property
    def mb_s(self) -> float:
        return self.media_bytes / self.seconds / MB


def _messages(spool: Path, chunk: int) -> list[tuple[Path, int, int] | bytes]:
    """What the uploader publishes for every pending entry: (file, offset, length) for each chunk of its
    segment, then the entry's bytes."""
    out: list[tuple[Path, int, int] | bytes] = []
    for session_dir in sorted(p for p in spool.iterdir() if layout.SESSION_ID.match(p.name)):
        for seq in layout.entry_seqs(session_dir):
            data = layout.entry_path(session_dir, seq).read_bytes()
            segment = parse_entry(data).segment
            if segment is not None:
                size = segment.bytes
                path = layout.media_path(session_dir, segment.file)
                out.extend((path, offset, min(chunk, size - offset)) for offset in range(0, size, chunk))
            out.append(data)
    return out


def raw_paho(spool: Path, port: int, media_bytes: int) -> Transfer:
    """Plain paho: the same bytes, read from the same files in the same chunks, published at QoS 1 with the
    uploader's client settings (MQTT 5, 64 in flight) to a plain subscriber in its own process; timed from
    the first read to the subscriber holding the last message."""
    plan = _messages(spool, protocol.DEFAULT_CHUNK)
    ready = _spawn.Event()
    receive, send = _spawn.Pipe(duplex=False)
    subscriber = _spawn.Process(target=_serve_subscriber, args=(port, len(plan), ready, send), daemon=True)
    subscriber.start()
    client = make_client("bench-publisher", 2)
    queued = threading.Semaphore(256)  # what paho holds in memory at once, as the uploader's window bounds it
    client.on_publish = lambda *_: queued.release()
    try:
        if not ready.wait(30):
            raise RuntimeError("the plain subscriber did not subscribe")
        client.connect("127.0.0.1", port)
        client.loop_start()
        t0 = time.monotonic()
        for item in plan:
            queued.acquire()
            if isinstance(item, bytes):
                client.publish("bench/raw/entry", item, qos=1)
            else:
                path, offset, length = item
                with path.open("rb") as f:
                    f.seek(offset)
                    client.publish("bench/raw/media", f.read(length), qos=1)
        if not receive.poll(1800):
            raise RuntimeError("the plain subscriber did not get every message")
        end = float(receive.recv())
    finally:
        client.disconnect()
        client.loop_stop()
        subscriber.join(30)
    return Transfer(end - t0, media_bytes)


def disk_durable(spool: Path, target: Path, media_bytes: int) -> Transfer:
    """The disk's own ceiling for what central must do at the least: write the same segment files durably
    on the filesystem that holds central's store, in group commits of 16 as the receiver does (write each,
    flush, rename, flush); best of three."""
    files = [item for item in _messages(spool, 1 << 62) if not isinstance(item, bytes)]
    best = float("inf")
    for run in range(3):
        folder = target / f"disk-{run}"
        folder.mkdir(parents=True)
        t0 = time.monotonic()
        for start in range(0, len(files), 16):
            group_commit(folder, [(folder / f"{n}.ts", path.read_bytes())
                                  for n, (path, _, _) in enumerate(files[start : start + 16], start)])
        best = min(best, time.monotonic() - t0)
        shutil.rmtree(folder)
    return Transfer(best, media_bytes)


def end_to_end(spool: Path, port: int, media_bytes: int) -> Transfer:
    """The real uploader over a spool whose every entry is pending (as after an outage), from its start
    until central has receipted everything."""
    pending = Spool(spool)
    uploader = Uploader(pending, DEVICE, "127.0.0.1", port, PREFIX, 30, 2, status=lambda: {})
    t0 = time.monotonic()
    uploader.start()
    try:
        if not pending.wait_drained(1800):
            raise RuntimeError(f"central did not receipt everything: {pending.backlog()}")
        seconds = time.monotonic() - t0
    finally:
        uploader.stop()
    return Transfer(seconds, media_bytes)


def _check_central(store: Path, identity: DeviceIdentity, central_pem: Path) -> None:
    """Central's copy is every entry, and verifies with the device key and central's key."""
    key = load_central_key(central_pem)
    for session_dir in sorted((store / "sessions" / DEVICE).iterdir()):
        report = verify_session(session_dir, trusted_key_b64=identity.public_key_b64, central_key=key)
        if not report.ok:
            raise RuntimeError(f"central's copy does not verify: {report.findings[0]}")


@dataclass(frozen=True)
class Upload:
    raw: Transfer
    e2e: Transfer
    disk: Transfer


def upload(workdir: Path, port: int, source: Source, central_pem: Path, segments: int,
           receivers: int = 1, raw: bool = True) -> Upload:
    """A spool of `segments` pending segments, sent by plain paho and then by the uploader to central."""
    identity = DeviceIdentity.load_or_create(workdir / "keys")
    spool = workdir / "spool"
    media_bytes = _synthesise(spool, identity, central_pem, source, segments)
    # A raw transfer takes a fraction of a second, so one run is noisy: the median of three.
    raws = sorted((raw_paho(spool, port, media_bytes) for _ in range(3 if raw else 0)), key=lambda t: t.seconds)
    baseline = raws[len(raws) // 2] if raws else Transfer(float("nan"), media_bytes)
    store = workdir / "central"
    disk = disk_durable(spool, workdir / "disk", media_bytes) if raw else Transfer(float("nan"), media_bytes)
    with Central(store, port, central_pem, DEVICE, identity.public_key_b64, receivers):
        e2e = end_to_end(spool, port, media_bytes)
    _check_central(store, identity, central_pem)
    return Upload(baseline, e2e, disk)


# ---- live lag --------------------------------------------------------------------------------------------

def live_lag(workdir: Path, port: int, seconds: float) -> list[float]:
    """Seconds from each segment's ledger entry being written on the device to central's receipt for it
    arriving there, while a real service records on the simulator."""
    cfg, central = rig_mod.configs(workdir, "127.0.0.1", port, rig_mod.fast({
        "session": {"segment_seconds": SEGMENT_SECONDS, "max_minutes": 10},
        "video": {"width": FMT.width, "height": FMT.height, "fps": FMT.fps, "bitrate": FMT.bitrate}}))
    identity = DeviceIdentity.load_or_create(cfg.keys_dir)
    central_pem = Path(central.receiver.private_key_file)
    with Central(central.receiver.store_dir, port, central_pem, cfg.device.id, identity.public_key_b64):
        service = Service(cfg)
        service.start()
        rig = rig_mod.Rig(cfg, central, service, FileStore(central.receiver.store_dir), None)
        try:
            rig.tap(ButtonName.START)
            rig.wait_state(State.RECORDING)
            time.sleep(seconds)
            rig.tap(ButtonName.STOP, cfg.session.stop_hold_seconds + 0.3)
            rig.wait_state(State.IDLE)
            if not service.spool.wait_drained(60):
                raise RuntimeError("central did not receipt the live session")
        finally:
            service.stop()
    session_dir = cfg.spool_dir / service.controller.timings.sessions_closed[-1]
    lags = []
    for seq in layout.entry_seqs(session_dir):
        entry = layout.entry_path(session_dir, seq)
        if parse_entry(entry.read_bytes()).segment is not None:
            lags.append((layout.receipt_path(session_dir, seq).stat().st_mtime_ns - entry.stat().st_mtime_ns) / 1e9)
    return lags


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# ---- all of it -------------------------------------------------------------------------------------------

def run(workdir: Path) -> dict[str, object]:
    media_seconds = float(os.environ.get("BENCH_MEDIA_SECONDS", "20"))
    segments = int(os.environ.get("BENCH_UPLOAD_SEGMENTS", "600"))
    live_seconds = float(os.environ.get("BENCH_LIVE_SECONDS", "60"))
    backlog_seconds = float(os.environ.get("BENCH_BACKLOG_SECONDS", "3600"))
    central_pem = workdir / "central-key.pem"
    results: dict[str, object] = {}
    with LocalBroker(workdir / "broker") as broker:
        source = _real_segments(workdir / "source", central_pem, media_seconds)

        one = upload(workdir / "throughput", broker.port, source, central_pem, segments)
        results.update({
            "upload_throughput_ratio_vs_raw": round(one.e2e.mb_s / one.raw.mb_s, 3),
            "upload_mb_s": round(one.e2e.mb_s, 1),
            "upload_raw_paho_mb_s": round(one.raw.mb_s, 1),
            "upload_disk_durable_mb_s": round(one.disk.mb_s, 1),
            "upload_throughput_ratio_vs_ceiling": round(one.e2e.mb_s / min(one.raw.mb_s, one.disk.mb_s), 3),
            "upload_bench_mb": round(one.e2e.media_bytes / MB, 1),
            "upload_bench_segment_kb": round(one.e2e.media_bytes / segments / 1000, 1),
        })
        shared = upload(workdir / "shared", broker.port, source, central_pem, segments, receivers=2, raw=False)
        results["upload_mb_s_two_shared_receivers"] = round(shared.e2e.mb_s, 1)

        lags = live_lag(workdir / "live", broker.port, live_seconds)
        results.update({
            "live_lag_p50_s": round(statistics.median(lags), 3),
            "live_lag_p99_s": round(_quantile(lags, 0.99), 3),
            "live_lag_max_s": round(max(lags), 3),
            "live_lag_segments": len(lags),
        })

        hour = upload(workdir / "backlog", broker.port, source, central_pem, int(backlog_seconds / SEGMENT_SECONDS))
        results.update({
            "backlog_drain_mb_s": round(hour.e2e.mb_s, 1),
            "backlog_drain_s": round(hour.e2e.seconds, 1),
            "backlog_raw_paho_mb_s": round(hour.raw.mb_s, 1),
            "backlog_mb": round(hour.e2e.media_bytes / MB, 1),
            "backlog_recorded_s": backlog_seconds,
        })
    return results
