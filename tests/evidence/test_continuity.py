"""Every second covered or explained (FORMAT §4.5, §7.1): from the first segment's start to the last segment's
end, each instant lies in a segment or in an interruption with a reason code, and every recovered segment is
accounted for by an interruption after it. Sessions built entry by entry, signed by a real device key."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from capture.errors import CaptureError
from capture.recording import close_session
from evidence import layout
from evidence.entry import Segment
from evidence.rules import Problem
from evidence.verify import verify_session
from provisioning.identity import DeviceIdentity
from tests.forge import StepClock, open_session, segment_body

S = 1_000_000_000
FRAME = S // 10  # tests/forge.py records at 10 frames per second


@dataclass
class Seg:
    start: int
    end: int
    recovered: bool = False


@dataclass
class Gap:
    began: int | None
    resumed: int | None
    cause: str = "camera"
    recovered: list[str] | None = None
    """The interruption's `recovered_segments`; None lists exactly the recovered segments before it."""
    extra: dict[str, Any] = field(default_factory=dict)


def build(tmp_path: Path, timeline: list[Seg | Gap], close_code: str = "stop_button") -> tuple[Path, str]:
    device = DeviceIdentity(Ed25519PrivateKey.generate())
    session = tmp_path / "20260101T000000Z-abcdef"
    ledger = open_session(session, "SIM-0001", device, StepClock(dt.datetime(2026, 1, 1, tzinfo=dt.UTC)))
    sealed: list[Segment] = []
    unaccounted: list[str] = []
    for item in timeline:
        if isinstance(item, Seg):
            index = len(sealed) + 1
            media = f"segment {index}".encode() * 100
            layout.media_path(session, layout.media_name(index)).write_bytes(media)
            body = segment_body(index, media, item.start, item.end)
            if item.recovered:
                body["recovered"] = True
                unaccounted.append(body["file"])
            segment = ledger.append("segment", body).segment
            assert segment is not None
            sealed.append(segment)
        elif item.began is None:
            ledger.append("interruption", {"reason": "abrupt stop", "last_entry_time": "",
                                           "recovered_segments": unaccounted, **item.extra})
            unaccounted = []
        else:
            body = {"cause": item.cause, "began_ns": item.began, "began_wall": "2026-01-01T08:00:00.000+08:00",
                    "resumed_ns": item.resumed,
                    "recovered_segments": unaccounted if item.recovered is None else item.recovered, **item.extra}
            if item.resumed is not None:
                body["resumed_wall"] = "2026-01-01T08:00:09.000+08:00"
            ledger.append("interruption", body)
            unaccounted = []
    close_session(ledger, "closed", close_code, sealed)
    return session, device.public_key_b64


def verdict(tmp_path: Path, timeline: list[Seg | Gap], close_code: str = "stop_button") -> Problem | None:
    session, key = build(tmp_path, timeline, close_code)
    report = verify_session(session, trusted_key_b64=key)
    return None if report.ok else report.findings[0].problem


def test_continuous_session_passes__CONTINUOUS(tmp_path: Path) -> None:
    assert verdict(tmp_path, [Seg(0, 2 * S), Seg(2 * S, 4 * S), Seg(4 * S, 5 * S)]) is None


def test_a_gap_with_no_interruption_fails_verify__CONTINUOUS(tmp_path: Path) -> None:
    assert verdict(tmp_path, [Seg(0, 2 * S), Seg(9 * S, 11 * S)]) is Problem.UNEXPLAINED_GAP


def test_a_gap_of_one_frame_is_tolerated__CONTINUOUS(tmp_path: Path) -> None:
    assert verdict(tmp_path, [Seg(0, 2 * S), Seg(2 * S + FRAME, 4 * S)]) is None
    assert verdict(tmp_path / "b", [Seg(0, 2 * S), Seg(2 * S + FRAME + 1, 4 * S)]) is Problem.UNEXPLAINED_GAP


def test_a_gap_explained_by_an_interruption_passes__INTERRUPT(tmp_path: Path) -> None:
    assert verdict(tmp_path, [Seg(0, 2 * S), Gap(2 * S, 9 * S), Seg(9 * S, 11 * S)]) is None


def test_consecutive_interruptions_chain__INTERRUPT(tmp_path: Path) -> None:
    timeline: list[Seg | Gap] = [Seg(0, 2 * S), Gap(2 * S, 5 * S), Gap(5 * S, 9 * S, "storage_full"),
                                 Seg(9 * S, 11 * S)]
    assert verdict(tmp_path, timeline) is None


@pytest.mark.parametrize(("timeline", "problem"), [
    # The break is said to begin after the last segment ended: the stretch between is explained by nothing.
    ([Seg(0, 2 * S), Gap(3 * S, 9 * S), Seg(9 * S, 11 * S)], Problem.UNEXPLAINED_GAP),
    # It begins inside the last segment: the two overlap.
    ([Seg(0, 2 * S), Gap(1 * S, 9 * S), Seg(9 * S, 11 * S)], Problem.TIMESTAMP_GAP),
    # Recording is said to resume before the next segment starts.
    ([Seg(0, 2 * S), Gap(2 * S, 8 * S), Seg(9 * S, 11 * S)], Problem.UNEXPLAINED_GAP),
    # ... or after it started.
    ([Seg(0, 2 * S), Gap(2 * S, 9 * S), Seg(8 * S, 11 * S)], Problem.TIMESTAMP_GAP),
    # Recording is said not to resume, and a segment follows.
    ([Seg(0, 2 * S), Gap(2 * S, None), Seg(9 * S, 11 * S)], Problem.UNEXPLAINED_GAP),
], ids=["begins late", "begins early", "resumes early", "resumes late", "resumes after saying it did not"])
def test_an_interruption_must_meet_the_segments_around_it__INTERRUPT(tmp_path: Path, timeline: list[Seg | Gap],
                                                                      problem: Problem) -> None:
    assert verdict(tmp_path, timeline) is problem


def test_a_recovered_segment_with_no_interruption_after_it_fails__INTERRUPT(tmp_path: Path) -> None:
    # Before the next ordinary segment, and before the close.
    assert verdict(tmp_path, [Seg(0, 2 * S), Seg(2 * S, 4 * S, recovered=True), Seg(4 * S, 6 * S)]) \
        is Problem.UNEXPLAINED_RECOVERY
    assert verdict(tmp_path / "b", [Seg(0, 2 * S), Seg(2 * S, 4 * S, recovered=True)]) is Problem.UNEXPLAINED_RECOVERY


def test_a_recovered_segment_accounted_for_passes__INTERRUPT(tmp_path: Path) -> None:
    timeline: list[Seg | Gap] = [Seg(0, 2 * S), Seg(2 * S, 3 * S, recovered=True), Gap(3 * S, 9 * S, "abrupt_stop"),
                                 Seg(9 * S, 11 * S)]
    assert verdict(tmp_path, timeline) is None
    assert verdict(tmp_path / "b", [*timeline[:2], Gap(3 * S, None, "abrupt_stop")], "not_resumed") is None


def test_an_interruption_must_list_the_segments_recovered_before_it__INTERRUPT(tmp_path: Path) -> None:
    timeline: list[Seg | Gap] = [Seg(0, 2 * S), Seg(2 * S, 3 * S, recovered=True),
                                 Gap(3 * S, None, "abrupt_stop", recovered=[])]
    assert verdict(tmp_path, timeline, "not_resumed") is Problem.UNEXPLAINED_RECOVERY


def test_a_cause_that_is_not_a_reason_code_is_malformed__INTERRUPT(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="cause"):
        build(tmp_path, [Seg(0, 2 * S), Gap(2 * S, 9 * S, "gremlins"), Seg(9 * S, 11 * S)])
    with pytest.raises(CaptureError, match="reason_code"):
        build(tmp_path / "b", [Seg(0, 2 * S)], close_code="tired")


def test_interruptions_written_before_they_carried_times_still_verify(tmp_path: Path) -> None:
    assert verdict(tmp_path, [Seg(0, 2 * S), Seg(2 * S, 3 * S, recovered=True), Gap(None, None)], "recovered") is None


def test_a_declined_session_holds_no_segment__NO_RECORD(tmp_path: Path) -> None:
    assert verdict(tmp_path / "empty", [], close_code="declined") is None
    assert verdict(tmp_path / "recorded", [Seg(0, S)], close_code="declined") is Problem.DECLINED_BUT_RECORDED
