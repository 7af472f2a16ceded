"""A whole session on simulated hardware, read back from the device spool and from central's copy."""

from __future__ import annotations

import datetime as dt
import itertools
import re
import time

import numpy as np
import pytest

from capture.probe import decodes
from capture.stamp import Stamper, StampFacts, find_cjk_font, stamp_lines
from evidence import layout
from evidence.verify import verify_session
from firmware_py.cli import main
from firmware_py.config import NOTICE_ZH
from firmware_py.rig import Rig
from hal.clock.sim import SimClock
from tests.conftest import RecordedSession
from tests.media import (
    audio_pcm,
    entries,
    events,
    ffprobe,
    first_frame,
    loud_fraction,
    personal,
    segment_files,
    video_packets,
)


def test_notice_played_while_recording_and_heard_in_it__NOTICE(recorded: RecordedSession) -> None:
    cfg = recorded.rig.config
    notices = events(recorded.central_dir, "notice")
    assert [n["body"]["prompt"] for n in notices] == ["notice_zh"]
    assert notices[0]["body"]["text"] == NOTICE_ZH
    log = entries(recorded.central_dir)
    first_segment = next(e["body"] for e in log if e["kind"] == "segment")
    # The notice starts after the recording's first frame: it is inside the recording.
    assert notices[0]["body"]["started_mono_ns"] > log[0]["mono_ns"] + first_segment["start_ns"]
    # ... and the recording itself carries it: the notice's speech is loud against the quiet room tone.
    pcm = audio_pcm(segment_files(recorded.central_dir), cfg.audio.sample_rate)
    notice = recorded.rig.service.controller._notice_prompts[0]
    prompt = recorded.rig.service.prompts.load(notice).astype(np.float32) / 32768
    window = cfg.audio.sample_rate // 10
    levels = [float(np.sqrt(np.mean(pcm[i : i + window] ** 2))) for i in range(0, len(pcm) - window, window)]
    speech_rms = float(np.sqrt(np.mean(prompt**2)))
    loud = sum(1 for level in levels if level > speech_rms / 4)
    assert loud * window > 0.5 * len(prompt), "less than half the notice is audible in the recording"
    # The recorded speech correlates with the prompt that was played (not just any noise).
    n = min(len(pcm), len(prompt) + cfg.audio.sample_rate * 2)
    corr = np.correlate(pcm[:n], prompt[: cfg.audio.sample_rate], mode="valid")
    peak = float(np.max(np.abs(corr))) / (np.linalg.norm(prompt[: cfg.audio.sample_rate]) ** 2)
    assert peak > 0.5


def test_closing_statement_with_the_end_time_is_said_into_the_recording__STATEMENT(
        recorded: RecordedSession) -> None:
    log = entries(recorded.central_dir)
    said = [(i, e["body"]) for i, e in enumerate(log)
            if e["kind"] == "event" and e["body"]["name"] == "spoken" and e["body"]["prompt"].startswith("ended_")]
    assert [b["prompt"] for _, b in said] == (["ended_zh", "ended_en"] if recorded.rig.config.notice.en
                                              else ["ended_zh"])
    index, zh = said[0]
    stop = max(i for i, e in enumerate(log) if e["kind"] == "event" and e["body"].get("button") == "stop")
    assert stop < index < len(log) - 1 and log[-1]["kind"] == "close"  # after STOP, before the close
    # It names the end time, which is when it was said (to the second, in the device's zone).
    started = dt.datetime.fromisoformat(zh["started"])
    spoken_time = re.fullmatch(r"本次录音录像于(\d+)时(\d+)分(\d+)秒结束。", zh["text"])
    assert spoken_time is not None, zh["text"]
    said_at = started.replace(hour=int(spoken_time[1]), minute=int(spoken_time[2]), second=int(spoken_time[3]),
                              microsecond=0)
    assert abs((started - said_at).total_seconds()) < 5
    # And the recording carries it: the inputs ran until it had been said.
    segments = [e["body"] for e in log if e["kind"] == "segment"]
    assert zh["started_ns"] + int(zh["seconds"] * 1e9) <= segments[-1]["end_ns"]
    rate = recorded.rig.config.audio.sample_rate
    assert loud_fraction(recorded.central_dir, log, zh["started_ns"], zh["seconds"], rate) > 0.5


def test_segments_are_h264_aac_and_start_on_keyframes__CONTINUOUS(recorded: RecordedSession) -> None:
    files = segment_files(recorded.central_dir)
    assert len(files) >= 4
    cfg = recorded.rig.config
    interval = 90_000 // cfg.video.fps
    previous_last: int | None = None
    for path in files:
        probe = ffprobe(path)
        assert (probe.video_codec, probe.audio_codec) == ("h264", "aac")
        assert (probe.width, probe.height) == (cfg.video.width, cfg.video.height)
        packets = video_packets(path)
        assert packets[0][1], f"{path.name} does not start on a keyframe"
        if previous_last is not None:
            # Timestamps run on across segments: no frame lost or repeated at the boundary.
            assert packets[0][0] - previous_last == interval
        previous_last = packets[-1][0]


def test_segment_records_chain_without_gaps__CONTINUOUS(recorded: RecordedSession) -> None:
    segments = [e["body"] for e in entries(recorded.spool_dir) if e["kind"] == "segment"]
    assert [s["index"] for s in segments] == list(range(1, len(segments) + 1))
    for before, after in itertools.pairwise(segments):
        assert after["start_ns"] == before["end_ns"]


def test_open_entry_holds_session_metadata__RECORD_FIELDS(recorded: RecordedSession) -> None:
    cfg = recorded.rig.config
    opening = entries(recorded.central_dir)[0]
    assert opening["kind"] == "open"
    body = personal(opening["body"], recorded.rig.central.receiver.private_key_file)
    assert body["unit"] == cfg.device.unit
    assert body["room"] == cfg.device.room and body["location"] == cfg.device.location
    assert body["device_id"] == cfg.device.id
    assert body["officers"] == [{"name": o.name, "certificate": o.certificate} for o in cfg.session.officers]


def test_mark_button_sets_a_marker__RECORD_FIELDS(recorded: RecordedSession) -> None:
    marks = events(recorded.central_dir, "mark")
    assert len(marks) == 1
    assert marks[0]["body"]["label"] == recorded.rig.config.session.mark_label


def test_event_log_has_every_state_change_and_button__NOTICE(recorded: RecordedSession) -> None:
    log = entries(recorded.central_dir)
    states = [(e["body"]["source"], e["body"]["target"])
              for e in log if e["kind"] == "event" and e["body"]["name"] == "state"]
    assert states == [("idle", "preflight"), ("preflight", "notice"), ("notice", "recording"),
                      ("recording", "closing"), ("closing", "idle")][: len(states)]
    assert len(states) >= 4
    buttons = [e["body"]["button"] for e in log if e["kind"] == "event" and e["body"]["name"] == "button"]
    assert buttons == ["start", "mark", "stop"]
    checks = {e["body"]["check"] for e in log if e["kind"] == "event" and e["body"]["name"] == "preflight"}
    assert checks == {"storage", "camera", "microphone", "speaker", "clock", "power", "prompts"}
    assert log[-1]["kind"] == "close"


def test_stamp_burned_into_the_picture__STATEMENT(recorded: RecordedSession) -> None:
    cfg = recorded.rig.config
    frame = first_frame(segment_files(recorded.central_dir)[1])
    opening = personal(entries(recorded.central_dir)[0]["body"], recorded.rig.central.receiver.private_key_file)
    facts = StampFacts(cfg.device.room, cfg.device.location, cfg.device.id,
                       tuple((o["name"], o["certificate"]) for o in opening["officers"]), recorded.session)
    service = recorded.rig.service
    stamper = Stamper(facts, service.hal.clock, cfg.video.width, cfg.video.height, find_cjk_font(), lambda: 2)
    expected = stamper.render(stamp_lines(facts, "", True, 2)).astype(np.int16)
    wrong = stamper.render(stamp_lines(StampFacts("别的房间", "别处", "OTHER-9", (("王五", "1"),), "x"), "", True, 2))
    got = frame[: stamper.band_height].astype(np.int16)
    # Lines 2-4 (place and device, officers and certificate numbers, session and segment) are fixed
    # text; the first line holds the running time and is compared by the test below.
    rows = slice(stamper.band_height // 4, stamper.band_height)
    match = float(np.mean(np.abs(got[rows] - expected[rows])))
    mismatch = float(np.mean(np.abs(got[rows] - wrong[rows].astype(np.int16))))
    assert match < 12 and mismatch > 2 * match, (match, mismatch)


def test_stamp_time_line_shows_zone_and_clock_state__STATEMENT(recorded: RecordedSession) -> None:
    lines = stamp_lines(StampFacts("r", "l", "d", (("n", "c"),), "s"), "2026-11-22 16:00:00+08:00 CST", False, 1)
    assert lines[0].startswith("2026-11-22 16:00:00+08:00 CST")
    assert "未同步" in lines[0]
    assert "执法证号c" in lines[2]


def test_central_copy_and_spool_verify__NO_EDIT(recorded: RecordedSession) -> None:
    key = recorded.rig.service.identity.public_key_b64
    for where in (recorded.spool_dir, recorded.central_dir):
        report = verify_session(where, trusted_key_b64=key, decode=decodes)
        assert report.ok, report.findings
        assert report.segments >= 4


def test_every_entry_receipted_before_anything_could_be_freed__UPLOAD_24H(recorded: RecordedSession) -> None:
    spool_entries = entries(recorded.spool_dir)
    receipts = sorted((recorded.spool_dir / "receipts").glob("*.json"))
    assert len(receipts) == len(spool_entries)
    # Nothing was deleted on the device: every segment is still in the spool next to its receipt.
    assert len(segment_files(recorded.spool_dir)) == sum(1 for e in spool_entries if e["kind"] == "segment")


def test_every_segment_carries_the_classification_fields__CLASSIFY(recorded: RecordedSession) -> None:
    cfg = recorded.rig.config
    segments = [e["body"] for e in entries(recorded.central_dir) if e["kind"] == "segment"]
    for body in segments:
        meta = personal(body["meta"], recorded.rig.central.receiver.private_key_file)
        assert (meta["unit"], meta["room"], meta["device_id"]) == (cfg.device.unit, cfg.device.room, cfg.device.id)
        assert [o["certificate"] for o in meta["officers"]] == [o.certificate for o in cfg.session.officers]
        assert "case" in meta and "parties" in meta
    walls = [(b["start_wall"], b["end_wall"]) for b in segments]
    assert all(start < end for start, end in walls)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(walls)), "wall-clock spans leave gaps or overlap"


def test_a_clock_step_during_a_session_is_logged_and_flagged_by_verify__CONTINUOUS(
        rig: Rig, capsys: pytest.CaptureFixture[str]) -> None:
    clock = rig.service.hal.clock
    assert isinstance(clock, SimClock)

    def logged(count: int) -> bool:
        session = rig.service.controller.session_id
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert session is not None
            if len(events(rig.config.spool_dir / session, "clock_step")) >= count:
                return True
            time.sleep(0.05)
        return False

    def step_back_twice() -> None:
        clock.step(-3600)
        assert logged(1)
        clock.step(-86400)
        assert logged(2)

    session = rig.record(0.5, during=step_back_twice)
    steps = [e["body"]["seconds"] for e in events(rig.config.spool_dir / session, "clock_step")]
    assert len(steps) == 2 and steps[0] == pytest.approx(-3600, abs=1) and steps[1] == pytest.approx(-86400, abs=1)
    report = verify_session(rig.config.spool_dir / session)
    assert report.ok  # not a break of the rules: the media timeline comes from the monotonic clock
    assert any("stepped by -3600" in w for w in report.warnings), report.warnings
    assert any("stepped by -86400" in w for w in report.warnings), report.warnings
    assert main(["verify", str(rig.config.spool_dir / session)]) == 0
    assert "warning: entry" in capsys.readouterr().out


def test_a_stolen_spool_names_nobody__NO_LEAK(recorded: RecordedSession) -> None:
    # The unit, room, place, officers, parties and case are sealed to central's key in every entry, as the
    # media is: nothing a thief reads in the spool names a person or a case. The verifier needs no key.
    cfg = recorded.rig.config
    names = [cfg.device.unit, cfg.device.room, cfg.device.location, *(o.name for o in cfg.session.officers),
             *(o.certificate for o in cfg.session.officers)]
    for seq in layout.entry_seqs(recorded.spool_dir):
        raw = layout.entry_path(recorded.spool_dir, seq).read_bytes().decode("utf-8")
        leaked = [name for name in names if name in raw]
        assert not leaked, f"entry {seq} names {leaked} in the clear"
    opening = entries(recorded.spool_dir)[0]["body"]
    assert "sealed" in opening and "officers" not in opening
    assert verify_session(recorded.spool_dir, trusted_key_b64=recorded.rig.service.identity.public_key_b64).ok
