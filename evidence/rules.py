"""The one rule book a session's ledger is judged by (FORMAT §7.1).

`SessionRules` takes a session's entries one at a time, in seq order, and raises `Violation` for the first
rule an entry breaks. `recorder verify` feeds it every entry of a stored session; central's receiver feeds
it every entry before it may receipt it. So central never receipts an entry that the verifier would reject,
and an independent verifier that follows FORMAT §7 agrees with both.
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Callable
from dataclasses import dataclass

from evidence.entry import CLOSE, GENESIS, INTERRUPTION, SEGMENT, Closing, Entry, Interruption, Opening, Segment
from evidence.errors import EvidenceError
from evidence.keys import VerifyKey, load_public_key_b64, verify_signature
from evidence.merkle import CompactTree


class Problem(enum.Enum):
    MISSING_ENTRY = "missing entry"
    MALFORMED_ENTRY = "malformed entry"
    BROKEN_CHAIN = "broken chain (entry inserted, removed, reordered or edited)"
    BAD_SIGNATURE = "bad signature"
    UNKNOWN_KEY = "unknown signing key"
    MISSING_SEGMENT = "missing segment"
    CHANGED_SEGMENT = "changed bytes"
    INSERTED_SEGMENT = "inserted segment"
    REORDERED = "segments out of order"
    TIMESTAMP_GAP = "timestamp gap"
    UNEXPLAINED_GAP = "unexplained gap (a stretch of the timeline in no segment and no interruption)"
    UNEXPLAINED_RECOVERY = "recovered segment not followed by an interruption"
    TRUNCATED = "truncated session (no closing entry or totals do not match)"
    AFTER_CLOSE = "entry after the closing entry"
    DECLINED_BUT_RECORDED = "a session closed as declined holds recorded segments"
    UNDECRYPTABLE = "sealed segment does not decrypt"
    UNDECODABLE = "undecodable segment"


@dataclass(frozen=True)
class Finding:
    problem: Problem
    where: str
    detail: str

    def __str__(self) -> str:
        return f"{self.where}: {self.problem.value}: {self.detail}"


class Violation(EvidenceError):
    """The first rule a session breaks: what, where (`entry N`, `segment I (entry N)`, `closing entry`), why."""

    def __init__(self, problem: Problem, where: str, detail: str) -> None:
        super().__init__(f"{where}: {problem.value}: {detail}")
        self.finding = Finding(problem, where, detail)


MediaCheck = Callable[[Segment, str], None]
"""Checks a segment's file against its record (raising Violation; the string says where)."""


def segment_where(segment: Segment, seq: int) -> str:
    return f"segment {segment.index} (entry {seq})"


class SessionRules:
    """A session's ledger so far, and the rules the next entry must keep."""

    def __init__(self, trusted_key: str | None = None) -> None:
        self.trusted_key = trusted_key
        """The device key obtained independently (central's enrolment): the session must be signed by it."""
        self.next_seq = 0
        self.prev = GENESIS
        self.opening: Opening | None = None
        self.device = ""
        self.session = ""
        self._key: VerifyKey | None = None
        self.tree = CompactTree()
        self.segments = 0
        self.media_bytes = 0
        self.video_frames = 0
        self.first_start: int | None = None
        self.timeline_end: int | None = None
        """Where the last segment ends, as far as the device knows (FORMAT §4.6 `duration_ns`)."""
        self.last_end: int | None = None
        """Where the timeline is covered up to: the last segment's `end_ns`, or the last interruption's
        `resumed_ns` when no segment followed it yet; None when it could not be read."""
        self.resumed = False
        """An interruption came after the last segment: the next segment starts where it says recording resumed."""
        self.halted = False
        """An interruption says recording did not resume: no segment may follow."""
        self.recovered: list[str] = []
        """Files of the recovered segments since the last interruption: an interruption must account for them."""
        self.closing: Closing | None = None

    @property
    def covered_to(self) -> int:
        """Media time the timeline is accounted for up to (FORMAT §4.5 *covered to*); where a segment of unknown
        end (recovered, encrypted) starts when the end is unknown; 0 before any segment."""
        return self.last_end if self.last_end is not None else (self.timeline_end or 0)

    def copy(self) -> SessionRules:
        twin = copy.copy(self)
        twin.tree = self.tree.copy()
        twin.recovered = list(self.recovered)
        return twin

    @staticmethod
    def check_alone(entry: Entry, trusted_key: str) -> None:
        """The rules an entry keeps whatever came before it, given the key the session must be signed with:
        what central can judge of an entry whose predecessors it does not hold yet."""
        where = f"entry {entry.seq}"
        if entry.seq == 0:
            if entry.prev != GENESIS:
                raise Violation(Problem.BROKEN_CHAIN, where, "entry 0's prev is not the genesis value")
            assert entry.opening is not None
            if entry.opening.device_key != trusted_key:
                raise Violation(Problem.UNKNOWN_KEY, where, "session is signed by a key other than the trusted one")
        if not verify_signature(load_public_key_b64(trusted_key), entry.sig, entry.signed_message):
            raise Violation(Problem.BAD_SIGNATURE, where, "signature does not verify under the device key")

    def check(self, entry: Entry, media: MediaCheck | None = None, signature_checked: bool = False) -> None:
        """Raise Violation for the first rule `entry`, as the session's next entry, breaks; change nothing.
        `media` checks a segment's file (the verifier's; central checks media as it stages it).
        `signature_checked`: the caller verified `sig` under the trusted key already (`check_alone`)."""
        where = f"entry {entry.seq}"
        if self.closing is not None:
            raise Violation(Problem.AFTER_CLOSE, where, f"a {entry.kind!r} entry follows the closing entry")
        if entry.seq != self.next_seq:
            raise Violation(Problem.REORDERED, where, f"expected entry {self.next_seq}")
        if entry.prev != self.prev:
            raise Violation(Problem.BROKEN_CHAIN, where, "prev does not match the hash of the entry before")
        key = self._key
        if entry.opening is not None:
            if self.trusted_key is not None and entry.opening.device_key != self.trusted_key:
                raise Violation(Problem.UNKNOWN_KEY, where, "session is signed by a key other than the trusted one")
            key = load_public_key_b64(entry.opening.device_key)
        elif (entry.device, entry.session) != (self.device, self.session):
            raise Violation(Problem.MALFORMED_ENTRY, where, "entry names another device or session than the opening")
        assert key is not None
        if not signature_checked and not verify_signature(key, entry.sig, entry.signed_message):
            raise Violation(Problem.BAD_SIGNATURE, where, "signature does not verify under the device key")
        if entry.segment is not None:
            self._check_segment(entry.segment, entry.seq, media)
        elif entry.interruption is not None:
            self._check_interruption(entry.interruption, where)
        elif entry.closing is not None:
            self._check_closing(entry.closing, where)

    def _check_segment(self, segment: Segment, seq: int, media: MediaCheck | None) -> None:
        where = segment_where(segment, seq)
        expected = self.segments + 1
        if segment.index != expected:
            problem = Problem.MISSING_SEGMENT if segment.index > expected else Problem.REORDERED
            raise Violation(problem, where, f"expected segment {expected}")
        if self.halted:
            raise Violation(Problem.UNEXPLAINED_GAP, where,
                            "follows an interruption that says recording did not resume (resumed_ns null)")
        if self.recovered and not segment.recovered:
            raise Violation(Problem.UNEXPLAINED_RECOVERY, where,
                            f"recovered {', '.join(self.recovered)} precede it with no interruption between")
        self._check_continues(segment.start_ns, where, "starts")
        if media is not None:
            media(segment, where)

    def _check_continues(self, start_ns: int, where: str, what: str) -> None:
        """`start_ns` must be within a frame of where the timeline is covered up to: later leaves a stretch
        nothing explains, earlier overlaps it."""
        assert self.opening is not None
        if self.last_end is None or abs(start_ns - self.last_end) <= self.opening.frame_ns:
            return
        reference = ("where the interruption before says recording resumed" if self.resumed
                     else "the end of the previous segment")
        gap_ms = (start_ns - self.last_end) / 1e6
        if gap_ms > 0:
            raise Violation(Problem.UNEXPLAINED_GAP, where, f"{what} {gap_ms:.1f} ms after {reference}")
        raise Violation(Problem.TIMESTAMP_GAP, where, f"{what} {-gap_ms:.1f} ms before {reference}")

    def _check_interruption(self, interruption: Interruption, where: str) -> None:
        if interruption.began_ns is None or self.halted:
            return  # as written before interruptions carried their times, or after one that halted: only the
            # close may follow (FORMAT §4.5)
        if list(interruption.recovered_segments) != self.recovered:
            raise Violation(Problem.UNEXPLAINED_RECOVERY, where,
                            f"recovered_segments says {list(interruption.recovered_segments)}, but the recovered "
                            f"segments since the last interruption are {self.recovered}")
        self._check_continues(interruption.began_ns, where, "begins")

    def _check_closing(self, closing: Closing, where: str) -> None:
        if closing.reason_code == "declined" and self.segments:
            raise Violation(Problem.DECLINED_BUT_RECORDED, where,
                            f"the session says it was declined, but {self.segments} segment(s) were recorded")
        if self.recovered:
            raise Violation(Problem.UNEXPLAINED_RECOVERY, where,
                            f"recovered {', '.join(self.recovered)} precede it with no interruption between")
        if closing.merkle_root != self.tree.root().hex():
            raise Violation(Problem.BROKEN_CHAIN, where, "the closing entry's Merkle root does not match the entries")
        duration = 0 if self.first_start is None or self.timeline_end is None else self.timeline_end - self.first_start
        said = (closing.segments, closing.entries, closing.media_bytes, closing.duration_ns, closing.video_frames)
        found = (self.segments, self.next_seq + 1, self.media_bytes, duration, self.video_frames)
        if said != found:
            raise Violation(Problem.TRUNCATED, "closing entry",
                            "says {} segments / {} entries / {} bytes / {} ns / {} frames, found {} / {} / {} / {} / {}"
                            .format(*said, *found))

    def apply(self, entry: Entry) -> None:
        """Take `entry` as the session's next entry (after `check` passed)."""
        if entry.opening is not None:
            self.opening = entry.opening
            self.device, self.session = entry.device, entry.session
            self._key = load_public_key_b64(entry.opening.device_key)
        if entry.kind == SEGMENT:
            assert entry.segment is not None
            s = entry.segment
            self.segments += 1
            self.media_bytes += s.bytes
            self.video_frames += s.video_frames or 0
            if self.first_start is None:
                self.first_start = s.start_ns
            # A sealed segment recovered after a crash has no end the device could read: the next segment's
            # start is not compared with it (FORMAT §4.5).
            self.last_end = s.end_ns
            self.timeline_end = s.end
            self.resumed = False
            if s.recovered:
                self.recovered.append(s.file)
        elif entry.kind == INTERRUPTION:
            assert entry.interruption is not None
            i = entry.interruption
            self.recovered = []
            if i.began_ns is None or i.resumed_ns is None:
                self.halted = True
            else:
                self.last_end, self.resumed = i.resumed_ns, True
        elif entry.kind == CLOSE:
            self.closing = entry.closing
        self.tree.append(bytes.fromhex(entry.hash))
        self.prev = entry.hash
        self.next_seq = entry.seq + 1

    def admit(self, entry: Entry, media: MediaCheck | None = None, signature_checked: bool = False) -> None:
        self.check(entry, media, signature_checked)
        self.apply(entry)

    def finish(self) -> None:
        """At the end of what is stored: the session must be closed."""
        if self.closing is None:
            raise Violation(Problem.TRUNCATED, f"entry {self.next_seq}", "the session has no closing entry")
