"""One session's record: the ledger with its "open" entry, and the segmenter and sealer behind it.

The live inputs feed `segmenter.push_video` / `push_audio` once attached. Stopping seals the last
segment and writes the "close" entry with the totals, so a missing tail is provable.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from capture.errors import CaptureError
from capture.ledger import Ledger, Signer
from capture.leftovers import seal_leftovers
from capture.sealer import Sealer
from capture.segmenter import ClosedSegment, Segmenter
from evidence.durable import commit_rename
from evidence.encryption import SCHEME, public_key_b64
from evidence.entry import Entry, Officer, Opening, Segment, seal_personal
from evidence.errors import StorageFault
from evidence.rules import SessionRules
from evidence.supervisor import Spawn
from hal.camera.base import VideoFormat
from hal.clock.base import Clock


@dataclass(frozen=True)
class SessionMeta:
    """What the ledger's "open" entry and the stamp say about a session (RECORD-FIELDS, CLASSIFY)."""

    unit: str
    room: str
    location: str
    device_id: str
    officers: tuple[tuple[str, str], ...]
    case: str
    matter: str
    parties: tuple[str, ...]

    @classmethod
    def of(cls, opening: Opening, device_id: str) -> SessionMeta:
        return cls(opening.unit, opening.room, opening.location, device_id,
                   tuple((o.name, o.certificate) for o in opening.officers), opening.case, opening.matter,
                   opening.parties)

    def as_body(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "room": self.room,
            "location": self.location,
            "device_id": self.device_id,
            "officers": [{"name": n, "certificate": c} for n, c in self.officers],
            "case": self.case,
            "matter": self.matter,
            "parties": list(self.parties),
        }


def opening_body(meta: SessionMeta, device_key: str, segment_seconds: float, video: VideoFormat, sample_rate: int,
                 recipient: X25519PublicKey | None, t0_ns: int, extra: dict[str, Any]) -> dict[str, Any]:
    """The `open` entry's body (FORMAT §4.2). With a `recipient`, the personal fields are sealed to it
    (FORMAT §4.2.1): a stolen spool names nobody."""
    personal = meta.as_body()
    return {
        "media_t0_mono_ns": t0_ns,
        **({"device_id": meta.device_id, "sealed": seal_personal(personal, recipient)} if recipient is not None
           else personal),
        "device_key": device_key,
        "segment_seconds": segment_seconds,
        "video": {"width": video.width, "height": video.height, "fps": video.fps, "codec": "h264"},
        "audio": {"sample_rate": sample_rate, "codec": "aac", "channels": 1},
        "encryption": None if recipient is None else {"scheme": SCHEME, "recipient": public_key_b64(recipient)},
        **extra,
    }


@dataclass(frozen=True)
class RecordingParts:
    clock: Clock
    signer: Signer
    video: VideoFormat
    sample_rate: int
    segment_seconds: float
    request_keyframe: Callable[[], None]
    recipient: X25519PublicKey | None
    """Central's encryption key; None records in the clear (the service warns loudly)."""
    spawn: Spawn
    """Starts the recording's own threads (the sealer) under the service's supervisor."""


@dataclass(frozen=True)
class MediaTime:
    """A moment of the session's timeline: media time (ns, FORMAT §5.3) and its wall-clock time."""

    ns: int
    wall: str


@dataclass
class Break:
    """A break in the recording that no `interruption` entry records yet (FORMAT §4.5). It is written when the
    next run of segments begins, or just before the close if recording does not resume."""

    cause: str
    """A code of `evidence.reasons.INTERRUPTION_REASONS`."""
    detail: str


class _Run:
    """One stretch of continuous recording: a segmenter and the sealer behind it."""

    def __init__(self, segmenter: Segmenter, sealer: Sealer) -> None:
        self.segmenter = segmenter
        self.sealer = sealer


class Recording:
    """A session's record. Recording happens in runs of segments; between two runs is a break, which an
    `interruption` entry accounts for, so every instant of the session's timeline lies in a segment or in
    an interruption (FORMAT §7.1)."""

    def __init__(self, parts: RecordingParts, ledger: Ledger, opening: Opening, meta: SessionMeta,
                 on_fault: Callable[[StorageFault], None], t0_ns: int, wall0: dt.datetime) -> None:
        """Use `Recording.open` for a new session and `Recording.resume` to take one up after a restart."""
        self.parts = parts
        self.ledger = ledger
        self.session_id = ledger.session_id
        self.session_dir = ledger.session_dir
        self._on_fault = on_fault
        self._t0_ns = t0_ns
        """Monotonic time of media time 0 (FORMAT §5.3) in this run of the service."""
        self._wall0 = wall0
        self._opening = known_opening(opening, meta)
        # CLASSIFY: every segment carries the session's classification, sealed as the `open` entry's is.
        self._classify: dict[str, Any] = (
            {"device_id": ledger.device_id, "sealed": opening.sealed} if opening.sealed is not None else
            {"unit": meta.unit, "room": meta.room, "device_id": ledger.device_id,
             "officers": [{"name": n, "certificate": c} for n, c in meta.officers], "case": meta.case,
             "parties": list(meta.parties)})
        self.segments: list[Segment] = []
        """Every segment sealed so far, in index order."""
        self._resumed_at: int | None = None
        """`resumed_ns` of the last interruption written, while no segment has followed it."""
        self._accounted = 0
        """Segments before this index were accounted for by an interruption (or were not recovered)."""
        self.pending: Break | None = None
        self.last_interruption: Entry | None = None
        self._run: _Run | None = None

    @classmethod
    def open(cls, parts: RecordingParts, spool_dir: Path, session_id: str, meta: SessionMeta,
             open_extra: dict[str, Any], on_fault: Callable[[StorageFault], None],
             on_entry: Callable[[Entry], None]) -> Recording:
        """A new session: its `open` entry written, and its first run begun."""
        ledger = Ledger(spool_dir / session_id, meta.device_id, session_id, parts.signer, parts.clock)
        ledger.subscribe(on_entry)
        t0_ns = parts.clock.monotonic_ns()
        wall0 = parts.clock.now()
        opening = ledger.append("open", opening_body(
            meta, parts.signer.public_key_b64, parts.segment_seconds, parts.video, parts.sample_rate, parts.recipient,
            t0_ns, open_extra)).opening
        assert opening is not None
        recording = cls(parts, ledger, opening, meta, on_fault, t0_ns, wall0)
        recording.start_run()
        return recording

    @classmethod
    def resume(cls, parts: RecordingParts, session_dir: Path, entries: list[Entry], cause: str, detail: str,
               on_fault: Callable[[StorageFault], None], on_entry: Callable[[Entry], None],
               meta: SessionMeta) -> Recording:
        """A session left open by the service's last run (`entries` as read back), taken up again: its ledger
        continued, its break pending (`cause`), no run begun yet. Its timeline goes on from where it is
        covered to, by the wall-clock time since then: the monotonic clock of the last run is gone. `meta` is
        what the device knows of the session now (its configuration), for the stamp and the alerts when the
        `open` entry's personal fields are sealed (the device cannot open them)."""
        opening = entries[0].opening
        assert opening is not None
        timeline = SessionRules()
        for entry in entries:
            timeline.apply(entry)
        ledger = Ledger.resume(session_dir, entries, parts.signer, parts.clock)
        ledger.subscribe(on_entry)
        covered = timeline.covered_to
        now, mono = parts.clock.now(), parts.clock.monotonic_ns()
        began = dt.datetime.fromisoformat(wall_at(entries, covered))
        media_now = covered + max(0, (now - began) // dt.timedelta(microseconds=1)) * 1000
        recording = cls(parts, ledger, opening, meta, on_fault, mono - media_now,
                        now - dt.timedelta(microseconds=media_now // 1000))
        recording.segments = [e.segment for e in entries if e.segment is not None]
        recording._resumed_at = timeline.last_end if timeline.resumed else None
        recording._accounted = len(recording.segments) - len(timeline.recovered)
        recording.pending = Break(cause, detail)
        return recording

    @property
    def segmenter(self) -> Segmenter:
        """The segmenter of the current run (the live inputs feed it)."""
        if self._run is None:
            raise CaptureError(f"session {self.session_id} is not recording: its last run has ended")
        return self._run.segmenter

    @property
    def opening(self) -> Opening:
        return self._opening

    @property
    def current_index(self) -> int:
        """The index of the segment being written, or of the next one between runs (for the stamp)."""
        return self._run.segmenter.current_index if self._run is not None else len(self.segments) + 1

    def media_time(self, mono_ns: int) -> MediaTime:
        """Where a moment of the monotonic clock lies on the session's timeline."""
        media_ns = mono_ns - self._t0_ns
        return MediaTime(media_ns, self.wall_of(media_ns))

    @property
    def covered_to(self) -> int:
        """Media time the session's timeline is accounted for up to (FORMAT §4.5, §7.1)."""
        if self._resumed_at is not None:
            return self._resumed_at
        return self.segments[-1].end if self.segments else 0

    def start_run(self) -> None:
        """Begin a run of segments; after a break, its first frame writes the break's `interruption` entry."""
        if self._run is not None:
            return
        p = self.parts
        first = len(self.segments) + 1
        sealer = Sealer(self.ledger, self._on_fault, self._segment_extra, p.spawn, first)
        segmenter = Segmenter(
            self.session_dir, p.video, p.sample_rate, p.segment_seconds, self._t0_ns, p.request_keyframe,
            sealer.submit, self._on_fault, p.recipient, first,
            self._resumed if self.pending is not None else None,
        )
        self._run = _Run(segmenter, sealer)

    def end_run(self, cause: str | None, detail: str = "") -> None:
        """Finish the current run: close its last segment, seal what it left; call after the inputs stopped.
        With a `cause`, recording is breaking off: the break is kept for its `interruption` entry. Leftover
        files the run's sealer did not commit are committed as recovered segments (which the break then
        accounts for). A storage fault here leaves the files for the next try."""
        run, self._run = self._run, None
        if cause is not None and self.pending is None:
            self.pending = Break(cause, detail)
        if run is not None:
            try:
                run.segmenter.close()
            finally:
                run.sealer.close()
                self._take([s.segment for s in run.sealer.sealed if s.segment is not None])
        # A segment a fault kept from being sealed is sealed now, so the record accounts for every file.
        before = len(self.segments)
        try:
            seal_leftovers(self.session_dir, self.ledger, self.segments, self._opening, self.parts.clock,
                           self.covered_to)
        finally:
            if len(self.segments) > before:
                self._resumed_at = None
                if self.pending is None:
                    self.pending = Break(cause or "device_fault", detail or "segments were left unsealed by a fault")

    def _take(self, sealed: list[Segment]) -> None:
        if sealed:
            self.segments.extend(sealed)
            self._resumed_at = None

    def _unaccounted(self) -> list[str]:
        return [s.file for s in self.segments[self._accounted:] if s.recovered]

    def _interruption(self, pending: Break, resumed_ns: int | None) -> Entry:
        began = self.covered_to
        body: dict[str, Any] = {"cause": pending.cause, "detail": pending.detail, "began_ns": began,
                                "began_wall": self.wall_of(began), "resumed_ns": resumed_ns}
        if resumed_ns is not None:
            body["resumed_wall"] = self.wall_of(resumed_ns)
        body["recovered_segments"] = self._unaccounted()
        entry = self.ledger.append("interruption", body)
        self.last_interruption = entry
        self._accounted = len(self.segments)
        self.pending = None
        if resumed_ns is not None:
            self._resumed_at = resumed_ns
        return entry

    def _resumed(self, start_ns: int) -> None:
        """The run after a break has its first frame (on the camera's thread, before its file is opened)."""
        assert self.pending is not None
        self._interruption(self.pending, start_ns)

    def wall_of(self, media_ns: int) -> str:
        # Added in UTC and shown in the local zone, so a daylight-saving change mid-session shifts the
        # offset, not the instant.
        instant = self._wall0.astimezone(dt.UTC) + dt.timedelta(microseconds=media_ns // 1000)
        return instant.astimezone(self._wall0.tzinfo).isoformat(timespec="milliseconds")

    def _segment_extra(self, closed: ClosedSegment) -> dict[str, Any]:
        # Every segment carries the classification fields itself (CLASSIFY), and its wall-clock span
        # as the session's start time plus the monotonic offset, so a clock step mid-session cannot
        # make segments overlap or run backwards.
        return {
            "clock_synced": self.parts.clock.is_synchronised(),
            "start_wall": self.wall_of(closed.start_ns),
            "end_wall": self.wall_of(closed.end_ns),
            "meta": self._classify,
        }

    def event(self, name: str, **details: Any) -> Entry:
        return self.ledger.append("event", {"name": name, **details})

    def close(self, reason: str, code: str, cause: str | None = None) -> Entry:
        """End the last run and write the closing entry (with `code`, FORMAT §4.6); call after the inputs
        have stopped. `cause`: recording is ending on a break (a fault that did not clear); a break not
        resumed is written as an interruption that did not resume."""
        self.end_run(cause, reason if cause is not None else "")
        if self.pending is not None:
            self._interruption(self.pending, None)
        return close_session(self.ledger, reason, code, self.segments)


def known_opening(opening: Opening, meta: SessionMeta) -> Opening:
    """`opening` as this device knows it: with its sealed personal fields taken from `meta` (the device has no
    key to open them; FORMAT §4.2.1), as it is when they are in the clear."""
    if opening.sealed is None:
        return opening
    return replace(opening, unit=meta.unit, room=meta.room, location=meta.location, case=meta.case,
                   matter=meta.matter, officers=tuple(Officer(n, c) for n, c in meta.officers),
                   parties=meta.parties)


def record_declined(parts: RecordingParts, spool_dir: Path, session_id: str, meta: SessionMeta, code: str,
                    label: str, on_entry: Callable[[Entry], None], open_extra: dict[str, Any] | None = None) -> Entry:
    """A session declined before anything was recorded (NO-RECORD): its `open`, the `declined` event with the
    reason, and its `close` (reason code `declined`, no segments), signed and sent like any other session, so
    central can count declined sessions. `open_extra` is more of the `open` body (the booking it was declined
    under). Returns the closing entry.

    Written whole in `.declining/` and then moved into the spool in one rename: a power cut half-way leaves
    no open session behind, which the next start would take up and record, in a room where recording was
    declined."""
    staging = spool_dir / DECLINING / session_id
    ledger = Ledger(staging, meta.device_id, session_id, parts.signer, parts.clock)
    written = [ledger.append("open", opening_body(
        meta, parts.signer.public_key_b64, parts.segment_seconds, parts.video, parts.sample_rate, parts.recipient,
        parts.clock.monotonic_ns(), {"clock_synced": parts.clock.is_synchronised(), **(open_extra or {})}))]
    written.append(ledger.append("event", {"name": "declined", "code": code, "label": label}))
    written.append(close_session(ledger, f"declined: {label}", "declined", []))
    commit_rename(staging, spool_dir / session_id)
    for entry in written:
        on_entry(entry)
    return written[-1]


DECLINING = ".declining"
"""The spool's staging folder for declined sessions being written (not a session: the spool skips it)."""


def wall_at(entries: list[Entry], media_ns: int) -> str:
    """The wall-clock time of a media time, as a session's own entries map one onto the other: from the last
    segment that says (`end_wall`), else from the session's opening (FORMAT §4.5 `began_wall`)."""
    base: dt.datetime | None = None
    for entry in reversed(entries):
        segment, end_wall = entry.segment, entry.body.get("end_wall")
        if segment is not None and segment.end_ns is not None and isinstance(end_wall, str):
            try:
                base = dt.datetime.fromisoformat(end_wall) - dt.timedelta(microseconds=segment.end_ns // 1000)
            except ValueError:
                continue
            break
    if base is None:
        base = dt.datetime.fromisoformat(entries[0].time)
    return (base + dt.timedelta(microseconds=media_ns // 1000)).isoformat(timespec="milliseconds")


def close_session(ledger: Ledger, reason: str, code: str, segments: list[Segment]) -> Entry:
    """The closing entry: totals over every segment of the session, so a cut tail is provable."""
    return ledger.append("close", {
        "reason": reason,
        "reason_code": code,
        "segments": len(segments),
        "entries": ledger.next_seq + 1,
        "media_bytes": sum(s.bytes for s in segments),
        "duration_ns": segments[-1].end - segments[0].start_ns if segments else 0,
        "video_frames": sum(s.video_frames or 0 for s in segments),
        "merkle_root": ledger.tree.root().hex(),
    })
