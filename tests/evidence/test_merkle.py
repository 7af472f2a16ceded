"""The session's Merkle root (RFC 6962 tree hash) in its closing entry."""

from __future__ import annotations

import hashlib

import pytest

from evidence.entry import entry_hash
from evidence.merkle import CompactTree, inclusion_proof, root_from_proof, tree_hash
from firmware_py.cli import main
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
    assert log[-1]["body"]["merkle_root"] == tree_hash([bytes.fromhex(entry_hash(e)) for e in log[:-1]]).hex()


# RFC 6962 / Certificate Transparency reference vectors (the leaves and tree heads every CT log agrees on).
CT_LEAVES = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_PATHS = {
    (0, 8): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    (5, 8): ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
}


def test_tree_heads_match_the_rfc6962_reference_vectors__TAMPER_PROOF_IT() -> None:
    leaves = [leaf(bytes.fromhex(d)) for d in CT_LEAVES]
    for size, root in enumerate(CT_ROOTS):
        assert tree_hash(leaves[:size]).hex() == root, size
        compact = CompactTree()
        for one in leaves[:size]:
            compact.append(one)
        assert compact.root().hex() == root, size


def test_audit_paths_match_the_reference_and_prove_inclusion__TAMPER_PROOF_IT() -> None:
    leaves = [leaf(bytes.fromhex(d)) for d in CT_LEAVES]
    for (index, size), expected in CT_PATHS.items():
        path = inclusion_proof(leaves[:size], index)
        assert [h.hex() for h in path] == expected
        assert root_from_proof(leaves[index], index, size, path) == bytes.fromhex(CT_ROOTS[size])


def test_every_audit_path_proves_its_leaf_and_nothing_else__TAMPER_PROOF_IT() -> None:
    leaves = [leaf(bytes([i, i * 7 % 256])) for i in range(37)]
    for size in range(1, len(leaves) + 1):
        root = tree_hash(leaves[:size])
        for index in range(size):
            path = inclusion_proof(leaves[:size], index)
            assert root_from_proof(leaves[index], index, size, path) == root
            if size > 1:
                assert root_from_proof(leaves[(index + 1) % size], index, size, path) != root  # another leaf
                assert root_from_proof(leaves[index], index, size, path[:-1]) != root  # a path cut short
                assert root_from_proof(leaves[index], (index + 1) % size, size, path) != root  # another place
        assert root_from_proof(leaves[0], size, size, []) is None


def test_verify_prove_prints_and_checks_an_entrys_audit_path__TAMPER_PROOF_IT(
        recorded: RecordedSession, capsys: pytest.CaptureFixture[str]) -> None:
    seq = 3
    assert main(["verify", str(recorded.central_dir), "--prove", str(seq)]) == 0
    out = capsys.readouterr().out
    log = entries(recorded.central_dir)
    leaves = [bytes.fromhex(entry_hash(e)) for e in log[:-1]]
    for i, step in enumerate(inclusion_proof(leaves, seq)):
        assert f"path[{i}]   {step.hex()}" in out
    assert f"root      {log[-1]['body']['merkle_root']}" in out and out.rstrip().endswith(
        "the path leads from the entry to the root the closing entry signs")
    assert main(["verify", str(recorded.central_dir), "--prove", str(len(log) - 1)]) == 1  # the close is no leaf
    assert "is not in the tree" in capsys.readouterr().out
