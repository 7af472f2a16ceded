"""RFC 6962 Merkle tree hash over a session's ledger entries.

Leaves are the entries' own hashes (already SHA-256(0x00 || entry), the RFC's leaf hash); a node is
SHA-256(0x01 || left || right), the domain separation that keeps a node from passing for a leaf. The
closing entry carries the root of every entry before it, so one segment can later be proven part of
the session with a short audit path instead of the whole chain.
"""

from __future__ import annotations

import hashlib

NODE_PREFIX = b"\x01"


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def tree_hash(leaves: list[bytes]) -> bytes:
    """MTH(D[n]) of RFC 6962 section 2.1, for leaf hashes already computed; the empty tree is SHA-256("")."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    split = 1 << ((len(leaves) - 1).bit_length() - 1)  # the largest power of two below n
    return _node(tree_hash(leaves[:split]), tree_hash(leaves[split:]))


def root_hex(entry_hashes: list[str]) -> str:
    return tree_hash([bytes.fromhex(h) for h in entry_hashes]).hex()
