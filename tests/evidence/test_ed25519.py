"""The pure-Python Ed25519 verification (evidence/ed25519.py) against RFC 8032's test vectors, and against
`cryptography` (OpenSSL) on random signatures, tampered ones and the edge cases where Ed25519 verifiers are
known to differ: a verifier in court must accept and refuse exactly what the recorder's own checks do."""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import random

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from evidence import ed25519, keys
from evidence.ed25519 import L, P, PublicKey, decode_point, encode_point
from evidence.errors import EvidenceError
from evidence.keys import VerifyKey, load_public_key_b64, verify_signature

# RFC 8032 §7.1: (secret key, public key, message, signature), hex.
RFC8032 = [
    ("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f059"
     "5bbe24655141438e7a100b"),
    ("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4"
     "302aeeb00d291612bb0c00"),
    ("c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
     "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e971"
     "6ed28dc027beceea1ec40a"),
    ("833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
     "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
     hashlib.sha512(b"abc").hexdigest(),
     "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e0303dca179c13"
     "8ac17ad9bef1177331a704"),
]



def _point(raw: bytes) -> ed25519.Point:
    point = decode_point(raw)
    assert point is not None
    return point


BASE = _point((4 * pow(5, -1, P) % P).to_bytes(32, "little"))
SMALL_ORDER = [
    "0100000000000000000000000000000000000000000000000000000000000000",  # the identity
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # (0, −1), order 2
    "0000000000000000000000000000000000000000000000000000000000000000",  # order 4
    "0000000000000000000000000000000000000000000000000000000000000080",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
]
IDENTITY_NOT_CANONICAL = [
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p + 1
    "0100000000000000000000000000000000000000000000000000000000000080",  # x = 0 with the sign bit set
]


def _add(a: ed25519.Point, b: ed25519.Point) -> ed25519.Point:
    """RFC 8032 §5.1.4's addition, written out here so the test does not lean on the module's own."""
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    aa, bb = (y1 - x1) * (y2 - x2) % P, (y1 + x1) * (y2 + x2) % P
    cc, dd = 2 * t1 * t2 * ed25519.D % P, 2 * z1 * z2 % P
    e, f, g, h = bb - aa, dd - cc, dd + cc, bb + aa
    return e * f % P, g * h % P, f * g % P, e * h % P


def _mul(n: int, point: ed25519.Point) -> ed25519.Point:
    result: ed25519.Point = (0, 1, 1, 0)
    while n:
        if n & 1:
            result = _add(result, point)
        point, n = _add(point, point), n >> 1
    return result


def openssl(raw: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(signature, message)
    except InvalidSignature:
        return False
    return True


@functools.cache
def _key(raw: bytes) -> PublicKey:
    return PublicKey(raw)  # one per key, as a verifier holds it: its table is built once


def pure(raw: bytes, signature: bytes, message: bytes) -> bool:
    return _key(raw).verify(signature, message)


def _flip(data: bytes, rng: random.Random) -> bytes:
    changed = bytearray(data)
    changed[rng.randrange(len(changed))] ^= 1 << rng.randrange(8)
    return bytes(changed)


def test_rfc8032_test_vectors__TAMPER_PROOF_IT() -> None:
    for secret, public, message_hex, signature_hex in RFC8032:
        raw, message, signature = bytes.fromhex(public), bytes.fromhex(message_hex), bytes.fromhex(signature_hex)
        signer = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(secret))
        assert signer.public_key().public_bytes_raw() == raw and signer.sign(message) == signature  # typed right
        assert pure(raw, signature, message)
        assert not pure(raw, signature, message + b"\x00")
        assert not pure(raw, signature[:63] + bytes([signature[63] ^ 0x01]), message)
        assert not pure(raw, signature[:-1], message)


def test_agrees_with_cryptography_on_random_and_tampered_signatures__TAMPER_PROOF_IT() -> None:
    rng = random.Random(8032)
    verdicts: list[tuple[str, bool]] = []
    for i in range(200):
        signer = Ed25519PrivateKey.generate()
        raw = signer.public_key().public_bytes_raw()
        message = os.urandom(i % 97)
        signature = signer.sign(message)
        s = int.from_bytes(signature[32:], "little")
        cases = {
            "as signed": (raw, signature, message),
            "signature bit flipped": (raw, _flip(signature, rng), message),
            "message changed": (raw, signature, _flip(message, rng) if message else b"\x00"),
            "S + L": (raw, signature[:32] + (s + L).to_bytes(32, "little"), message),
            "R's sign bit flipped": (raw, signature[:31] + bytes([signature[31] ^ 0x80]) + signature[32:], message),
            "key's sign bit flipped": (raw[:31] + bytes([raw[31] ^ 0x80]), signature, message),
            "random key bytes": (os.urandom(32), signature, message),
        }
        for name, (key, sig, msg) in cases.items():
            verdict = openssl(key, sig, msg)
            assert pure(key, sig, msg) == verdict, f"{name}: cryptography says {verdict}"
            verdicts.append((name, verdict))
    assert {name for name, ok in verdicts if ok} == {"as signed"}
    assert sum(ok for _, ok in verdicts) == 200


def test_small_order_and_not_canonical_keys_are_judged_as_openssl_judges_them__TAMPER_PROOF_IT() -> None:
    rng = random.Random(25519)
    for encoded in SMALL_ORDER + IDENTITY_NOT_CANONICAL:
        raw = bytes.fromhex(encoded)
        assert encode_point(_mul(8, _point(raw))) == bytes.fromhex(SMALL_ORDER[0])
        accepted = 0
        for _ in range(24):
            # With a key of small order, [S]B − [k]A is [S]B whenever [k]A is the identity.
            s = rng.randrange(L)
            r = encode_point(_mul(s, BASE))
            message = rng.randbytes(8)
            for signature in (r + s.to_bytes(32, "little"), r + (s + L).to_bytes(32, "little")):
                verdict = openssl(raw, signature, message)
                assert pure(raw, signature, message) == verdict, encoded
                accepted += verdict
        if encoded in (SMALL_ORDER[0], *IDENTITY_NOT_CANONICAL):
            assert accepted == 24, "OpenSSL takes the identity, however encoded, and so must we"
    # A y with no x: OpenSSL loads the key and refuses every signature under it.
    undecodable = [y.to_bytes(32, "little") for y in range(2, 60) if decode_point(y.to_bytes(32, "little")) is None]
    assert len(undecodable) > 10
    for raw in undecodable:
        signature = encode_point(_mul(5, BASE)) + (5).to_bytes(32, "little")
        assert not openssl(raw, signature, b"") and not pure(raw, signature, b"")


def test_r_is_compared_as_encoded_not_decoded__TAMPER_PROOF_IT() -> None:
    identity = bytes.fromhex(SMALL_ORDER[0])
    zero = bytes(32)  # S = 0: [S]B − [k]A is the identity
    for r, verdict in ((identity, True), (bytes.fromhex(IDENTITY_NOT_CANONICAL[0]), False),
                       (bytes.fromhex(IDENTITY_NOT_CANONICAL[1]), False), ((2).to_bytes(32, "little"), False)):
        assert openssl(identity, r + zero, b"m") == verdict
        assert pure(identity, r + zero, b"m") == verdict


def test_the_check_is_cofactorless__TAMPER_PROOF_IT() -> None:
    """A key with an order-8 component: a signature made with its prime-order part holds, without the
    cofactor, exactly when 8 divides k. OpenSSL and the pure check both judge it so."""
    rng = random.Random(8)
    secret = rng.randrange(1, L)
    torsion = _point(bytes.fromhex(SMALL_ORDER[4]))
    raw = encode_point(_add(_mul(secret, BASE), torsion))
    outcomes = set()
    for i in range(48):
        nonce = rng.randrange(1, L)
        r = encode_point(_mul(nonce, BASE))
        message = f"message {i}".encode()
        k = int.from_bytes(hashlib.sha512(r + raw + message).digest(), "little") % L
        signature = r + ((nonce + k * secret) % L).to_bytes(32, "little")
        assert openssl(raw, signature, message) == (k % 8 == 0) == pure(raw, signature, message)
        outcomes.add(k % 8 == 0)
    assert outcomes == {True, False}


def test_keys_load_as_before_and_check_through_either_implementation__TAMPER_PROOF_IT(
        monkeypatch: pytest.MonkeyPatch) -> None:
    signer = Ed25519PrivateKey.generate()
    key = VerifyKey.of(signer.public_key())
    assert load_public_key_b64(key.b64) == key and keys.BACKEND == "cryptography"
    for bad in ("", "not base64!", key.b64[:-4], "AAAA", "密钥" * 22):
        with pytest.raises(EvidenceError, match="not a base64 Ed25519 public key"):
            load_public_key_b64(bad)
    signature = base64.b64encode(signer.sign(b"entry")).decode()
    monkeypatch.setattr(keys, "BACKEND", "pure Python (evidence/ed25519.py)")
    pure_key = load_public_key_b64(key.b64)
    assert pure_key == key
    for checked in (key, pure_key):
        assert verify_signature(checked, signature, b"entry")
        assert not verify_signature(checked, signature, b"entrz")
        assert not verify_signature(checked, signature[:-4], b"entry")
        assert not verify_signature(checked, "!" + signature[1:], b"entry")


def test_pure_verification_takes_many_signatures_of_one_key__TAMPER_PROOF_IT() -> None:
    """One key's table serves every signature of a session (an hour is about 1,900); how fast is measured by
    bench/bench_verifier.py."""
    signer = Ed25519PrivateKey.generate()
    key = PublicKey(signer.public_key().public_bytes_raw())
    signed = [(signer.sign(m), m) for m in (os.urandom(400) for _ in range(200))]
    assert all(key.verify(signature, message) for signature, message in signed)
