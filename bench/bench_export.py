"""The evidence export (central/export/package.py; issue 11, ARCHIVE), of one hour of recording at the default
picture: 1,800 sealed 2-second segments of real x264 + AAC with their decrypted working copies, signed
entries, in a central store.

export_mb_s: megabytes of package (the ISO image: originals, playable copies, note, verifier, manifest) made
per second: the ledger judged by the session rules, every original and working copy read once and checked
against its signed hash while it is copied into the image, the written note laid out, the manifest signed,
the image fsynced, the export recorded in the register and the audit.
export_ratio_vs_copy: a plain durable copy of the same files in the same run (each file copied and fsynced,
then the folder) against the export (target ≥ 0.5): what packaging costs beyond copying.
export_ratio_vs_one_file_copy: the same bytes copied into one file with one fsync, against the export: the
copy's cost without a file system commit per file, which the image does not pay either (it is one file).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from pathlib import Path
from typing import Any

from bench.bench_sweep import one_hour_in_a_store
from bench.bench_upload import DEVICE
from central.audit import AuditLog
from central.export.package import export_session
from central.register import Actor, Registers
from evidence import layout
from evidence.durable import fsync_dir
from evidence.encryption import open_sealed
from provisioning.central_key import load_central_key
from provisioning.identity import DeviceIdentity

ZONE = dt.timezone(dt.timedelta(hours=8))


def _copy(files: list[Path], to: Path) -> None:
    to.mkdir()
    for n, path in enumerate(files):
        target = to / f"{n:06d}{path.suffix}"
        shutil.copyfile(path, target)
        fd = os.open(target, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fsync_dir(to)


def run(workdir: Path) -> dict[str, Any]:
    hour = one_hour_in_a_store(workdir)
    store, session, source = hour.store, hour.session, hour.source
    key = load_central_key(hour.central_pem)
    # The receiver's working copies, as hard links to one decrypted copy of each distinct source file.
    plain_of = {}
    for path in source.files:
        plain = workdir / "plain-source" / path.name
        plain.parent.mkdir(exist_ok=True)
        plain.write_bytes(open_sealed(path.read_bytes(), key).plaintext)
        plain_of[path.stat().st_ino] = plain
    folder = store.session_dir(DEVICE, session)
    (folder / "plain").mkdir()
    for media in (folder / layout.MEDIA).iterdir():
        os.link(plain_of[media.stat().st_ino], folder / "plain" / media.name)

    signer = DeviceIdentity.load_or_create(workdir / "central-signing")
    audit = AuditLog(store.state_file("audit.log"), signer.sign, signer.public_key_b64, ZONE)
    registers = Registers(store, audit)
    actor = Actor("法制员", "legal")

    def export() -> Any:
        return export_session(store, registers, key, DEVICE, session, actor, "法制部门 legal office",
                              {"request": 1, "approved_by": "bench"}, ZONE)

    export()  # warms the page cache and the font, as a second export of the day would find them
    t = time.perf_counter()
    done = export()
    export_s = time.perf_counter() - t
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    copied = workdir / "copy"
    t = time.perf_counter()
    _copy(files, copied)
    copy_s = time.perf_counter() - t
    copy_mb = sum(p.stat().st_size for p in files) / 1e6
    t = time.perf_counter()
    with (workdir / "one-file").open("wb") as out:
        for path in files:
            with path.open("rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())
    one_s = time.perf_counter() - t
    return {"export_mb_s": round(done.bytes / 1e6 / export_s, 1),
            "export_ratio_vs_copy": round((copy_s / copy_mb) / (export_s / (done.bytes / 1e6)), 3),
            "export_ratio_vs_one_file_copy": round((one_s / copy_mb) / (export_s / (done.bytes / 1e6)), 3),
            "export_copy_mb_s": round(copy_mb / copy_s, 1), "export_one_file_copy_mb_s": round(copy_mb / one_s, 1),
            "export_package_mb": round(done.bytes / 1e6, 1),
            "export_seconds": round(export_s, 2), "export_files": done.files}
