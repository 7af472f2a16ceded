"""The session's Merkle root (RFC 6962 tree hash) in its closing entry."""

from __future__ import annotations

import hashlib

from evidence.entry import entry_hash
from evidence.merkle import root_hex, tree_hash
from tests.conftest import RecordedSession
from tests.media import entries


def leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def test_tree_hash_follows_rfc6962__TAMPER_PROOF_IT() -> None:
    a, b, c = leaf(b"a"), leaf(b"b"), leaf(b"c")
    assert tree_hash([]) == hashlib.sha256(b"").digest()
    assert tree_hash([a]) == a
    assert tree_hash([a, b]) == node(a, b)
    # Three leaves split 2 + 1: the left subtree is the largest power of two below n.
    assert tree_hash([a, b, c]) == node(node(a, b), c)
    # A node can never pass for a leaf: the prefixes differ.
    assert tree_hash([a, b]) != leaf(a + b)


def test_closing_entry_carries_the_root_of_every_entry_before_it__NO_EDIT(recorded: RecordedSession) -> None:
    log = entries(recorded.central_dir)
    assert log[-1]["body"]["merkle_root"] == root_hex([entry_hash(e) for e in log[:-1]])
