"""Merkle tree hashing and proofs against published RFC 6962 vectors and a literal RFC implementation."""

from __future__ import annotations

import hashlib
import random

import pytest

from portal.audit.merkle import (
    IncrementalTree,
    MerkleTree,
    ProofError,
    consistency_proof,
    empty_root,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)

# Known answers from github.com/transparency-dev/merkle, file proof/verify_test.go (Apache-2.0): the
# eight RFC 6962 test leaves, the roots of the trees of size 1 to 8 over them, and audit paths and
# consistency proofs for some index and size pairs.
LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (leaf index, tree size, audit path)
KNOWN_INCLUSION = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
# (old size, new size, consistency proof)
KNOWN_CONSISTENCY = [
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
HASHES = [leaf_hash(data) for data in LEAVES]


# A literal transcription of the recursive definitions of RFC 9162 sections 2.1.1, 2.1.3.1 and
# 2.1.4.1, over leaf hashes. Slow but obviously right, so the fast code is checked against it.


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def naive_root(hashes: list[bytes]) -> bytes:
    if not hashes:
        return hashlib.sha256(b"").digest()
    if len(hashes) == 1:
        return hashes[0]
    k = _split(len(hashes))
    return node_hash(naive_root(hashes[:k]), naive_root(hashes[k:]))


def naive_path(m: int, hashes: list[bytes]) -> list[bytes]:
    if len(hashes) == 1:
        return []
    k = _split(len(hashes))
    if m < k:
        return [*naive_path(m, hashes[:k]), naive_root(hashes[k:])]
    return [*naive_path(m - k, hashes[k:]), naive_root(hashes[:k])]


def naive_subproof(m: int, hashes: list[bytes], complete: bool) -> list[bytes]:
    n = len(hashes)
    if m == n:
        return [] if complete else [naive_root(hashes)]
    k = _split(n)
    if m <= k:
        return [*naive_subproof(m, hashes[:k], complete), naive_root(hashes[k:])]
    return [*naive_subproof(m - k, hashes[k:], False), naive_root(hashes[:k])]


def naive_consistency(m: int, hashes: list[bytes]) -> list[bytes]:
    if m in (0, len(hashes)):
        return []
    return naive_subproof(m, hashes, True)


def random_hashes(rng: random.Random, count: int) -> list[bytes]:
    return [leaf_hash(rng.randbytes(rng.randrange(0, 40))) for _ in range(count)]


def flipped(proof: list[bytes], position: int) -> list[bytes]:
    changed = bytearray(proof[position])
    changed[0] ^= 0x08
    return [*proof[:position], bytes(changed), *proof[position + 1 :]]


def test_leaf_and_node_prefixes() -> None:
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    assert node_hash(b"L" * 32, b"R" * 32) == hashlib.sha256(b"\x01" + b"L" * 32 + b"R" * 32).digest()


def test_empty_tree_root() -> None:
    expected = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    assert root_hash([]) == expected
    assert empty_root() == expected
    assert MerkleTree([]).root() == expected
    assert IncrementalTree().root() == expected


@pytest.mark.parametrize("size", range(1, 9))
def test_root_known_answers(size: int) -> None:
    expected = bytes.fromhex(ROOTS[size - 1])
    assert root_hash(HASHES[:size]) == expected
    assert MerkleTree(HASHES[:size]).root() == expected


@pytest.mark.parametrize(("index", "size", "path"), KNOWN_INCLUSION)
def test_inclusion_known_answers(index: int, size: int, path: list[str]) -> None:
    expected = [bytes.fromhex(node) for node in path]
    root = bytes.fromhex(ROOTS[size - 1])

    assert inclusion_proof(index, HASHES[:size]) == expected
    assert verify_inclusion(index, size, HASHES[index], expected, root)


@pytest.mark.parametrize(("old_size", "new_size", "path"), KNOWN_CONSISTENCY)
def test_consistency_known_answers(old_size: int, new_size: int, path: list[str]) -> None:
    expected = [bytes.fromhex(node) for node in path]
    old_root = bytes.fromhex(ROOTS[old_size - 1])
    new_root = bytes.fromhex(ROOTS[new_size - 1])

    assert consistency_proof(old_size, HASHES[:new_size]) == expected
    assert verify_consistency(old_size, new_size, old_root, new_root, expected)


def test_inclusion_all_pairs_to_eight() -> None:
    for size in range(1, 9):
        tree = MerkleTree(HASHES[:size])
        root = bytes.fromhex(ROOTS[size - 1])
        for index in range(size):
            proof = tree.inclusion_proof(index)
            assert proof == naive_path(index, HASHES[:size]), (index, size)
            assert verify_inclusion(index, size, HASHES[index], proof, root), (index, size)


def test_inclusion_rejects_corruption() -> None:
    other = leaf_hash(b"not in the tree")
    for size in range(1, 9):
        tree = MerkleTree(HASHES[:size])
        root = tree.root()
        for index in range(size):
            proof = tree.inclusion_proof(index)
            leaf = HASHES[index]
            case = (index, size)

            assert not verify_inclusion(index, size, other, proof, root), case
            assert not verify_inclusion(index, size, leaf, proof, other), case
            assert not verify_inclusion(index + 1, size, leaf, proof, root), case
            assert not verify_inclusion(index, size * 2, leaf, proof, root), case
            assert not verify_inclusion(index, size, leaf, [*proof, root], root), case
            assert not verify_inclusion(index, size, leaf, [root, *proof], root), case
            if index > 0:
                assert not verify_inclusion(index - 1, size, leaf, proof, root), case
            if size > 1:
                assert not verify_inclusion(index, size, leaf, proof[:-1], root), case
            for position in range(len(proof)):
                assert not verify_inclusion(index, size, leaf, flipped(proof, position), root), case


def test_inclusion_rejects_malformed_input() -> None:
    root = root_hash(HASHES)
    proof = inclusion_proof(3, HASHES)

    assert not verify_inclusion(3, 8, HASHES[3][:31], proof, root)
    assert not verify_inclusion(3, 8, HASHES[3], [node[:31] for node in proof], root)
    assert not verify_inclusion(-1, 8, HASHES[3], proof, root)
    assert not verify_inclusion(8, 8, HASHES[3], proof, root)
    assert not verify_inclusion(0, 0, HASHES[0], [], root)


def test_consistency_all_pairs_to_eight() -> None:
    for new_size in range(1, 9):
        tree = MerkleTree(HASHES[:new_size])
        new_root = bytes.fromhex(ROOTS[new_size - 1])
        for old_size in range(1, new_size + 1):
            old_root = bytes.fromhex(ROOTS[old_size - 1])
            proof = tree.consistency_proof(old_size)
            case = (old_size, new_size)

            assert proof == naive_consistency(old_size, HASHES[:new_size]), case
            assert verify_consistency(old_size, new_size, old_root, new_root, proof), case


def test_consistency_rejects_corruption() -> None:
    other = leaf_hash(b"not a root")
    for new_size in range(2, 9):
        new_root = bytes.fromhex(ROOTS[new_size - 1])
        for old_size in range(1, new_size):
            old_root = bytes.fromhex(ROOTS[old_size - 1])
            proof = consistency_proof(old_size, HASHES[:new_size])
            case = (old_size, new_size)

            assert not verify_consistency(old_size, new_size, other, new_root, proof), case
            assert not verify_consistency(old_size, new_size, old_root, other, proof), case
            assert not verify_consistency(old_size, new_size, new_root, old_root, proof), case
            assert not verify_consistency(old_size, new_size, old_root, new_root, []), case
            assert not verify_consistency(old_size, new_size, old_root, new_root, proof[:-1]), case
            assert not verify_consistency(old_size, new_size, old_root, new_root, [*proof, other]), case
            assert not verify_consistency(new_size, old_size, new_root, old_root, proof), case
            if old_size > 1:
                assert not verify_consistency(old_size - 1, new_size, old_root, new_root, proof), case
            for position in range(len(proof)):
                assert not verify_consistency(
                    old_size, new_size, old_root, new_root, flipped(proof, position)
                ), case


def test_consistency_trivial_sizes() -> None:
    root = root_hash(HASHES)

    assert verify_consistency(0, 8, empty_root(), root, [])
    assert not verify_consistency(0, 8, root, root, [])
    assert not verify_consistency(0, 8, empty_root(), root, [root])
    assert verify_consistency(8, 8, root, root, [])
    assert not verify_consistency(8, 8, root, empty_root(), [])
    assert not verify_consistency(8, 8, root, root, [root])
    assert consistency_proof(0, HASHES) == []
    assert consistency_proof(8, HASHES) == []


def test_proofs_reject_bad_index() -> None:
    tree = MerkleTree(HASHES)

    with pytest.raises(ProofError):
        tree.inclusion_proof(8)
    with pytest.raises(ProofError):
        tree.inclusion_proof(-1)
    with pytest.raises(ProofError):
        tree.consistency_proof(9)


def test_tree_rejects_raw_entries() -> None:
    with pytest.raises(ValueError, match="leaf hash 1"):
        MerkleTree([HASHES[0], b"raw entry"])


def test_random_trees_match_naive() -> None:
    rng = random.Random(6962)
    for _ in range(25):
        size = rng.randrange(9, 700)
        hashes = random_hashes(rng, size)
        tree = MerkleTree(hashes)
        root = naive_root(hashes)
        assert tree.root() == root
        assert root_hash(hashes) == root

        for index in rng.sample(range(size), 8):
            proof = tree.inclusion_proof(index)
            assert proof == naive_path(index, hashes), (index, size)
            assert verify_inclusion(index, size, hashes[index], proof, root), (index, size)

        for old_size in rng.sample(range(1, size + 1), 8):
            proof = tree.consistency_proof(old_size)
            old_root = naive_root(hashes[:old_size])
            assert proof == naive_consistency(old_size, hashes), (old_size, size)
            assert verify_consistency(old_size, size, old_root, root, proof), (old_size, size)


def test_incremental_matches_root_hash() -> None:
    hashes = random_hashes(random.Random(300), 300)
    tree = IncrementalTree()
    for size in range(1, 301):
        tree.append(hashes[size - 1])
        assert tree.size == size
        assert tree.root() == root_hash(hashes[:size]), size
        assert len(tree.hashes) == size.bit_count()


def test_incremental_resumes_from_state() -> None:
    hashes = random_hashes(random.Random(1), 77)
    first = IncrementalTree()
    for item in hashes[:50]:
        first.append(item)

    resumed = IncrementalTree.from_state(first.size, first.hashes)
    for item in hashes[50:]:
        resumed.append(item)

    assert resumed.root() == root_hash(hashes)


def test_incremental_rejects_damaged_state() -> None:
    tree = IncrementalTree()
    for item in HASHES[:6]:
        tree.append(item)

    with pytest.raises(ValueError, match="needs 2 subtree hashes"):
        IncrementalTree.from_state(6, tree.hashes[:1])
    with pytest.raises(ValueError, match="32 bytes"):
        IncrementalTree.from_state(6, [tree.hashes[0], b"short"])
    with pytest.raises(ValueError, match="expected 32"):
        tree.append(b"raw entry")
