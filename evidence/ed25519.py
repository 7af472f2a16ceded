"""Ed25519 signature verification in pure Python (RFC 8032 §5.1.7), for a Python without `cryptography`.

`evidence.keys` uses it only when `cryptography` does not import, so a session and the access audit can be
verified with nothing but CPython (FORMAT §7.5). It accepts and refuses exactly what OpenSSL's
`ossl_ed25519_verify` (what `cryptography` calls) does, so the verdict never depends on which one ran:

* S must be below L: a non-canonical S (S + L, ...) is refused.
* The public key is decoded as OpenSSL's `ge_frombytes_vartime` decodes it: y is taken modulo p (a y ≥ p is
  not refused), x = 0 with the sign bit set is read as x = 0, and only a y for which no x exists is refused.
  Keys of small order are not refused; neither are they by OpenSSL.
* R is never decoded: [S]B − [k]A is encoded and compared byte for byte with R, so an R that does not decode,
  or is not the canonical encoding of that point, never matches.
* Cofactorless: [S]B = R + [k]A itself is checked, not the equation multiplied by 8.
* k = SHA-512(R || A || M) mod L over the key's 32 bytes as given, not as re-encoded.

It checks public data and never signs, so it is not constant time. Points are in extended twisted Edwards
coordinates (X : Y : Z : T), x = X/Z, y = Y/Z, xy = T/Z; both [S]B and [k]A come from tables of signed
radix-2^w multiples (B's built once, a key's when it first verifies), so a verification is at most 83 point
additions and no doublings.
"""

from __future__ import annotations

import hashlib
from functools import cache

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, -1, P) % P
_D2 = 2 * D % P
_SQRT_M1 = pow(2, (P - 1) // 4, P)
_BASE_Y = 4 * pow(5, -1, P) % P
_SCALAR_BITS = 253
"""S < L and k < L are both below 2^253."""
_BASE_WIDTH = 8
"""B's table is built once per process: wide windows (32 additions a verification) pay for its 4,096 points."""
_KEY_WIDTH = 5
"""A key's table is built for each key (816 points, a few ms): the width that pays off over a session's
hundreds of signatures without making a key checked only once slow."""

Point = tuple[int, int, int, int]
Cached = tuple[int, int, int]
"""An affine point as additions use it: (y + x, y − x, 2d·x·y)."""
Table = list[list[Cached | None]]
"""Per window i, indexed by digit e + 2^(w−1): the point e·2^(w·i)·P (None for e = 0)."""

_IDENTITY: Point = (0, 1, 1, 0)


def _add(p1: Point, p2: Point) -> Point:
    """add-2008-hwcd-3 (a = −1): complete, so it holds for any two points, small order or equal."""
    x1, y1, z1, t1 = p1
    x2, y2, z2, t2 = p2
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = t1 * _D2 * t2 % P
    d = 2 * z1 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return e * f % P, g * h % P, f * g % P, e * h % P


def _double(p1: Point) -> Point:
    """dbl-2008-hwcd (a = −1)."""
    x1, y1, z1, _ = p1
    a = x1 * x1 % P
    b = y1 * y1 % P
    c = 2 * z1 * z1 % P
    e = ((x1 + y1) * (x1 + y1) - a - b) % P
    g = b - a
    f = g - c
    h = -a - b
    return e * f % P, g * h % P, f * g % P, e * h % P


def decode_point(raw: bytes) -> Point | None:
    """The point 32 bytes encode, read as OpenSSL reads a public key (module docstring); None if none."""
    if len(raw) != 32:
        return None
    number = int.from_bytes(raw, "little")
    sign = number >> 255
    y = (number & ((1 << 255) - 1)) % P
    u = (y * y - 1) % P
    v = (D * y * y + 1) % P
    # x = u·v³·(u·v⁷)^((p−5)/8), a square root of u/v if there is one (RFC 8032 §5.1.3).
    v3 = v * v * v % P
    x = u * v3 * pow(u * v3 * v3 * v % P, (P - 5) // 8, P) % P
    vxx = v * x * x % P
    if vxx != u:
        if vxx != P - u:
            return None
        x = x * _SQRT_M1 % P
    if x & 1 != sign:
        x = (P - x) % P
    return x, y, 1, x * y % P


def encode_point(point: Point) -> bytes:
    x, y, z, _ = point
    inverse = pow(z, -1, P)
    x, y = x * inverse % P, y * inverse % P
    return (y | (x & 1) << 255).to_bytes(32, "little")


def _windows(width: int) -> int:
    # Signed digits below 2^(w−1) represent numbers below 2^(w·n − 1): one bit over the scalar for the carry.
    return -(-(_SCALAR_BITS + 1) // width)


def _digits(scalar: int, width: int) -> list[int]:
    """`scalar` in signed radix 2^width: digits e_i in [−2^(w−1), 2^(w−1)) with scalar = Σ e_i·2^(w·i)."""
    half, mask = 1 << (width - 1), (1 << width) - 1
    digits = []
    for _ in range(_windows(width)):
        digit = scalar & mask
        scalar >>= width
        if digit >= half:
            digit -= 1 << width
            scalar += 1
        digits.append(digit)
    return digits


def _table(point: Point, width: int) -> Table:
    half = 1 << (width - 1)
    multiples: list[Point] = []
    window = point
    for _ in range(_windows(width)):
        row = [window]
        for _ in range(half - 1):
            row.append(_add(row[-1], window))
        multiples += row
        window = _double(row[-1])  # 2^w·window = 2·(2^(w−1)·window)
    # One inversion for all the points (Montgomery's trick), to store them affine: additions then need one
    # multiplication fewer.
    prefix = [1]
    for m in multiples:
        prefix.append(prefix[-1] * m[2] % P)
    inverse = pow(prefix[-1], -1, P)
    cached: list[Cached] = [(0, 0, 0)] * len(multiples)
    for i in range(len(multiples) - 1, -1, -1):
        x, y, z, _ = multiples[i]
        z_inverse = inverse * prefix[i] % P
        inverse = inverse * z % P
        x, y = x * z_inverse % P, y * z_inverse % P
        cached[i] = ((y + x) % P, (y - x) % P, _D2 * x * y % P)
    table: Table = []
    for i in range(0, len(cached), half):
        entries: list[Cached | None] = [None] * (2 * half + 1)
        for e, (plus, minus, t2d) in enumerate(cached[i:i + half], 1):
            entries[half + e] = (plus, minus, t2d)
            entries[half - e] = (minus, plus, P - t2d if t2d else 0)  # −(x, y) = (−x, y)
        table.append(entries)
    return table


@cache
def _base_table() -> Table:
    base = decode_point(_BASE_Y.to_bytes(32, "little"))
    assert base is not None
    return _table(base, _BASE_WIDTH)


def _accumulate(acc: Point, table: Table, digits: list[int], half: int) -> Point:
    """acc + Σ digits[i]·(window i of `table`): mixed additions of affine points (madd-2008-hwcd-3)."""
    x, y, z, t = acc
    for row, digit in zip(table, digits, strict=True):
        entry = row[digit + half]
        if entry is None:
            continue
        plus, minus, t2d = entry
        a = (y - x) * minus % P
        b = (y + x) * plus % P
        c = t * t2d % P
        d = z + z
        e, f, g, h = b - a, d - c, d + c, b + a
        x, y, z, t = e * f % P, g * h % P, f * g % P, e * h % P
    return x, y, z, t


class PublicKey:
    """An Ed25519 public key: its 32 bytes as given, decoded (and its table built) when it first verifies."""

    __slots__ = ("_decoded", "_table", "raw")

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 32:
            raise ValueError(f"an Ed25519 public key is 32 bytes, not {len(raw)}")
        self.raw = bytes(raw)
        self._table: Table | None = None
        self._decoded = False

    def _key_table(self) -> Table | None:
        if not self._decoded:
            point = decode_point(self.raw)
            self._table = None if point is None else _table(point, _KEY_WIDTH)
            self._decoded = True
        return self._table

    def verify(self, signature: bytes, message: bytes) -> bool:
        """Whether `signature` (64 bytes: R || S) is this key's over `message`, as OpenSSL judges it."""
        if len(signature) != 64:
            return False
        s = int.from_bytes(signature[32:], "little")
        if s >= L:
            return False
        table = self._key_table()
        if table is None:
            return False
        r = signature[:32]
        k = int.from_bytes(hashlib.sha512(r + self.raw + message).digest(), "little") % L
        # [S]B − [k]A: A's digits negated rather than k replaced by L − k, which would be wrong for a key with
        # a small-order component (OpenSSL negates A too).
        negated = [-e for e in _digits(k, _KEY_WIDTH)]
        point = _accumulate(_IDENTITY, _base_table(), _digits(s, _BASE_WIDTH), 1 << (_BASE_WIDTH - 1))
        point = _accumulate(point, table, negated, 1 << (_KEY_WIDTH - 1))
        return encode_point(point) == r
