"""Identifiers, and where a session's files live (FORMAT §1, §2).

The device spool and central's store use the same session layout, so one verifier reads both:

    <session>/entries/<seq:08d>.json   one signed ledger entry per file
    <session>/media/<index:06d>.ts     one MPEG-TS segment per file (".part" while being written)
    <session>/receipts/<seq:08d>.json  device only: central's receipt for that entry

`SessionFiles` is what a verifier reads a session through; `SessionFolder` is it for a folder, and central's
store hands out its own, so no reader outside the store builds a path into it.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

ENTRIES = "entries"
MEDIA = "media"
RECEIPTS = "receipts"
# \Z, not $: "$" would also accept a trailing newline.
SESSION_ID = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}\Z")
DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
MEDIA_NAME = re.compile(r"[0-9]{6}\.ts\Z")
_ENTRY_NAME = re.compile(r"[0-9]{8}\.json\Z")
MAX_SEQ = 99_999_999
"""The largest entry number: entry files are named with exactly 8 digits."""
MAX_INDEX = 999_999
"""The largest segment index: segment files are named with exactly 6 digits."""


def new_session_id(now: dt.datetime) -> str:
    return f"{now.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def entry_name(seq: int) -> str:
    return f"{seq:08d}.json"


def entry_path(session_dir: Path, seq: int) -> Path:
    return session_dir / ENTRIES / entry_name(seq)


def media_name(index: int) -> str:
    return f"{index:06d}.ts"


def media_path(session_dir: Path, name: str) -> Path:
    return session_dir / MEDIA / name


def receipt_path(session_dir: Path, seq: int) -> Path:
    return session_dir / RECEIPTS / entry_name(seq)


def entry_seqs(session_dir: Path) -> list[int]:
    """The entry numbers present, in order: names of exactly 8 digits and `.json` (FORMAT §2.1); a folder
    or anything else under such a name is left for the reader of that entry to report."""
    folder = session_dir / ENTRIES
    if not folder.is_dir():
        return []
    return sorted(int(p.name[:8]) for p in folder.iterdir() if _ENTRY_NAME.match(p.name))


def make_dirs(session_dir: Path) -> None:
    for sub in (ENTRIES, MEDIA, RECEIPTS):
        (session_dir / sub).mkdir(parents=True, exist_ok=True)


class SessionFiles(Protocol):
    """One stored session as a verifier reads it: entries by number, and its segment files."""

    @property
    def label(self) -> str:
        """Where the session is, for people (a folder, or a store's name for it)."""

    def has_entries(self) -> bool:
        """Whether this is a session at all (it has an entries folder)."""

    def entry_seqs(self) -> list[int]: ...

    def read_entry(self, seq: int) -> bytes:
        """The entry's bytes; OSError if it cannot be read."""

    def media_names(self) -> list[str]:
        """Every name in the media folder that ends in `.ts` (files or not, hidden or not; `.ts.part` and
        temporary files end otherwise), sorted."""

    def open_media(self, name: str) -> BinaryIO:
        """A segment file, opened for reading; FileNotFoundError if there is none by that name."""


class SessionFolder:
    """A session in a folder of its own: a device spool's, central's (FileStore), or an export."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def label(self) -> str:
        return str(self.path)

    def has_entries(self) -> bool:
        return (self.path / ENTRIES).is_dir()

    def entry_seqs(self) -> list[int]:
        return entry_seqs(self.path)

    def read_entry(self, seq: int) -> bytes:
        return entry_path(self.path, seq).read_bytes()

    def media_names(self) -> list[str]:
        folder = self.path / MEDIA
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.name.endswith(".ts"))

    def open_media(self, name: str) -> BinaryIO:
        if not MEDIA_NAME.match(name):
            raise FileNotFoundError(name)
        path = media_path(self.path, name)
        if not path.is_file():
            raise FileNotFoundError(str(path))
        return path.open("rb")


def session_folders(path: Path) -> Iterator[Path]:
    """`path` if it is a session folder, else every session folder below it, in name order."""
    if (path / ENTRIES).is_dir():
        yield path
        return
    yield from sorted(p.parent for p in path.rglob(ENTRIES) if p.is_dir())
