"""The evidence export package (ARCHIVE; FORMAT §14): for a session, or a time range of it, the original sealed
segments and entries, the device's enrollment record, the session's register, a manifest of hashes signed by
central, the standalone verifier with instructions, playable decrypted copies and the written note (文字说明)
as a PDF in Chinese, as one ISO 9660 image ready to burn to disc (刻制成光盘).

The originals go into the image straight from the store, read once: each file's hash is the one its signed
entry gives, the manifest is made from those, and the image writer checks every byte it copies against them,
so an original changed in the store stops the export instead of being sealed into it. The entries' chain and
signatures are judged by the session rules first. The image is kept at central (a copy kept, ACCESS) and the
export is recorded in the session's register and in the audit.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import secrets
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from central.errors import CentralError
from central.export.iso import IsoFile, write_iso
from central.export.note_pdf import WrittenNote, write_note_pdf
from central.register import Actor, Registers
from central.store import FileStore
from evidence import standalone
from evidence.audit import AuditRecord
from evidence.canonical import canonical
from evidence.entry import CLOSE, Entry, Opening, unsealed
from evidence.merkle import inclusion_proof
from evidence.package import (
    ENROLLMENT,
    EXPORT_FORMAT,
    MANIFEST,
    MANIFEST_SIG,
    PLAYABLE_DIR,
    PROOFS,
    REGISTER_COPY,
    SESSION_DIR,
    manifest_message,
)
from evidence.reasons import CLOSE_REASONS, INTERRUPTION_REASONS
from evidence.rules import SessionRules, Violation

LAUNCHER = Path(__file__).with_name("verify_export.py")
"""The verifier's entry point as it goes into the package (verifier/verify_export.py)."""
METHOD = ("固定式同步录音录像设备在询问室（听证室）内连续录制：H.264 视频、AAC 音频，按 MPEG-TS 分段保存；"
          "每一段在录制时即由设备计算 SHA-256 哈希，以设备的 Ed25519 密钥签名，并与前一段链接封存"
          "（哈希链与 Merkle 树），实时传送至中心存储，由中心逐段校验并签收。本光盘中的原始文件未经任何剪辑、删改。"
          " Recorded continuously by the room's fixed recorder; each segment hashed, signed by the device and "
          "chained as it was recorded, received and checked by central; the originals on this disc are unedited.")


@dataclass(frozen=True)
class TimeRange:
    """A part of the session on its media timeline, in seconds from the start of the recording."""

    start_s: float
    end_s: float

    def __post_init__(self) -> None:
        if not (0 <= self.start_s < self.end_s) or self.end_s != self.end_s:
            raise CentralError(f"the range {self.start_s}–{self.end_s} s is not a time range within the recording: "
                               "give a start of at least 0 and an end after it")


@dataclass(frozen=True)
class Exported:
    image: Path
    bytes: int
    files: int
    media_bytes: int
    segments: int
    manifest_sha256: str
    seconds: float
    record_seq: int


def _judge(entries: Sequence[Entry], trusted_key: str | None) -> None:
    """The session rules over the whole ledger (chain, signatures, order, totals), media aside: the image
    writer checks every media byte against these entries as it copies it."""
    rules = SessionRules(trusted_key)
    try:
        for expected, entry in enumerate(entries):
            if entry.seq != expected:
                raise CentralError(f"entry {expected} is missing: the session is not whole and is not exported")
            rules.admit(entry)
        rules.finish()
    except Violation as violation:
        raise CentralError(f"the session does not verify ({violation.finding}): it is not exported; have it "
                           "looked at (`recorder verify`)") from violation


def _select(entries: Sequence[Entry], part: TimeRange | None) -> tuple[list[Entry], dict[str, list[str]]]:
    """The entries the package holds, and for a range the inclusion proof of each (but the close) against the
    Merkle root the closing entry signs (FORMAT §3.6)."""
    if part is None:
        return list(entries), {}
    close = entries[-1]
    lo, hi = part.start_s * 1e9, part.end_s * 1e9
    hits = [e.seq for e in entries if e.segment is not None and e.segment.start_ns < hi and e.segment.end > lo]
    if not hits:
        length = max((e.segment.end for e in entries if e.segment), default=0) / 1e9
        raise CentralError(f"no segment of the session lies within {part.start_s:g}–{part.end_s:g} s "
                           f"(the recording lasts {length:.1f} s)")
    # Everything between the segment before the range and the one after it: the breaks, explanations and
    # notices at the range's edges travel with it.
    before = max((e.seq for e in entries if e.segment is not None and e.seq < hits[0]), default=0)
    after = min((e.seq for e in entries if e.segment is not None and e.seq > hits[-1]), default=close.seq)
    run = [e for e in entries if before < e.seq < after]
    chosen = [entries[0], *run, close]
    leaves = [bytes.fromhex(e.hash) for e in entries[:close.seq]]
    proofs = {str(e.seq): [h.hex() for h in inclusion_proof(leaves, e.seq)] for e in chosen if e.kind != CLOSE}
    return chosen, proofs


def _when(text: str, zone: dt.tzinfo) -> str:
    return dt.datetime.fromisoformat(text).astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %z")


def _note(device: str, opening: Opening, entries: Sequence[Entry], chosen: Sequence[Entry], part: TimeRange | None,
          actor: Actor, role_label: str, zone: dt.tzinfo, manifest_sha256: str, media_bytes: int) -> WrittenNote:
    close = entries[-1]
    assert close.closing is not None
    breaks = []
    for e in entries:
        if e.interruption is not None:
            i = e.interruption
            reason = INTERRUPTION_REASONS.get(i.cause)
            resumed = ("未能恢复 did not resume" if i.resumed_ns is None
                       else f"于第 {i.resumed_ns / 1e9:.1f} 秒恢复 resumed")
            began = "" if i.began_ns is None else f"第 {i.began_ns / 1e9:.1f} 秒起 from {i.began_ns / 1e9:.1f} s, "
            breaks.append(f"{_when(e.time, zone)}：{began}{reason.zh if reason else i.cause}（{i.cause}），{resumed}")
    segments = [e.segment for e in chosen if e.segment is not None]
    duration = close.closing.duration_ns / 1e9
    range_text = "" if part is None else (
        f"本光盘只含该次录制的一段：第 {part.start_s:g} 秒至第 {part.end_s:g} 秒（{len(segments)} 个分段），以 Merkle "
        "包含证明证明其属于该次录制。 A part of the session only, proven to belong to it by Merkle inclusion proofs.")
    code = close.closing.reason_code or ""
    return WrittenNote(
        matter=opening.matter, case=opening.case, unit=opening.unit, room=opening.room, location=opening.location,
        started=_when(entries[0].time, zone), ended=_when(close.time, zone),
        duration=f"{int(duration // 3600)} 小时 {int(duration % 3600 // 60)} 分 {duration % 60:.0f} 秒",
        method=METHOD, device=device, officers=tuple((o.name, o.certificate) for o in opening.officers),
        parties=opening.parties, taken_by=f"{actor.name}（{role_label}）",
        taken_at=dt.datetime.now(zone).strftime("%Y-%m-%d %H:%M:%S %z"),
        contents=(("原始分段 original segments", f"{len(segments)} 个，共 {media_bytes:,} 字节"),
                  ("台账条目 ledger entries", f"{len(chosen)} 条（全部 {len(entries)} 条）"),
                  ("结束原因 how it ended", f"{CLOSE_REASONS.get(code, code)} {close.closing.reason}".strip()),
                  ("可播放副本 playable copies", f"{PLAYABLE_DIR}/ (MPEG-TS)"),
                  ("校验程序 verifier", "verifier/verify_export.py (Python 3.11+)")),
        interruptions=tuple(breaks) or ("无 none",),
        verification=("导出前，中心按设备签名、哈希链与封存记录逐条校验了全部台账条目，"
                      "并在写入光盘时逐字节核对了每个原始分段的 SHA-256。任何人可在脱机状态下运行光盘上的校验程序复核。"
                      " Before export central checked every entry's "
                      "signature and chain, and every original's SHA-256 byte for byte as it was written to the disc; "
                      "anyone can check it again offline with the verifier on the disc."),
        manifest_sha256=manifest_sha256, range_text=range_text)


README = """证据光盘 Evidence disc — {device} / {session}

内容 Contents
  NOTE.pdf           文字说明（事由、时间、地点、录制方式、执法人员、提取人） the written note
  session/           原始分段与台账条目，设备签名封存 the original sealed segments and ledger entries
  playable/          解密后的可播放副本（MPEG-TS，用 VLC 等打开 session.m3u8） playable copies
  enrollment.json    设备登记记录（设备公钥） the device's enrollment record (its public keys)
  {register}{proofs}MANIFEST.json      全部文件的 SHA-256 清单 the SHA-256 of every file
  MANIFEST.sig       中心对清单的签名 central's signature over MANIFEST.json
  verifier/          脱机校验程序 the offline verifier

校验 To verify (需要 Python 3.11 或更高版本，无需联网、无需安装其他软件 / Python 3.11+, nothing else, offline):
  python3 verifier/verify_export.py . --central-key {central_key}
  在光盘根目录运行（或将光盘内容复制到任一文件夹后在该文件夹运行）。Run it in the disc's top folder.
  中心签名公钥应与本单位公布的一致 The central key must be the one the agency publishes: {central_key}
  校验程序本身应与本单位公布的校验程序一致（比对其 SHA-256），否则应使用本单位公布的版本。
  The verifier on the disc is itself checked only against the manifest: to trust it, compare its SHA-256 with
  the copy the agency publishes, or run the agency's copy on this disc.
  结果最后一行为 "RESULT    OK" 即表示：光盘内容与中心签名一致，录像与设备封存一致、未被改动。
  The last line says "RESULT    OK" when the disc is as central signed it and the recording as the device sealed it.
"""


def export_session(store: FileStore, registers: Registers, central_key: X25519PrivateKey | None, device: str,
                   session: str, actor: Actor, role_label: str, approval: dict[str, Any], zone: dt.tzinfo,
                   part: TimeRange | None = None, font: Path | None = None) -> Exported:
    """Build the package of `device`/`session` (or `part` of it) as an ISO image kept at central, signed with
    the key that signs the registers and the audit; record the export in the session's register and the
    audit, and return where the image is. `approval` says who approved it (kept in the manifest)."""
    started = time.monotonic()
    sign, signing_public_b64 = registers.audit.sign, registers.audit.public_key_b64
    try:
        entries = store.entries(device, session)
    except CentralError as err:
        raise CentralError(f"{err}: the session is not whole and is not exported; run `recorder central sweep`") \
            from err
    if not entries or entries[-1].closing is None:
        raise CentralError(f"{device}/{session} has no closing entry yet: a session is exported once it is whole")
    trusted = store.session_key(device, session)
    _judge(entries, trusted)
    opening = entries[0].opening
    assert opening is not None
    if opening.sealed is not None:
        if central_key is None:
            raise CentralError("the session's names and places are sealed to central's key and "
                               "receiver.private_key_file is not set: the written note cannot be made")
        opening = unsealed(opening, central_key)
    chosen, proofs = _select(entries, part)
    segments = [e.segment for e in chosen if e.segment is not None]
    _not_removed(registers.records(device, session, checked=True))
    sealed = opening.encrypted
    name = (dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + f"-{secrets.token_hex(3)}"
            + ("" if part is None else f"-{part.start_s:g}-{part.end_s:g}s") + ".iso")
    image = store.export_path(device, session, name)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=image.parent))
    written = False
    try:
        files: list[tuple[str, Path, str, int]] = []  # (name in the package, source, sha256, bytes)
        base = f"{SESSION_DIR}/{session}"
        for e in chosen:
            name = f"{base}/entries/{e.seq:08d}.json"
            files.append((name, _small(work, name, e.raw), hashlib.sha256(e.raw).hexdigest(), len(e.raw)))
        folder = store.session_dir(device, session)
        playlist = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:"
                    + str(max((int((s.end - s.start_ns) / 1e9) + 1 for s in segments), default=1))]
        for s in segments:
            files.append((f"{base}/media/{s.file}", folder / "media" / s.file, s.sha256, s.bytes))
            if sealed:
                if (s.plain_sha256 is None or s.plain_bytes is None
                        or not store.has_working_copy(device, session, s.file)):
                    continue
                plain, digest, size = folder / "plain" / s.file, s.plain_sha256, s.plain_bytes
            else:
                plain, digest, size = folder / "media" / s.file, s.sha256, s.bytes
            files.append((f"{PLAYABLE_DIR}/{s.file}", plain, digest, size))
            playlist += [f"#EXTINF:{(s.end - s.start_ns) / 1e9:.3f},", s.file]
        playlist.append("#EXT-X-ENDLIST")
        extra: dict[str, bytes] = {
            f"{PLAYABLE_DIR}/session.m3u8": ("\n".join(playlist) + "\n").encode(),
            ENROLLMENT: json.dumps({"device": device, "keys": store.device_keys(device),
                                    "central_signing_key": signing_public_b64}, ensure_ascii=False,
                                   indent=1, default=str).encode(),
        }
        register = store.register_file(device, session, create=False)
        if register.exists():  # checked above (records(checked=True)); a torn tail is not a record
            extra[REGISTER_COPY] = b"".join(r.raw + b"\n" for r in registers.records(device, session, checked=True))
        if part is not None:
            extra[PROOFS] = json.dumps(proofs, indent=1).encode()
        extra["README.txt"] = README.format(
            device=device, session=session, central_key=signing_public_b64,
            register=(f"{REGISTER_COPY:<19}中心对该次录制的登记（保存期限、说明等），由中心签名 central's signed "
                      "register\n  ") if REGISTER_COPY in extra else "",
            proofs=f"{PROOFS:<19}Merkle 包含证明 inclusion proofs\n  " if part else "").encode()
        for source in standalone.verifier_sources():
            extra[f"verifier/evidence/{source.name}"] = source.read_bytes()
        extra["verifier/verify_export.py"] = LAUNCHER.read_bytes()
        for name, data in extra.items():
            files.append((name, _small(work, name, data), hashlib.sha256(data).hexdigest(), len(data)))
        media_bytes = sum(s.bytes for s in segments)
        # The note names the manifest's hash, and the manifest lists the note: the note names the hash of the
        # manifest of every other file, which the signed manifest then seals together with the note.
        listed = sorted(files)
        inner = canonical({"files": [{"name": n, "sha256": h, "bytes": b} for n, _, h, b in listed]})
        note = _note(device, opening, entries, chosen, part, actor, role_label, zone,
                     hashlib.sha256(inner).hexdigest(), media_bytes)
        note_path = work / "NOTE.pdf"
        write_note_pdf(note, note_path, **({"font": font} if font else {}))
        note_bytes = note_path.read_bytes()
        files.append(("NOTE.pdf", note_path, hashlib.sha256(note_bytes).hexdigest(), len(note_bytes)))
        close = entries[-1]
        assert close.closing is not None
        manifest = canonical({
            "format": EXPORT_FORMAT, "device": device, "session": session,
            "created": dt.datetime.now(zone).isoformat(timespec="seconds"),
            "created_by": {"name": actor.name, "role": actor.role}, "approval": approval,
            "range": None if part is None else {"start_s": part.start_s, "end_s": part.end_s},
            "central_signing_key": signing_public_b64, "device_key": opening.device_key,
            "close_hash": close.hash, "merkle_root": close.closing.merkle_root,
            "files": [{"name": n, "sha256": h, "bytes": b} for n, _, h, b in sorted(files)]})
        signature = sign(manifest_message(manifest))
        files.append((MANIFEST, _small(work, MANIFEST, manifest), "", len(manifest)))
        files.append((MANIFEST_SIG, _small(work, MANIFEST_SIG, (signature + "\n").encode()), "", len(signature) + 1))
        write_iso(image, [IsoFile(n, p, b, h or None) for n, p, h, b in files], f"EVID_{session[:8]}")
        written = True
        manifest_sha256 = hashlib.sha256(manifest).hexdigest()
        record = registers.append(device, session, actor, "export", {
            "image": image.name, "bytes": image.stat().st_size, "manifest_sha256": manifest_sha256,
            "range": None if part is None else {"start_s": part.start_s, "end_s": part.end_s},
            "segments": len(segments), "approval": approval}, _not_removed)
    except BaseException:
        if written:  # this call's image, never another export's: the names are unique
            with contextlib.suppress(FileNotFoundError):
                image.unlink()
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Exported(image, image.stat().st_size, len(files), media_bytes, len(segments), manifest_sha256,
                    time.monotonic() - started, record.seq)


def _not_removed(records: list[AuditRecord]) -> None:
    if any(r.action == "removal" for r in records):
        raise CentralError("the session's recordings were removed after their retention expired: nothing to export")


def _small(work: Path, name: str, data: bytes) -> Path:
    """A generated file of the package, written where the image writer reads it from."""
    path = work / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path



