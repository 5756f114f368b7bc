"""RFC 9162 Merkle tree: the RFC 6962 vectors, properties against a naive reference, tamper cases."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.errors import InvalidProofError, RootMismatchError, VerificationError
from transforms.merkle import (
    EMPTY_ROOT,
    CompactRange,
    MerkleTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)

# The 8 leaves of the RFC 6962 test tree (Certificate Transparency's merkle_tree_test.cc).
RFC6962_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
]
RFC6962_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (index, size, path) from RFC 6962's test vectors.
RFC6962_INCLUSION = [
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
RFC6962_CONSISTENCY = [
    (1, 1, []),
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
]

LEAVES = [leaf_hash(d) for d in RFC6962_LEAVES]


def naive_root(hashes: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 as written: recursive split at the largest power of two below n."""
    n = len(hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return hashes[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return node_hash(naive_root(hashes[:k]), naive_root(hashes[k:]))


def naive_path(m: int, hashes: list[bytes]) -> list[bytes]:
    n = len(hashes)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return naive_path(m, hashes[:k]) + [naive_root(hashes[k:])]
    return naive_path(m - k, hashes[k:]) + [naive_root(hashes[:k])]


def naive_subproof(m: int, hashes: list[bytes], complete: bool) -> list[bytes]:
    n = len(hashes)
    if m == n:
        return [] if complete else [naive_root(hashes)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return naive_subproof(m, hashes[:k], complete) + [naive_root(hashes[k:])]
    return naive_subproof(m - k, hashes[k:], False) + [naive_root(hashes[:k])]


def test_empty_tree_root_is_sha256_of_nothing():
    assert root([]).hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.mark.parametrize("size", range(1, 9))
def test_rfc6962_roots(size):
    assert root(LEAVES[:size]).hex() == RFC6962_ROOTS[size - 1]


@pytest.mark.parametrize(("index", "size", "path"), RFC6962_INCLUSION)
def test_rfc6962_inclusion_vectors(index, size, path):
    proof = inclusion_proof(LEAVES[:size], index)
    assert [h.hex() for h in proof] == path
    verify_inclusion(LEAVES[index], index, size, proof, bytes.fromhex(RFC6962_ROOTS[size - 1]))


@pytest.mark.parametrize(("old", "new", "path"), RFC6962_CONSISTENCY)
def test_rfc6962_consistency_vectors(old, new, path):
    proof = consistency_proof(LEAVES[:new], old)
    assert [h.hex() for h in proof] == path
    verify_consistency(old, new, proof, bytes.fromhex(RFC6962_ROOTS[old - 1]), bytes.fromhex(RFC6962_ROOTS[new - 1]))


def test_all_proofs_of_small_trees_verify():
    hashes = [leaf_hash(i.to_bytes(2, "big")) for i in range(70)]
    for n in range(1, 70):
        r = root(hashes[:n])
        assert r == naive_root(hashes[:n])
        for i in range(n):
            proof = inclusion_proof(hashes[:n], i)
            assert proof == naive_path(i, hashes[:n])
            verify_inclusion(hashes[i], i, n, proof, r)
        for m in range(0, n + 1):
            proof = consistency_proof(hashes[:n], m)
            if 0 < m < n:
                assert proof == naive_subproof(m, hashes[:n], True)
            verify_consistency(m, n, proof, root(hashes[:m]), r)


leaf_lists = st.lists(st.binary(max_size=8), min_size=1, max_size=140).map(lambda ds: [leaf_hash(d) for d in ds])


@settings(max_examples=150, deadline=None)
@given(leaf_lists, st.data())
def test_merkle_tree_answers_every_size_like_the_batch_functions(hashes, data):
    tree = MerkleTree(hashes[: data.draw(st.integers(0, len(hashes)))])
    tree.extend(hashes[tree.size :])  # grown in two steps, like a log
    assert tree.size == len(hashes)
    size = data.draw(st.integers(1, len(hashes)))
    index = data.draw(st.integers(0, size - 1))
    old = data.draw(st.integers(0, size))
    assert tree.root(size) == naive_root(hashes[:size])
    assert tree.leaf(index) == hashes[index]
    assert tree.inclusion_proof(index, size) == inclusion_proof(hashes[:size], index)
    assert tree.consistency_proof(old, size) == consistency_proof(hashes[:size], old)
    verify_consistency(old, size, tree.consistency_proof(old, size), tree.root(old), tree.root(size))


def test_merkle_tree_refuses_sizes_beyond_its_leaves():
    tree = MerkleTree([leaf_hash(b"a"), leaf_hash(b"b")])
    assert tree.root(0) == EMPTY_ROOT
    with pytest.raises(InvalidProofError, match="outside 0..2"):
        tree.root(3)
    with pytest.raises(InvalidProofError, match="outside a tree of size 2"):
        tree.inclusion_proof(2)
    with pytest.raises(InvalidProofError, match="32 bytes"):
        tree.extend([b"short"])


@settings(max_examples=150, deadline=None)
@given(leaf_lists, st.data())
def test_compact_range_root_always_equals_batch_root(hashes, data):
    cr = CompactRange()
    for i, h in enumerate(hashes):
        cr.append(h)
        if data.draw(st.booleans()):
            assert cr.root() == naive_root(hashes[: i + 1])
    assert cr.root() == root(hashes) == naive_root(hashes)
    restored = CompactRange(cr.size, cr.hashes)
    assert restored == cr


@settings(max_examples=150, deadline=None)
@given(leaf_lists, st.data())
def test_inclusion_proof_verifies_and_any_bit_flip_fails(hashes, data):
    n = len(hashes)
    i = data.draw(st.integers(0, n - 1))
    r = root(hashes)
    proof = inclusion_proof(hashes, i)
    assert proof == naive_path(i, hashes)
    verify_inclusion(hashes[i], i, n, proof, r)
    if proof:
        j = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        bad = list(proof)
        bad[j] = _flip(bad[j], bit)
        with pytest.raises(RootMismatchError):
            verify_inclusion(hashes[i], i, n, bad, r)
    with pytest.raises(RootMismatchError):
        verify_inclusion(_flip(hashes[i], data.draw(st.integers(0, 255))), i, n, proof, r)


@settings(max_examples=150, deadline=None)
@given(leaf_lists, st.data())
def test_consistency_proof_verifies_and_tampering_fails(hashes, data):
    n = len(hashes)
    m = data.draw(st.integers(1, n))
    proof = consistency_proof(hashes, m)
    old_root, new_root = root(hashes[:m]), root(hashes)
    verify_consistency(m, n, proof, old_root, new_root)
    if proof:
        j = data.draw(st.integers(0, len(proof) - 1))
        bad = list(proof)
        bad[j] = _flip(bad[j], data.draw(st.integers(0, 255)))
        with pytest.raises(VerificationError):
            verify_consistency(m, n, bad, old_root, new_root)
    if m < n:
        with pytest.raises(RootMismatchError):
            verify_consistency(m, n, proof, _flip(old_root, 7), new_root)
        with pytest.raises(RootMismatchError):
            verify_consistency(m, n, proof, old_root, _flip(new_root, 7))


def _flip(h: bytes, bit: int) -> bytes:
    b = bytearray(h)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


# Tamper cases, each rejected with a typed error (merkle's testdata: modified-proof, wrong-leaf, ...).
HASHES = [leaf_hash(bytes([i])) for i in range(13)]
ROOT13 = root(HASHES)
PROOF_5 = inclusion_proof(HASHES, 5)


@pytest.mark.parametrize(
    ("name", "leaf", "index", "size", "proof", "expected_root", "error"),
    [
        ("wrong-leaf", HASHES[6], 5, 13, PROOF_5, ROOT13, RootMismatchError),
        ("wrong-index", HASHES[5], 4, 13, PROOF_5, ROOT13, RootMismatchError),
        ("index-beyond-size", HASHES[5], 13, 13, PROOF_5, ROOT13, InvalidProofError),
        ("negative-index", HASHES[5], -1, 13, PROOF_5, ROOT13, InvalidProofError),
        # A size with the same path shape (12 here) yields the same root: the signed checkpoint,
        # not the path, binds the size. Sizes whose paths differ in shape are rejected here.
        ("wrong-size-smaller", HASHES[5], 5, 8, PROOF_5, ROOT13, InvalidProofError),
        ("wrong-size-larger", HASHES[5], 5, 17, PROOF_5, ROOT13, InvalidProofError),
        ("truncated-proof", HASHES[5], 5, 13, PROOF_5[:-1], ROOT13, InvalidProofError),
        ("extended-proof", HASHES[5], 5, 13, PROOF_5 + [HASHES[0]], ROOT13, InvalidProofError),
        ("trailing-garbage", HASHES[5], 5, 13, PROOF_5 + [b"garbage"], ROOT13, InvalidProofError),
        ("short-hash-in-proof", HASHES[5], 5, 13, [PROOF_5[0][:31]] + PROOF_5[1:], ROOT13, InvalidProofError),
        ("wrong-root", HASHES[5], 5, 13, PROOF_5, root(HASHES[:12]), RootMismatchError),
        ("empty-proof", HASHES[5], 5, 13, [], ROOT13, InvalidProofError),
        ("reordered-proof", HASHES[5], 5, 13, PROOF_5[::-1], ROOT13, RootMismatchError),
    ],
)
def test_inclusion_tamper_cases(name, leaf, index, size, proof, expected_root, error):
    with pytest.raises(error):
        verify_inclusion(leaf, index, size, proof, expected_root)


CONS_7_13 = consistency_proof(HASHES, 7)
ROOT7 = root(HASHES[:7])


@pytest.mark.parametrize(
    ("name", "old", "new", "proof", "old_root", "new_root", "error"),
    [
        ("wrong-old-size", 6, 13, CONS_7_13, ROOT7, ROOT13, VerificationError),
        ("wrong-new-size", 7, 17, CONS_7_13, ROOT7, ROOT13, InvalidProofError),
        ("old-larger-than-new", 13, 7, CONS_7_13, ROOT13, ROOT7, InvalidProofError),
        ("truncated", 7, 13, CONS_7_13[:-1], ROOT7, ROOT13, VerificationError),
        ("extended", 7, 13, CONS_7_13 + [HASHES[0]], ROOT7, ROOT13, VerificationError),
        ("empty", 7, 13, [], ROOT7, ROOT13, InvalidProofError),
        ("fork-old-root", 7, 13, CONS_7_13, root(HASHES[1:8]), ROOT13, RootMismatchError),
        ("same-size-different-roots", 13, 13, [], ROOT13, ROOT7, RootMismatchError),
        ("same-size-nonempty-proof", 13, 13, [HASHES[0]], ROOT13, ROOT13, InvalidProofError),
        ("from-zero-nonempty-proof", 0, 13, [HASHES[0]], EMPTY_ROOT, ROOT13, InvalidProofError),
    ],
)
def test_consistency_tamper_cases(name, old, new, proof, old_root, new_root, error):
    with pytest.raises(error):
        verify_consistency(old, new, proof, old_root, new_root)


def test_inclusion_proof_rejects_bad_index():
    with pytest.raises(InvalidProofError):
        inclusion_proof(HASHES, 13)
    with pytest.raises(InvalidProofError):
        consistency_proof(HASHES, 14)


def test_compact_range_rejects_inconsistent_state():
    with pytest.raises(InvalidProofError):
        CompactRange(3, [HASHES[0]])


def test_proof_length_is_logarithmic():
    hashes = [leaf_hash(i.to_bytes(4, "big")) for i in range(5000)]
    for i in (0, 1, 2499, 4095, 4096, 4999):
        assert len(inclusion_proof(hashes, i)) <= 13
    assert len(consistency_proof(hashes, 1234)) <= 2 * 13
