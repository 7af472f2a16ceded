"""Recovery after an abrupt stop, on a spool made by a real session."""

from __future__ import annotations

import shutil
from pathlib import Path

from capture.recovery import recover_spool
from evidence import layout
from hal.clock.sim import SimClock
from provisioning.identity import DeviceIdentity
from tests.conftest import RecordedSession
from tests.media import entries


def test_a_session_with_an_unreadable_entry_is_left_alone_and_the_rest_recovered(recorded: RecordedSession,
                                                                                tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    broken = spool / recorded.session
    shutil.copytree(recorded.spool_dir, broken)
    layout.entry_path(broken, 3).write_bytes(b"{torn")
    # A second session, open: its closing entry (and the last segment's) never got written.
    other = spool / (recorded.session[:-6] + "abcdef")
    shutil.copytree(recorded.spool_dir, other)
    seqs = layout.entry_seqs(other)
    for seq in seqs[-2:]:
        layout.entry_path(other, seq).unlink()
    identity = DeviceIdentity.load_or_create(recorded.rig.config.keys_dir)
    done = recover_spool(spool, identity, SimClock("Asia/Shanghai"), lambda appended: None)
    assert [r.session for r in done.closed] == [other.name] and done.resumable is None
    assert layout.entry_path(broken, 3).read_bytes() == b"{torn"  # untouched, for verify to name
    kinds = [e["kind"] for e in entries(other)]
    assert kinds[-2:] == ["interruption", "close"]
