"""Capture costs and continuity (issue: continuous, stamped, sealed recording).

- seal_cpu_ratio_vs_sha256: CPU time from encoded bytes to sealed, encrypted, spooled segment (MPEG-TS
  muxing, AES-GCM records, plaintext and ciphertext SHA-256, fsync and rename, signed ledger entry),
  divided by the CPU time of plain SHA-256 over the same encoded bytes, in the same run. Audio arrives
  as PCM and the segmenter encodes it to AAC; that encoding is measured alone and subtracted, since it
  is an encoder, not the sealing path. Target <= 3.
- spool_cost_ratio_50k_vs_100: per-segment bookkeeping (ledger append, spool index, next batch to send,
  receipt, backlog) with 50,000 pending segments in the spool, divided by the same with 100. Target <= 1.2.
- frames_lost_1h_sim, av_drift_ms_1h_sim: one hour of simulated recording, run faster than real time
  on a virtual clock. Every minute the picture flashes white and the sound clicks at the same instant;
  reading the segments back, drift is how far apart the flash and the click land. Targets 0 and <= 40.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from pathlib import Path

import av
import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from capture.audio_encoder import AacEncoder
from capture.ledger import Ledger
from capture.recording import SessionMeta, opening_body
from capture.sealer import Sealer
from capture.segmenter import PTS_OFFSET, TS_HZ, Segmenter
from capture.spool import PendingItem, Spool
from evidence import layout
from evidence.canonical import canonical
from evidence.supervisor import Supervisor
from hal.audio.base import AudioBlock
from hal.camera.base import EncodedVideo, VideoFormat
from hal.camera.sim import colour_bars
from hal.camera.x264 import X264Encoder
from hal.clock.sim import SimClock
from mqtt.protocol import decode_receipt, encode_receipt
from provisioning.identity import DeviceIdentity

SR = 16000
BLOCK = SR // 50
META = SessionMeta("示例执法单位", "询问室一", "示例市示例路1号", "BENCH-1", (("张三", "44000000001"),), "", "", ())


def _segment_body(index: int) -> dict[str, object]:
    """A 200 kB segment's record, as the sealer writes it (the file itself is not needed here)."""
    return {"index": index, "file": layout.media_name(index), "sha256": "0" * 64, "bytes": 200_000,
            "start_ns": (index - 1) * 2_000_000_000, "end_ns": index * 2_000_000_000, "video_frames": 50,
            "audio_samples": 32000, "keyframe_start": True, "plain_sha256": "0" * 64, "plain_bytes": 199_000}


class _VirtualClock(SimClock):
    """Monotonic time that the benchmark advances, so an hour takes as long as the machine needs."""

    def __init__(self) -> None:
        super().__init__("Asia/Shanghai")
        self.now_ns = 1_000_000_000

    def monotonic_ns(self) -> int:
        return self.now_ns


def _media(fmt: VideoFormat, seconds: float, flash_every_s: float | None,
           grain: int = 0) -> tuple[list[EncodedVideo], list[AudioBlock]]:
    """Encoded video and PCM audio on a virtual clock. `grain` adds sensor-like noise so that the encoder
    spends its bitrate as it does on a real picture (colour bars alone compress to almost nothing)."""
    encoder = X264Encoder(fmt)
    bars = colour_bars(fmt)
    noise = np.random.default_rng(2)
    frame_ns = 1_000_000_000 // fmt.fps
    video: list[EncodedVideo] = []
    for n in range(int(seconds * fmt.fps)):
        t = n * frame_ns
        frame = bars.copy()
        frame[fmt.height // 2 :, (n * 7) % fmt.width :][:24, :24] = 255
        if flash_every_s and n and t % int(flash_every_s * 1e9) == 0:
            frame[:] = 255
        if n % (2 * fmt.fps) == 0:
            # What the segmenter asks the live encoder for: a keyframe every segment (2 s).
            encoder.request_keyframe()
        if grain:
            grainy = frame.astype(np.int16) + noise.integers(-grain, grain, frame.shape)
            frame = np.clip(grainy, 0, 255).astype(np.uint8)
        video.extend(encoder.encode(frame, t))
    video.extend(encoder.flush())
    rng = np.random.default_rng(1)
    audio: list[AudioBlock] = []
    for b in range(int(seconds * 50)):
        start = b * BLOCK
        pcm = rng.normal(0, 40, BLOCK)
        if flash_every_s:
            period = int(flash_every_s * SR)
            for i in range(BLOCK):
                s = start + i
                if s and s % period < SR // 20 and s >= period:
                    pcm[i] += 12000 * np.sin(2 * np.pi * 1000 * (s % period) / SR)
        audio.append(AudioBlock(np.clip(pcm, -32768, 32767).astype(np.int16), start * 1_000_000_000 // SR))
    return video, audio


def _record(workdir: Path, fmt: VideoFormat, video: list[EncodedVideo], audio: list[AudioBlock],
            recipient: X25519PrivateKey | None) -> tuple[Ledger, Sealer]:
    clock = _VirtualClock()
    identity = DeviceIdentity.load_or_create(workdir / "keys")
    session_dir = workdir / "spool" / "20261122T000000Z-abcdef"
    ledger = Ledger(session_dir, "BENCH-1", session_dir.name, identity, clock)
    ledger.append("open", opening_body(META, identity.public_key_b64, 2.0, fmt, SR,
                                       recipient.public_key() if recipient else None, 0, {}))
    faults: list[Exception] = []
    sealer = Sealer(ledger, faults.append, lambda closed: {}, Supervisor().spawn)
    segmenter = Segmenter(session_dir, fmt, SR, 2.0, 0, lambda: None, sealer.submit, faults.append,
                          recipient.public_key() if recipient else None)
    a = 0
    for packet in video:
        while a < len(audio) and audio[a].first_sample_ns <= packet.pts_ns:
            segmenter.push_audio(audio[a])
            a += 1
        clock.now_ns = packet.pts_ns
        segmenter.push_video(packet)
    segmenter.close()
    sealer.close()
    if faults:
        raise RuntimeError(f"faults while recording: {faults}")
    return ledger, sealer


def seal_ratio(workdir: Path) -> dict[str, object]:
    fmt = VideoFormat(1280, 720, 25, 2_000_000)  # what image/recorder.toml configures on a Pi
    video, audio = _media(fmt, 60.0, None, grain=12)
    central = X25519PrivateKey.generate()
    t0 = time.process_time()
    _record(workdir / "seal", fmt, video, audio, central)
    path_cpu = time.process_time() - t0
    t0 = time.process_time()
    aac = AacEncoder(SR)
    aac_bytes = b"".join(p.data for block in audio for p in aac.encode(block.samples))
    aac_cpu = time.process_time() - t0
    encoded = b"".join(p.data for p in video) + aac_bytes
    rounds = 20
    t0 = time.process_time()
    for _ in range(rounds):
        hashlib.sha256(encoded).digest()
    sha_cpu = (time.process_time() - t0) / rounds
    return {
        "seal_cpu_ratio_vs_sha256": round((path_cpu - aac_cpu) / sha_cpu, 2),
        "seal_path_cpu_s_per_min": round(path_cpu - aac_cpu, 3),
        "seal_sha256_cpu_s_per_min": round(sha_cpu, 4),
        "seal_aac_cpu_s_per_min": round(aac_cpu, 3),
        "seal_bench_media_mb_per_min": round(len(encoded) / 1e6, 2),
        "seal_cpu_percent_of_one_core": round((path_cpu - aac_cpu) / 60 * 100, 2),
    }


def _fake_spool(root: Path, segments: int) -> None:
    """A spool holding `segments` pending segment entries, written without fsync (set-up only)."""
    per_session = 1800
    for s in range(0, segments, per_session):
        session = f"20260101T{s // per_session:06d}Z-abcdef"
        entries = root / session / layout.ENTRIES
        entries.mkdir(parents=True)
        (root / session / layout.RECEIPTS).mkdir()
        for seq in range(1, min(per_session, segments - s) + 1):
            # Well-formed but not signed: the spool parses entries, it does not verify them.
            entry = {"v": 1, "device": "BENCH-1", "session": session, "seq": seq, "kind": "segment",
                     "prev": "0" * 64, "time": "2026-01-01T00:00:00.000+08:00", "mono_ns": seq,
                     "clock_synced": True, "body": _segment_body(seq), "sig": ""}
            (entries / f"{seq:08d}.json").write_bytes(canonical(entry))


def _bookkeeping_cost(workdir: Path, pending: int, operations: int = 600) -> float:
    root = workdir / f"spool-{pending}"
    _fake_spool(root, pending)
    # The spool was made without flushing; flush it now, or the receipts' group commits (syncfs) would
    # write it out inside the timed operations and charge the big spool for its own making.
    os.sync()
    spool = Spool(root)
    identity = DeviceIdentity.load_or_create(workdir / "keys")
    session = "20261122T000000Z-bbbbbb"
    ledger = Ledger(root / session, "BENCH-1", session, identity, SimClock("Asia/Shanghai"))
    ledger.append("open", opening_body(META, identity.public_key_b64, 2.0, VideoFormat(1280, 720, 25, 2_000_000), SR,
                                       None, 0, {}))
    ledger.subscribe(spool.added)
    times = []
    for n in range(operations):
        t0 = time.perf_counter()
        appended = ledger.append("segment", _segment_body(n + 1))
        spool.next_pending(16, (), first=session)  # what the uploader asks for: the live session first
        t1 = time.perf_counter()
        # Central's receipt as it arrives (decoding it is the wire protocol's cost, not the spool's).
        receipt = decode_receipt(encode_receipt(session, appended.seq, appended.hash, "2026-11-22T00:00:00.000Z",
                                                "bench"))
        t2 = time.perf_counter()
        spool.receipts([(PendingItem(session, appended.seq), receipt)])
        spool.backlog()
        times.append(t1 - t0 + time.perf_counter() - t2)
    return statistics.median(times)


def spool_ratio(workdir: Path) -> dict[str, object]:
    small = _bookkeeping_cost(workdir, 100)
    large = _bookkeeping_cost(workdir, 50_000)
    return {
        "spool_cost_ratio_50k_vs_100": round(large / small, 3),
        "spool_cost_ms_100": round(small * 1000, 3),
        "spool_cost_ms_50k": round(large * 1000, 3),
    }


def _markers(session_dir: Path) -> tuple[list[float], list[float], int]:
    """Times (s) of the white flashes and of the click onsets in the recording, and the frame count."""
    flashes: list[float] = []
    clicks: list[float] = []
    frames = 0
    for seq in layout.entry_seqs(session_dir):
        entry = json.loads(layout.entry_path(session_dir, seq).read_bytes())
        if entry["kind"] != "segment":
            continue
        with av.open(str(layout.media_path(session_dir, entry["body"]["file"]))) as container:
            for frame in container.decode(video=0):
                frames += 1
                if frame.to_ndarray(format="gray").mean() > 240:
                    flashes.append((int(frame.pts or 0) - PTS_OFFSET) / TS_HZ)
        with av.open(str(layout.media_path(session_dir, entry["body"]["file"]))) as container:
            for aframe in container.decode(audio=0):
                pcm = aframe.to_ndarray().reshape(-1)
                loud = np.flatnonzero(np.abs(pcm) > 0.2)
                if len(loud):
                    onset = (int(aframe.pts or 0) - PTS_OFFSET) / TS_HZ + loud[0] / aframe.sample_rate
                    if not clicks or onset - clicks[-1] > 1.0:
                        clicks.append(onset)
    return flashes, clicks, frames


def hour(workdir: Path, seconds: float = 3600.0) -> dict[str, object]:
    fmt = VideoFormat(320, 240, 10, 300_000)
    video, audio = _media(fmt, seconds, 60.0)
    ledger, sealer = _record(workdir / "hour", fmt, video, audio, None)
    flashes, clicks, frames = _markers(ledger.session_dir)
    expected_frames = int(seconds * fmt.fps)
    pairs = list(zip(flashes, clicks, strict=False))
    drift_ms = max(abs(c - f) for f, c in pairs) * 1000 if pairs else float("nan")
    return {
        "frames_lost_1h_sim": expected_frames - frames,
        "av_drift_ms_1h_sim": round(drift_ms, 1),
        "av_markers_1h_sim": len(pairs),
        "hour_segments": len(sealer.sealed),
    }


def run(workdir: Path) -> dict[str, object]:
    results: dict[str, object] = {}
    results.update(seal_ratio(workdir))
    results.update(spool_ratio(workdir))
    seconds = float(os.environ.get("BENCH_HOUR_SECONDS", "3600"))
    results.update(hour(workdir, seconds))
    return results
