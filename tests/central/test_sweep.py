"""The integrity sweep (NO-EDIT): a stored session judged again finds a flipped byte, a removed entry, a
removed close and a removed session, says which are new, and runs on a schedule."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from central.store import FileStore
from central.sweep import SWEEP_FILE, ScheduledSweep, broken_sessions, sweep
from evidence import layout
from firmware_py.cli import main
from tests.conftest import RecordedSession, wait_until


def copied_store(recorded: RecordedSession, root: Path) -> tuple[FileStore, str, Path]:
    device = recorded.rig.config.device.id
    shutil.copytree(recorded.central_dir, root / "sessions" / device / recorded.session)
    store = FileStore(root)
    store.enroll(device, recorded.rig.service.identity.public_key_b64)
    return store, device, store.session_dir(device, recorded.session)


def test_a_flipped_byte_is_found_and_raised_once_until_mended__NO_EDIT(recorded: RecordedSession, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    store, device, session_dir = copied_store(recorded, tmp_path / "central")
    first = sweep(store)
    assert (first.sessions, first.broken) == (1, []) and first.media_bytes > 0
    media = sorted((session_dir / layout.MEDIA).iterdir())[2]
    original = media.read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0x01
    media.write_bytes(bytes(flipped))

    assert main(["central", "sweep", "--store", str(store.root)]) == 1
    out = capsys.readouterr().out
    assert f"BROKEN (NEW)  {device}/{recorded.session}: changed_segment" in out
    assert broken_sessions(store) == [(device, recorded.session, broken_sessions(store)[0][2])]
    again = sweep(store)
    assert len(again.broken) == 1 and again.newly_broken == []  # still broken, raised once
    media.write_bytes(original)
    assert sweep(store).broken == [] and broken_sessions(store) == []


@pytest.mark.parametrize("damage", ["close", "middle entry", "session"])
def test_removing_anything_central_stored_is_found__NO_EDIT(recorded: RecordedSession, tmp_path: Path,
                                                            damage: str) -> None:
    store, _, session_dir = copied_store(recorded, tmp_path / "central")
    assert sweep(store).broken == []
    entries = sorted((session_dir / layout.ENTRIES).iterdir())
    if damage == "close":
        entries[-1].unlink()  # looks like a session whose close has not arrived: but it had
    elif damage == "middle entry":
        entries[len(entries) // 2].unlink()
    else:
        shutil.rmtree(session_dir)
    [(_, session, problem)] = sweep(store).newly_broken
    assert session == recorded.session
    assert {"close": "entries are gone", "middle entry": "missing_entry",
            "session": "folder is gone"}[damage] in problem


def test_the_receiver_sweeps_on_a_schedule__NO_EDIT(recorded: RecordedSession, tmp_path: Path) -> None:
    store, _, _ = copied_store(recorded, tmp_path / "central")
    scheduled = ScheduledSweep(store, every_s=0.2, first_after_s=0.0)
    scheduled.start()
    try:
        assert wait_until(lambda: scheduled.done >= 2, 30)
    finally:
        scheduled.stop()
    kept = json.loads(store.state_file(SWEEP_FILE).read_bytes())
    assert [v["state"] for v in kept.values()] == ["ok"]


def test_a_broken_session_stands_out_on_every_page__NO_EDIT(recorded: RecordedSession, tmp_path: Path) -> None:
    from central.web.client import WebClient
    from firmware_py import rig as rig_mod

    _, central = rig_mod.configs(tmp_path, "127.0.0.1", 1)
    store, device, session_dir = copied_store(recorded, Path(central.receiver.store_dir))
    media = sorted((session_dir / layout.MEDIA).iterdir())[1]
    media.write_bytes(media.read_bytes()[:-1])  # a byte cut off the end
    assert len(sweep(store).newly_broken) == 1
    server = rig_mod.start_web(central, tmp_path / "web", admin=("admin", "a long enough passphrase"))
    try:
        admin = WebClient(server.url)
        admin.login("admin", "a long enough passphrase")
        for page in ("/", "/fleet/", "/audit/"):
            shown = admin.get(page).text
            assert 'class="urgent-integrity"' in shown and f"{device}/{recorded.session}" in shown, page
    finally:
        server.close()
