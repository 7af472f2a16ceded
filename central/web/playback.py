"""A stored session as the browser plays it (Media Source Extensions): its ledger read once, its segments on
the session's media timeline, and each segment remuxed from MPEG-TS to fragmented MP4 with PyAV, without
re-encoding, from the verified working copy (or the segment itself when it was recorded in the clear).

Each fragment keeps its place on the session's timeline (the segment's `start_ns`, from its signed entry),
so the browser lays the pieces end to end, leaves a break where the recording was interrupted, and can
start anywhere: seeking fetches the segment that holds the moment.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
from dataclasses import dataclass, replace
from typing import Any

import av
from av.bitstream import BitStreamFilterContext
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from central.errors import CentralError
from central.store import CentralStore
from evidence.entry import CLOSE, EVENT, INTERRUPTION, Entry, Opening, Segment, parse_entry, unsealed
from evidence.errors import EvidenceError, MalformedEntry
from evidence.reasons import CLOSE_REASONS, INTERRUPTION_REASONS

_MP4_OPTIONS = {
    # frag_discont with no edit list keeps each fragment's own decode times (tfdt), so fragments made one by
    # one line up on the session's timeline; without it the muxer moves every fragment to time 0.
    "movflags": "frag_keyframe+empty_moov+default_base_moof+frag_discont",
    "use_editlist": "0",
    "avoid_negative_ts": "disabled",
}
DEFAULT_CODECS = 'avc1.42E01E,mp4a.40.2'


@dataclass(frozen=True)
class Moment:
    """One thing on the session's timeline, for the page (a notice, a mark, a break, the close)."""

    seconds: float | None
    """Where it is on the media timeline (None: not within the recording)."""
    kind: str
    text: str
    time: str
    seq: int


@dataclass(frozen=True)
class Ledger:
    entries: tuple[Entry, ...]
    opening: Opening | None
    segments: tuple[Segment, ...]
    closed: bool

    def segment(self, index: int) -> Segment:
        for segment in self.segments:
            if segment.index == index:
                return segment
        raise CentralError(f"no segment {index} in this session")

    @property
    def duration_s(self) -> float:
        return max((s.end for s in self.segments), default=0) / 1e9

    def manifest(self, listed: list[Segment]) -> dict[str, Any]:
        """What the player needs: the segments `listed` (those that can be viewed now: central writes a
        segment's working copy shortly after storing it), each with its place on the media timeline, and
        whether more may come."""
        return {"closed": self.closed, "duration": round(self.duration_s, 3),
                "waiting": len(self.segments) - len(listed),
                "segments": [[s.index, round(s.start_ns / 1e9, 3), round(s.end / 1e9, 3)] for s in listed]}

    def moments(self) -> list[Moment]:
        found: list[Moment] = []
        walls = [(dt.datetime.fromisoformat(str(e.body["start_wall"])), s) for e in self.entries
                 if (s := e.segment) is not None and isinstance(e.body.get("start_wall"), str)]

        def at(wall: str | None) -> float | None:
            if not wall:
                return None
            try:
                when = dt.datetime.fromisoformat(wall)
            except ValueError:
                return None
            for start, segment in walls:
                offset = (when - start).total_seconds()
                if 0 <= offset <= (segment.end - segment.start_ns) / 1e9:
                    return round(segment.start_ns / 1e9 + offset, 3)
            after = [s for start, s in walls if start > when]
            return round(after[0].start_ns / 1e9, 3) if after else None

        for e in self.entries:
            body = e.body
            name = body.get("name") if e.kind == EVENT else None
            if name == "notice":
                found.append(Moment(at(body.get("started") or e.time), "notice",
                                    f"告知 notice played: {body.get('text', '')}", e.time, e.seq))
            elif name == "mark":
                found.append(Moment(at(e.time), "mark", f"标记 mark: {body.get('label', '')}", e.time, e.seq))
            elif name == "explanation":
                found.append(Moment(round(int(body.get("began_ns", 0)) / 1e9, 3), "explanation",
                                    f"口头说明 spoken explanation of the break (entry {body.get('interruption')})",
                                    e.time, e.seq))
            elif name == "reason":
                found.append(Moment(None, "reason", f"中断原因 reason stated: {_reason(str(body.get('code')))} "
                                                    f"({body.get('chosen')})", e.time, e.seq))
            elif name in ("fault", "cannot_continue", "clock_step"):
                found.append(Moment(at(e.time), name, f"{name}: {body.get('reason') or body.get('seconds', '')}",
                                    e.time, e.seq))
            elif e.kind == INTERRUPTION and e.interruption is not None:
                i = e.interruption
                began = None if i.began_ns is None else round(i.began_ns / 1e9, 3)
                resumed = "did not resume" if i.resumed_ns is None else f"resumed at {i.resumed_ns / 1e9:.1f} s"
                found.append(Moment(began, "interruption", f"中断 interruption: {_reason(i.cause)}; {resumed}",
                                    e.time, e.seq))
            elif e.kind == CLOSE and e.closing is not None:
                code = e.closing.reason_code
                label = CLOSE_REASONS.get(code or "", "")
                found.append(Moment(round(self.duration_s, 3), "close", f"结束 closed: {label} {e.closing.reason}",
                                    e.time, e.seq))
        return found


def _reason(code: str) -> str:
    reason = INTERRUPTION_REASONS.get(code)
    return f"{reason.zh} {code}" if reason is not None else code


def read_ledger(store: CentralStore, device: str, session: str, central_key: X25519PrivateKey | None,
                known: Ledger | None = None) -> Ledger:
    """The session's entries from seq 0 as far as they are stored without a gap. Stored entries never change,
    so with `known` (an earlier reading) only the entries stored since are read."""
    entries: list[Entry] = list(known.entries) if known is not None else []
    start = len(entries)
    while True:
        data = store.get_entry(device, session, len(entries))
        if data is None:
            break
        try:
            entries.append(parse_entry(data))
        except MalformedEntry:
            break
    if known is not None and len(entries) == start:
        return known
    opening = known.opening if known is not None else entries[0].opening if entries else None
    if start == 0 and opening is not None and opening.sealed is not None and central_key is not None:
        with contextlib.suppress(MalformedEntry):  # the page then shows the fields empty, as the index does
            opening = unsealed(opening, central_key)
        entries[0] = replace(entries[0], opening=opening)
    segments = tuple(e.segment for e in entries if e.segment is not None)
    return Ledger(tuple(entries), opening, segments, any(e.kind == CLOSE for e in entries))


def viewable(store: CentralStore, device: str, session: str, segment: Segment, sealed: bool) -> bytes:
    """The segment's MPEG-TS in the clear, checked against the hash its signed entry gives."""
    try:
        if sealed:
            data, expected = store.read_working_copy(device, session, segment.file), segment.plain_sha256
        else:
            data, expected = store.read_media(device, session, segment.file), segment.sha256
    except FileNotFoundError as err:
        raise CentralError(f"segment {segment.index}: no viewable copy is stored yet") from err
    if expected is None or hashlib.sha256(data).hexdigest() != expected:
        raise CentralError(f"segment {segment.index}: the stored copy does not match its signed entry")
    return data


def codecs(ts: bytes) -> str:
    """The RFC 6381 codecs string of a segment (H.264 profile and level from its first SPS, and AAC-LC)."""
    at = ts.find(b"\x00\x00\x01\x67")
    if at < 0 or at + 7 > len(ts):
        return DEFAULT_CODECS
    # An SPS split by a transport-stream packet header would read wrongly; the first is at the start of a key
    # frame's PES, well inside its packet.
    profile, flags, level = ts[at + 4], ts[at + 5], ts[at + 6]
    return f"avc1.{profile:02X}{flags:02X}{level:02X},mp4a.40.2"


def audio_specific_config(adts: bytes) -> bytes:
    """MP4's AudioSpecificConfig for AAC from the ADTS header that starts `adts` (ISO 14496-3 §1.6.2.1, §1.A.2.2).
    The muxer needs it before the first packet (the fragmented MP4's header is written first), and the ADTS
    to MP4 filter only finds it later."""
    if len(adts) < 7 or adts[0] != 0xFF or adts[1] & 0xF0 != 0xF0:
        raise CentralError("the segment's audio is not AAC in ADTS")
    profile = (adts[2] >> 6) + 1
    frequency = (adts[2] >> 2) & 0x0F
    channels = ((adts[2] & 0x01) << 2) | (adts[3] >> 6)
    return bytes([(profile << 3) | (frequency >> 1), ((frequency & 0x01) << 7) | (channels << 3)])


def fragment(ts: bytes, start_ns: int) -> bytes:
    """The MPEG-TS segment as one fragmented MP4 (init + fragments), its first video frame at `start_ns`."""
    try:
        with av.open(io.BytesIO(ts), "r", format="mpegts") as source:
            packets = [p for p in source.demux() if p.dts is not None and p.stream.type in ("video", "audio")]
            video = [p for p in packets if p.stream.type == "video"]
            if not video:
                raise CentralError("the segment holds no video")
            first = min(int(p.dts) for p in video if p.dts is not None)
            shift_s = start_ns / 1e9 - float(first * video[0].time_base)
            out = io.BytesIO()
            with av.open(out, "w", format="mp4", options=_MP4_OPTIONS) as sink:
                streams = {s.index: sink.add_stream_from_template(s) for s in source.streams
                           if s.type in ("video", "audio")}
                adts = {s.index: BitStreamFilterContext("aac_adtstoasc", s) for s in source.streams
                        if s.type == "audio"}
                for index in adts:
                    first_audio = next((p for p in packets if p.stream.index == index), None)
                    if first_audio is not None:
                        streams[index].codec_context.extradata = audio_specific_config(bytes(first_audio))
                for packet in packets:
                    index = packet.stream.index
                    for p in adts[index].filter(packet) if index in adts else [packet]:
                        shift = round(shift_s / float(p.time_base))
                        decode = p.dts if p.dts is not None else packet.dts
                        if decode is None:
                            continue  # never so: only packets with a decode time were taken
                        # MPEG-TS may leave a packet's presentation time out: it is then its decode time.
                        p.pts = (p.pts if p.pts is not None else decode) + shift
                        p.dts = decode + shift
                        p.stream = streams[index]
                        sink.mux(p)
            return out.getvalue()
    except (av.FFmpegError, EvidenceError) as err:
        raise CentralError(f"the segment cannot be remuxed for playback: {err}") from err
