"""RFC 6962 Merkle tree over a session's ledger entries, and inclusion proofs (audit paths).

Leaves are the entries' own hashes (already SHA-256(0x00 || entry), the RFC's leaf hash); a node is
SHA-256(0x01 || left || right), the domain separation that keeps a node from passing for a leaf. The
closing entry carries the root of every entry before it, so one entry (a segment, say) can be proven part
of the session with an audit path of about log2(n) hashes instead of the whole chain (RFC 6962 §2.1.1).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

NODE_PREFIX = b"\x01"


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1): where RFC 6962 splits a tree of n leaves."""
    return 1 << ((n - 1).bit_length() - 1)


def tree_hash(leaves: list[bytes]) -> bytes:
    """MTH(D[n]) of RFC 6962 section 2.1, for leaf hashes already computed; the empty tree is SHA-256("")."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node(tree_hash(leaves[:k]), tree_hash(leaves[k:]))


@dataclass
class CompactTree:
    """The root of a growing tree from O(log n) state: the roots of the perfect subtrees its leaves fill,
    largest first (the binary digits of n), as a Certificate Transparency log keeps them."""

    _subtrees: list[tuple[int, bytes]] = field(default_factory=list)
    size: int = 0

    def append(self, leaf: bytes) -> None:
        self._subtrees.append((1, leaf))
        self.size += 1
        while len(self._subtrees) > 1 and self._subtrees[-2][0] == self._subtrees[-1][0]:
            (width, left), (_, right) = self._subtrees[-2:]
            self._subtrees[-2:] = [(2 * width, node(left, right))]

    def root(self) -> bytes:
        if not self._subtrees:
            return hashlib.sha256(b"").digest()
        result = self._subtrees[-1][1]
        for _, left in reversed(self._subtrees[:-1]):
            result = node(left, result)
        return result

    def copy(self) -> CompactTree:
        return CompactTree(list(self._subtrees), self.size)


def inclusion_proof(leaves: list[bytes], index: int) -> list[bytes]:
    """PATH(m, D[n]) of RFC 6962 §2.1.1: the audit path proving leaf `index` is in the tree of `leaves`."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf {index} is not in a tree of {len(leaves)}")
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*inclusion_proof(leaves[:k], index), tree_hash(leaves[k:])]
    return [*inclusion_proof(leaves[k:], index - k), tree_hash(leaves[:k])]


def root_from_proof(leaf: bytes, index: int, size: int, path: list[bytes]) -> bytes | None:
    """The root that `path` proves `leaf` (number `index` of `size`) to be part of; None if the path has the
    wrong length for that position (RFC 9162 §2.1.3.2). Compare the result with the known root."""
    if not 0 <= index < size:
        return None
    fn, sn, result = index, size - 1, leaf
    for sibling in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            result = node(sibling, result)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            result = node(result, sibling)
        fn, sn = fn >> 1, sn >> 1
    return result if sn == 0 else None
