"""The integrity sweep (central/sweep.py; issue 11, NO-EDIT), over one hour of recording at the default
picture: 1,800 sealed 2-second segments of real x264 + AAC, signed entries, in a central store.

integrity_sweep_mb_s: megabytes of the session judged again per second (`sweep`: every entry parsed, its
signature and chain checked, every segment's SHA-256 and size against its entry, the rules, the findings
kept), the files in the page cache (a second sweep; the first one warms it).
integrity_sweep_ratio_vs_sha256: that against plain SHA-256 over the same files in the same run (target
≥ 0.5): what the judging costs beyond reading and hashing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.bench_upload import DEVICE, Source, _real_segments, _synthesise
from central.store import FileStore
from central.sweep import sweep
from evidence.hashing import sha256_file
from provisioning.identity import DeviceIdentity

SEGMENTS = 1800
"""One hour of 2-second segments."""


@dataclass(frozen=True)
class OneHour:
    store: FileStore
    session: str
    central_pem: Path
    """Central's private key (the segments are sealed to it)."""
    source: Source
    """The distinct segment files the session's segments are hard links to."""


def one_hour_in_a_store(workdir: Path) -> OneHour:
    """One hour of recording (SEGMENTS sealed segments of real x264 + AAC, signed entries) in a central store,
    the device enrolled."""
    central_pem = workdir / "central-key.pem"
    source = _real_segments(workdir / "source", central_pem, 20.0)
    identity = DeviceIdentity.load_or_create(workdir / "keys")
    spool = workdir / "spool"
    spool.mkdir()
    _synthesise(spool, identity, central_pem, source, SEGMENTS)
    store = FileStore(workdir / "central")
    [session_dir] = list(spool.iterdir())
    (store.root / "sessions" / DEVICE).mkdir(parents=True)
    session_dir.rename(store.session_dir(DEVICE, session_dir.name))
    store.enroll(DEVICE, identity.public_key_b64)
    return OneHour(store, session_dir.name, central_pem, source)


def run(workdir: Path) -> dict[str, Any]:
    hour = one_hour_in_a_store(workdir)
    store = hour.store
    files = sorted(p for p in store.session_dir(DEVICE, hour.session).rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in files)

    assert sweep(store).broken == []  # and the files are in the page cache
    t = time.perf_counter()
    result = sweep(store)
    swept_s = time.perf_counter() - t
    assert result.broken == [] and result.sessions == 1
    t = time.perf_counter()
    for path in files:
        sha256_file(path)
    hashed_s = time.perf_counter() - t
    return {"integrity_sweep_mb_s": round(size / 1e6 / swept_s, 1),
            "integrity_sweep_ratio_vs_sha256": round(hashed_s / swept_s, 3),
            "integrity_sweep_sha256_mb_s": round(size / 1e6 / hashed_s, 1),
            "integrity_sweep_session_mb": round(size / 1e6, 1), "integrity_sweep_files": len(files)}
