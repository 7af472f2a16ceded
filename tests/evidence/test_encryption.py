"""Write-only encryption at rest: what the device stores it cannot read; central can, and checks it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import av
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from capture.probe import decodes
from evidence import layout
from evidence.encryption import MAGIC, open_sealed, seal_bytes
from evidence.errors import DecryptionError
from evidence.verify import verify_session
from provisioning.central_key import load_central_key
from tests.conftest import RecordedSession
from tests.media import entries


def central(recorded: RecordedSession) -> X25519PrivateKey:
    return load_central_key(Path(recorded.rig.central.receiver.private_key_file))


def sealed_segments(session_dir: Path) -> list[tuple[dict[str, object], bytes]]:
    return [(e["body"], layout.media_path(session_dir, e["body"]["file"]).read_bytes())
            for e in entries(session_dir) if e["kind"] == "segment"]


def test_spool_segments_are_unreadable_without_centrals_key__NO_LEAK(recorded: RecordedSession) -> None:
    assert entries(recorded.spool_dir)[0]["body"]["encryption"]["scheme"].startswith("x25519-hkdf-sha256-aes256gcm")
    for _, data in sealed_segments(recorded.spool_dir):
        assert data.startswith(MAGIC)
        assert data.count(b"\x47") < len(data) / 100, "MPEG-TS sync bytes show through"
        with pytest.raises(DecryptionError):
            open_sealed(data, X25519PrivateKey.generate())  # any key but central's, the device's included
    with pytest.raises(av.FFmpegError), av.open(str(layout.media_path(recorded.spool_dir, "000001.ts"))) as ts:
        next(ts.decode(video=0))
    keys = {p.name for p in (recorded.rig.config.keys_dir).iterdir()}
    assert keys == {"device-ed25519.pem"}, "the device keeps no key that opens its recordings"


def test_central_decrypts_and_the_plaintext_matches_the_seal__NO_LEAK(recorded: RecordedSession) -> None:
    key = central(recorded)
    for body, data in sealed_segments(recorded.central_dir):
        opened = open_sealed(data, key)
        assert opened.complete
        assert hashlib.sha256(opened.plaintext).hexdigest() == body["plain_sha256"]
        working = (recorded.central_dir / "plain" / str(body["file"])).read_bytes()
        assert working == opened.plaintext
    report = verify_session(recorded.central_dir, recorded.rig.service.identity.public_key_b64, decode=decodes,
                            central_key=key)
    assert report.ok and not report.notes
    # The device's spool holds the same sealed bytes central does: integrity checks without the key.
    for (_, on_device), (_, at_central) in zip(sealed_segments(recorded.spool_dir),
                                               sealed_segments(recorded.central_dir), strict=True):
        assert on_device == at_central


def test_each_segment_has_its_own_data_key__NO_LEAK(recorded: RecordedSession) -> None:
    headers = {data[: len(MAGIC) + 32] for _, data in sealed_segments(recorded.spool_dir)}
    assert len(headers) == len(sealed_segments(recorded.spool_dir))


def test_cut_off_sealed_file_opens_up_to_its_last_whole_record() -> None:
    key = X25519PrivateKey.generate()
    plain = os.urandom(20_000)
    sealed = seal_bytes(plain, key.public_key())
    whole = open_sealed(sealed, key)
    assert whole.complete and whole.plaintext == plain
    cut = open_sealed(sealed[:-5000], key)
    assert not cut.complete and plain.startswith(cut.plaintext) and len(cut.plaintext) >= 12_000


def test_changed_ciphertext_byte_fails_authentication__NO_EDIT() -> None:
    key = X25519PrivateKey.generate()
    sealed = bytearray(seal_bytes(os.urandom(10_000), key.public_key()))
    sealed[len(sealed) // 2] ^= 0x01
    with pytest.raises(DecryptionError, match="does not authenticate"):
        open_sealed(bytes(sealed), key)



def test_forged_header_key_is_refused_not_crashed_on__NO_EDIT() -> None:
    key = X25519PrivateKey.generate()
    sealed = bytearray(seal_bytes(os.urandom(1000), key.public_key()))
    sealed[len(MAGIC) : len(MAGIC) + 32] = bytes(32)  # a low-order point in place of the ephemeral key
    with pytest.raises(DecryptionError, match="header"):
        open_sealed(bytes(sealed), key)
