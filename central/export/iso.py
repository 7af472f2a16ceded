"""An ISO 9660 image of a set of files, ready to burn to disc (issue 11, ARCHIVE).

The image carries three name trees over the same file data: ISO 9660 level 1 names (8.3, uppercase; every
reader understands them), Joliet (the long names Windows shows) and Rock Ridge (the long names Linux and
macOS show). The level 1 names are derived from the long ones deterministically, so the same package gives
the same names on every export.

Each file's bytes are read from its source only while the image is written, a block at a time: a session
is about 0.5 GB an hour and is never held in memory, and at most one source file is open at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import secrets
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import count
from pathlib import Path, PurePosixPath
from typing import BinaryIO, cast

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

from central.errors import CentralError
from evidence.durable import fsync_dir
from evidence.errors import StorageFault

# Characters Joliet or Windows cannot show in a name, and ';', which ISO 9660 keeps for the version number.
_FORBIDDEN = set('<>:"\\|?*;')
# Joliet allows 64 UCS-2 characters a name; Rock Ridge and Linux allow more, Windows would show it cut.
JOLIET_NAME_MAX = 64
# ISO 9660's volume identifier holds 32 characters but Joliet's only 16, and pycdlib writes the one label to
# both; 16 is also what Windows shows as the disc's name.
VOLUME_ID_MAX = 16
# Large enough that the copy costs a few thousand system calls per gigabyte, small enough to stay in cache.
_BLOCK = 1 << 20
_FILE_MODE = stat.S_IFREG | 0o444
_DIR_MODE = stat.S_IFDIR | 0o555


@dataclass(frozen=True)
class IsoFile:
    """One file of the image: `name` is its POSIX path inside the image (long, mixed case, ASCII);
    `source` is read when the image is written and must then still hold exactly `size` bytes."""

    name: str
    source: Path
    size: int
    sha256: str | None = None
    """If given, the bytes copied must hash to it, or the image is not written (an original that is not what
    its signed entry seals never goes onto a disc)."""


def volume_label(volume_id: str) -> str:
    """`volume_id` as the disc's volume identifier: uppercase A-Z, 0-9 and '_', at most 16 characters."""
    label = re.sub(r"[^A-Z0-9_]", "_", volume_id.upper())[:VOLUME_ID_MAX]
    if not label.strip("_"):
        raise CentralError(f"volume id {volume_id!r} has no letter or digit to name the disc by")
    return label


def _check_name(name: str) -> tuple[str, ...]:
    """The parts of a file's name in the image; CentralError naming what is wrong with it."""
    if not name or name.startswith("/"):
        raise CentralError(f"file name {name!r} in the image must be a relative path")
    parts = tuple(name.split("/"))
    for part in parts:
        if part in ("", ".", ".."):
            raise CentralError(f"file name {name!r} in the image has an empty, '.' or '..' part")
        bad = sorted({c for c in part if c in _FORBIDDEN or not " " <= c <= "~"})
        if bad:
            raise CentralError(f"file name {name!r} in the image has characters a disc cannot carry: {bad}; "
                               "use printable ASCII without <>:\"\\|?*;")
        if len(part) > JOLIET_NAME_MAX:
            raise CentralError(f"file name {name!r} in the image has a part longer than {JOLIET_NAME_MAX} "
                               f"characters ({part[:20]}…), which Windows would show cut")
    return parts


def _d_characters(text: str) -> str:
    return re.sub(r"[^A-Z0-9_]", "_", text.upper())


def _short_name(long: str, is_dir: bool, taken: set[tuple[str, str]]) -> str:
    """The level 1 identifier of `long` within its folder: an 8-character name and, for a file, a
    3-character extension; a clash with one already `taken` there ends the name in _1, _2, …"""
    stem, dot, ext = ("", "", "") if is_dir else long.rpartition(".")
    if is_dir or not dot:
        stem, ext = long, ""
    elif not stem:
        # A name like ".profile": its only part is what comes after the dot.
        stem, ext = ext, ""
    stem, ext = _d_characters(stem)[:8] or "_", _d_characters(ext)[:3]
    candidate = stem
    for n in count(1):
        if (candidate, ext) not in taken:
            break
        suffix = f"_{n}"
        candidate = stem[: 8 - len(suffix)] + suffix
    taken.add((candidate, ext))
    return candidate if is_dir else f"{candidate}.{ext};1"


@dataclass(frozen=True)
class _Layout:
    directories: tuple[tuple[str, str, str], ...]  # (ISO 9660 path, Rock Ridge name, Joliet path), parents first
    files: tuple[tuple[IsoFile, str, str, str], ...]  # (file, ISO 9660 path, Rock Ridge name, Joliet path)


def _layout(files: Sequence[IsoFile]) -> _Layout:
    """Check the names and give every folder and file its three names; CentralError for a name that is
    absolute, has '..', repeats another (letter case aside: Windows would show one of them), or is both a
    file and a folder."""
    parts_of: dict[str, tuple[str, ...]] = {}
    folded: dict[str, str] = {}
    for item in files:
        parts = _check_name(item.name)
        if item.size < 0:
            raise CentralError(f"file {item.name!r} in the image has a negative size ({item.size})")
        key = item.name.casefold()
        if key in folded:
            raise CentralError(f"file name {item.name!r} appears twice in the image"
                               + ("" if folded[key] == item.name else f" (as {folded[key]!r})"))
        folded[key] = item.name
        parts_of[item.name] = parts
    folders = {"/".join(parts[:i]) for parts in parts_of.values() for i in range(1, len(parts))}
    folder_folded: dict[str, str] = {}
    for folder in sorted(folders):
        key = folder.casefold()
        if key in folded:
            raise CentralError(f"{folded[key]!r} is both a file and a folder in the image")
        if key in folder_folded:
            raise CentralError(f"folders {folder_folded[key]!r} and {folder!r} in the image differ only in letter "
                               "case: Windows would show them as one")
        folder_folded[key] = folder

    # Names are given folder by folder, parents first and in sorted order, so a short name does not depend
    # on the order the files were listed in.
    nodes = sorted([(parts, True) for parts in (tuple(f.split("/")) for f in folders)]
                   + [(parts, False) for parts in parts_of.values()], key=lambda node: (len(node[0]), node[0]))
    short: dict[str, str] = {"": ""}
    taken: dict[str, set[tuple[str, str]]] = {}
    for parts, is_dir in nodes:
        parent = "/".join(parts[:-1])
        short["/".join(parts)] = f"{short[parent]}/{_short_name(parts[-1], is_dir, taken.setdefault(parent, set()))}"
    directories = tuple((short[d], PurePosixPath(d).name, f"/{d}")
                        for d in sorted(folders, key=lambda d: (d.count("/"), d)))
    placed = tuple((item, short[item.name], parts_of[item.name][-1], f"/{item.name}") for item in files)
    return _Layout(directories, placed)


class _Source(io.RawIOBase):
    """A source file read while the image is written: opened at pycdlib's seek to its start, closed once its
    `size` bytes are read; a file that is then shorter or longer than `size` stops the image."""

    def __init__(self, item: IsoFile) -> None:
        super().__init__()
        self._item = item
        self._file: io.FileIO | None = None
        self._done = 0
        self._hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._done

    def seek(self, offset: int, whence: int = os.SEEK_SET, /) -> int:
        if offset != 0 or whence != os.SEEK_SET:
            raise io.UnsupportedOperation("an image source is read once from its start")
        self._release()
        self._done = 0
        self._hash = hashlib.sha256()
        try:
            self._file = io.FileIO(self._item.source, "rb")
            size = os.fstat(self._file.fileno()).st_size
        except OSError as err:
            self._release()
            raise CentralError(f"cannot read {self._item.source} for {self._item.name!r} in the image: "
                               f"{err.strerror or err}") from err
        if size != self._item.size:
            self._release()
            raise CentralError(f"{self._item.source} for {self._item.name!r} holds {size} bytes, not the "
                               f"{self._item.size} it was listed with: it changed after the package was listed")
        if size == 0:
            self._release()
            self._check_hash()
        return 0

    def _check_hash(self) -> None:
        if self._item.sha256 is not None and self._hash.hexdigest() != self._item.sha256:
            raise CentralError(f"{self._item.source} for {self._item.name!r} is not the file its record seals "
                               "(its SHA-256 differs): the store was changed; run `recorder central sweep`")

    def read(self, size: int = -1, /) -> bytes:
        if self._file is None:
            raise CentralError(f"{self._item.source} for {self._item.name!r} was read past its end")
        want = self._item.size - self._done if size < 0 else min(size, self._item.size - self._done)
        chunks = []
        got = 0
        try:
            while got < want and (chunk := self._file.read(want - got)):
                chunks.append(chunk)
                got += len(chunk)
            self._done += got
            for chunk in chunks:
                self._hash.update(chunk)
            if got < want:
                raise CentralError(f"{self._item.source} for {self._item.name!r} ended after {self._done} of its "
                                   f"{self._item.size} bytes: it changed while the image was written")
            if self._done == self._item.size:
                grown = os.fstat(self._file.fileno()).st_size
                if grown != self._item.size:
                    raise CentralError(f"{self._item.source} for {self._item.name!r} grew to {grown} bytes from "
                                       f"{self._item.size} while the image was written")
                self._release()
                self._check_hash()
        except OSError as err:
            raise CentralError(f"cannot read {self._item.source} for {self._item.name!r} in the image: "
                               f"{err.strerror or err}") from err
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self) -> None:
        self._release()
        super().close()


def _image(layout: _Layout, label: str, sources: list[_Source]) -> pycdlib.PyCdlib:
    image = pycdlib.PyCdlib()
    # Joliet 3 and Rock Ridge 1.09 are the most widely read (xorriso and genisoimage make the same).
    image.new(interchange_level=1, vol_ident=label, joliet=3, rock_ridge="1.09")
    for iso_path, rr_name, joliet_path in layout.directories:
        image.add_directory(iso_path=iso_path, rr_name=rr_name, joliet_path=joliet_path, file_mode=_DIR_MODE)
    for item, iso_path, rr_name, joliet_path in layout.files:
        source = _Source(item)
        sources.append(source)
        # pycdlib types its source as BinaryIO but only seeks it to the start and reads it.
        image.add_fp(cast(BinaryIO, source), item.size, iso_path=iso_path, rr_name=rr_name, joliet_path=joliet_path,
                     file_mode=_FILE_MODE)
    return image


def write_iso(out: Path, files: Sequence[IsoFile], volume_id: str) -> None:
    """Write the ISO 9660 image of `files` to `out`: written beside it under a temporary name, fsynced,
    renamed, the folder fsynced. CentralError for a bad name or volume id, or a source that is missing or
    not of its listed size; StorageFault if the image cannot be written."""
    label = volume_label(volume_id)
    layout = _layout(files)
    sources: list[_Source] = []
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(6)}.tmp")
    try:
        image = _image(layout, label, sources)
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640), "wb") as sink:
            image.write_fp(sink, blocksize=_BLOCK)
            sink.flush()
            os.fsync(sink.fileno())
        # A link, not a rename: an image of the same name already kept is never replaced.
        os.link(tmp, out)
        fsync_dir(out.parent)
    except FileExistsError as err:
        raise CentralError(f"{out} exists already: an image is never written over") from err
    except PyCdlibException as err:
        raise CentralError(f"cannot lay out the image {out.name}: {err}") from err
    except OSError as err:
        raise StorageFault(f"could not write the image {out}: {err.strerror or err}") from err
    finally:
        for source in sources:
            source.close()
        with contextlib.suppress(OSError):
            tmp.unlink()

