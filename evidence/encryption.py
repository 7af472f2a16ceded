"""Write-only encryption at rest (NO-LEAK): each segment file is sealed to central's X25519 key.

Per segment, a fresh ephemeral X25519 key agrees a secret with central's public key; HKDF-SHA256 turns
it into a one-off AES-256-GCM data key, and the ephemeral private key is dropped at once. So the device
can write a segment but never read one back — nor can anyone who takes the device. Central, holding
the private key, derives the same data key from the ephemeral public key in the file header.

The file is a stream of AEAD records, one per write FFmpeg makes, so a segment cut off by a crash or
a power cut loses at most its last record, and the plaintext never touches the disk:

    header   b"RRSEAL1\\n" (8 bytes) || ephemeral X25519 public key (32 bytes)
    record   4-byte big-endian length N || N bytes of AES-256-GCM ciphertext with its 16-byte tag
    nonce    4 bytes flag (0 = more records follow, 1 = final record) || 8-byte big-endian record number
    AAD      the 40-byte header
A cleanly closed file ends with an empty final record, so a cut-off file is told from a whole one.
"""

from __future__ import annotations

import base64
import hashlib
import io
import struct
from dataclasses import dataclass
from typing import BinaryIO

from evidence.errors import DecryptionError, EvidenceError

try:
    from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
except ImportError as err:  # verifying needs nothing but Python (FORMAT §7.5); sealing and opening do
    raise EvidenceError("decrypting needs the Python package cryptography, which is not installed here "
                        "(pip install cryptography); verifying without decrypting does not") from err

SCHEME = "x25519-hkdf-sha256-aes256gcm-records-v1"
MAGIC = b"RRSEAL1\n"
HEADER_BYTES = len(MAGIC) + 32
_INFO = b"room-recorder/segment/v1"
_TAG = 16
_MAX_RECORD = 1 << 24


def _raw(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_from_b64(text: str) -> X25519PublicKey:
    try:
        return X25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except ValueError as err:
        raise EvidenceError(f"not a base64 X25519 public key: {text[:60]!r}") from err


def public_key_b64(key: X25519PublicKey) -> str:
    return base64.b64encode(_raw(key)).decode("ascii")


def private_key_from_pem(data: bytes) -> X25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:  # TypeError: it is encrypted
        raise EvidenceError("not an unencrypted PEM private key") from err
    if not isinstance(key, X25519PrivateKey):
        raise EvidenceError(f"central's key must be X25519, not {type(key).__name__}")
    return key


def private_key_pem(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write_all(raw: BinaryIO, data: bytes) -> None:
    # An unbuffered file may take less than it was given; what is hashed must be what is on disk.
    view = memoryview(data)
    while view:
        view = view[raw.write(view) or 0 :]


def _data_key(shared: bytes, ephemeral: bytes, recipient: bytes) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=ephemeral + recipient, info=_INFO)
    return AESGCM(hkdf.derive(shared))


def _nonce(counter: int, final: bool) -> bytes:
    return struct.pack(">IQ", 1 if final else 0, counter)


class SealingWriter:
    """A write-only file object for PyAV: encrypts each write as one record; hashes the plaintext."""

    def __init__(self, raw: BinaryIO, recipient: X25519PublicKey) -> None:
        ephemeral = X25519PrivateKey.generate()
        eph_raw = _raw(ephemeral.public_key())
        self._aead = _data_key(ephemeral.exchange(recipient), eph_raw, _raw(recipient))
        self._header = MAGIC + eph_raw
        self._raw = raw
        self._counter = 0
        self.plain = hashlib.sha256()
        self.plain_bytes = 0
        self.stored = hashlib.sha256()
        """What reaches the file, hashed on the way, so sealing never reads the segment back."""
        self.stored_bytes = 0
        self._out(self._header)

    def _out(self, data: bytes) -> None:
        _write_all(self._raw, data)
        self.stored.update(data)
        self.stored_bytes += len(data)

    def _record(self, data: bytes, final: bool) -> None:
        sealed = self._aead.encrypt(_nonce(self._counter, final), data, self._header)
        self._out(struct.pack(">I", len(sealed)) + sealed)
        self._counter += 1

    def write(self, data: bytes) -> int:
        chunk = bytes(data)
        if chunk:
            self.plain.update(chunk)
            self.plain_bytes += len(chunk)
            self._record(chunk, final=False)
        return len(data)

    def close(self) -> None:
        self._record(b"", final=True)
        self._raw.close()


def seal_bytes(plain: bytes, recipient: X25519PublicKey, record_bytes: int = 4136) -> bytes:
    """A whole sealed file in memory, records cut as FFmpeg would write them (tests and benchmarks)."""
    out = io.BytesIO()
    writer = SealingWriter(out, recipient)
    for start in range(0, len(plain), record_bytes):
        writer.write(plain[start : start + record_bytes])
    writer._record(b"", final=True)
    return out.getvalue()


class PlainWriter:
    """The same interface without encryption, for a device configured without central's key."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.plain = self.stored = hashlib.sha256()
        self.plain_bytes = 0

    @property
    def stored_bytes(self) -> int:
        return self.plain_bytes

    def write(self, data: bytes) -> int:
        self.plain.update(data)
        self.plain_bytes += len(data)
        _write_all(self._raw, bytes(data))
        return len(data)

    def close(self) -> None:
        self._raw.close()


@dataclass(frozen=True)
class Opened:
    plaintext: bytes
    complete: bool
    """False when the final record is missing: the segment was cut off (crash) or truncated."""


def _open_record(aead: AESGCM, counter: int, body: bytes, header: bytes) -> tuple[bytes, bool]:
    """A record's plaintext, and whether it is the final one (its nonce says so)."""
    for final in (False, True):
        try:
            return aead.decrypt(_nonce(counter, final), body, header), final
        except InvalidTag:
            continue
    raise DecryptionError(f"record {counter} does not authenticate: wrong key or changed bytes")


def open_sealed(data: bytes, key: X25519PrivateKey) -> Opened:
    """Decrypt a sealed segment with central's private key, as far as its records are whole."""
    if len(data) < HEADER_BYTES or data[: len(MAGIC)] != MAGIC:
        raise DecryptionError("not a sealed segment (no RRSEAL1 header)")
    header = data[:HEADER_BYTES]
    try:
        shared = key.exchange(X25519PublicKey.from_public_bytes(header[len(MAGIC) :]))
    except ValueError as err:  # a low-order point: only a forged header has one
        raise DecryptionError("the header's ephemeral key is not usable: the header was changed") from err
    aead = _data_key(shared, header[len(MAGIC) :], _raw(key.public_key()))
    out = bytearray()
    offset, counter = HEADER_BYTES, 0
    while offset + 4 <= len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        if length < _TAG or length > _MAX_RECORD:
            raise DecryptionError(f"record {counter} has an impossible length {length}")
        body = data[offset + 4 : offset + 4 + length]
        if len(body) < length:
            break  # the last record was cut off mid-write
        plain, final = _open_record(aead, counter, body, header)
        offset += 4 + length
        counter += 1
        out += plain
        if final:
            if offset != len(data):
                raise DecryptionError("bytes follow the final record")
            return Opened(bytes(out), complete=True)
    return Opened(bytes(out), complete=False)
