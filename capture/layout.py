"""Where a session's files live. The device spool and central's store use the same session layout,
so one verifier reads both:

    <session>/entries/<seq:08d>.json   one signed ledger entry per file
    <session>/media/<index:06d>.ts     one MPEG-TS segment per file (".part" while being written)
    <session>/receipts/<seq:08d>.json  device only: central's receipt for that entry
"""

from __future__ import annotations

import re
from pathlib import Path

ENTRIES = "entries"
MEDIA = "media"
RECEIPTS = "receipts"
# \Z, not $: "$" would also accept a trailing newline.
SESSION_ID = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}\Z")
DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_ENTRY_NAME = re.compile(r"[0-9]{8}\.json\Z")


def entry_path(session_dir: Path, seq: int) -> Path:
    return session_dir / ENTRIES / f"{seq:08d}.json"


def media_name(index: int) -> str:
    return f"{index:06d}.ts"


def media_path(session_dir: Path, name: str) -> Path:
    return session_dir / MEDIA / name


def receipt_path(session_dir: Path, seq: int) -> Path:
    return session_dir / RECEIPTS / f"{seq:08d}.json"


def entry_seqs(session_dir: Path) -> list[int]:
    folder = session_dir / ENTRIES
    if not folder.is_dir():
        return []
    return sorted(int(p.stem) for p in folder.glob("*.json") if _ENTRY_NAME.match(p.name))


def make_dirs(session_dir: Path) -> None:
    for sub in (ENTRIES, MEDIA, RECEIPTS):
        (session_dir / sub).mkdir(parents=True, exist_ok=True)
