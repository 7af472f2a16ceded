"""Group commit (capture/durable.py): many files made durable with a few filesystem flushes, each file
whole under its final name or not there at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from evidence import durable
from evidence.errors import StorageFault


@pytest.fixture(params=["syncfs", "fsync each"])
def flushing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways to flush: Linux's syncfs, and an fsync per file where the C library has no syncfs."""
    if request.param == "fsync each":
        monkeypatch.setattr(durable, "_syncfs", lambda: None)
    else:
        assert durable._syncfs() is not None, "this Linux C library has no syncfs"
    return str(request.param)


def test_group_commit_writes_and_moves_every_file_whole(tmp_path: Path, flushing: str) -> None:
    (tmp_path / "entries").mkdir()
    (tmp_path / "media").mkdir()
    staged = tmp_path / "staged.ts"
    staged.write_bytes(b"media" * 1000)
    writes = [(tmp_path / "entries" / f"{n:08d}.json", f"entry {n}".encode()) for n in range(5)]
    durable.group_commit(tmp_path, writes, [(staged, tmp_path / "media" / "000001.ts")])
    assert [p.read_bytes() for p, _ in writes] == [data for _, data in writes]
    assert (tmp_path / "media" / "000001.ts").read_bytes() == b"media" * 1000
    assert not staged.exists()
    # No temporary file is left behind.
    assert sorted(p.name for p in (tmp_path / "entries").iterdir()) == [p.name for p, _ in writes]


def test_group_commit_replaces_an_existing_file_atomically(tmp_path: Path, flushing: str) -> None:
    target = tmp_path / "receipt.json"
    target.write_bytes(b"old")
    durable.group_commit(tmp_path, [(target, b"new")])
    assert target.read_bytes() == b"new"


def test_group_commit_failure_names_the_file_and_leaves_no_torn_one(tmp_path: Path, flushing: str) -> None:
    good = tmp_path / "a.json"
    missing_folder = tmp_path / "no-such-folder" / "b.json"
    with pytest.raises(StorageFault, match="no-such-folder"):
        durable.group_commit(tmp_path, [(good, b"a"), (missing_folder, b"b")])
    # Nothing was renamed: the failure came before any file appeared under its name.
    assert not good.exists()


def test_a_move_whose_source_is_gone_fails_before_any_write_appears(tmp_path: Path, flushing: str) -> None:
    entry = tmp_path / "entry.json"
    with pytest.raises(StorageFault, match=r"gone\.ts"):
        durable.group_commit(tmp_path, [(entry, b"seals the segment")],
                         [(tmp_path / "gone.ts", tmp_path / "segment.ts")])
    # The entry refers to the segment, so it must not appear without it.
    assert not entry.exists()


def test_a_move_another_writer_made_first_counts_as_done(tmp_path: Path, flushing: str) -> None:
    # Two receivers of one share group committing the same segment: the second finds it moved already.
    (tmp_path / "segment.ts").write_bytes(b"moved by the other receiver")
    entry = tmp_path / "entry.json"
    durable.group_commit(tmp_path, [(entry, b"seals the segment")],
                         [(tmp_path / "gone.ts", tmp_path / "segment.ts")])
    assert entry.read_bytes() == b"seals the segment"
    assert (tmp_path / "segment.ts").read_bytes() == b"moved by the other receiver"


def test_a_failed_group_commit_leaves_no_temporary_file(tmp_path: Path, flushing: str) -> None:
    with pytest.raises(StorageFault):
        durable.group_commit(tmp_path, [(tmp_path / "a.json", b"a")], [(tmp_path / "gone.ts", tmp_path / "b.ts")])
    assert list(tmp_path.iterdir()) == []


def test_a_writer_restarted_after_a_crash_replaces_the_temporary_file_it_left(tmp_path: Path,
                                                                              flushing: str) -> None:
    target = tmp_path / "00000013.json"
    # A first run of receiver-1, killed mid-commit, left its temporary file half written.
    durable.temporary_name(target, "receiver-1").write_bytes(b"cut o")
    durable.group_commit(tmp_path, [(target, b"the whole entry")], writer="receiver-1")
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
    assert target.read_bytes() == b"the whole entry"


def test_writers_sharing_a_folder_never_share_a_temporary_file() -> None:
    entry = Path("entries/00000013.json")
    assert durable.temporary_name(entry, "receiver-1") != durable.temporary_name(entry, "receiver-2")
    assert durable.temporary_name(entry, "receiver-1").name.startswith(".00000013.json.")
