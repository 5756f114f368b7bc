"""RFC 9162 §2.1 Merkle trees: hashes, batch roots and proofs, their verifiers, and a compact range.

The tree is SHA-256, left-balanced, with no duplication of odd nodes:

    leaf = SHA-256(0x00 ‖ data)          node = SHA-256(0x01 ‖ left ‖ right)
    MTH({}) = SHA-256("")                split at k = the largest power of two < n

The batch functions take the list of *leaf hashes* (not the data) so that a verifier can work
from stored hashes. Proofs are lists of 32-byte `bytes`, ordered from the leaf's sibling up to
the root's child, exactly as RFC 6962 §2.1.1/§2.1.2 (and C2SP tlog-proof) lay them out.
Verifiers return None and raise `InvalidProofError` or `RootMismatchError`.

`CompactRange` appends leaf hashes one at a time with O(log n) state; its root always equals
`root()` of the same leaves, so a streaming job never keeps the whole tree. `MerkleTree` keeps
every perfect subtree instead (2n hashes), so a verifier or the query service answers the root
at any size and any proof in O(log² n) hashes rather than rehashing the log.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from hashlib import sha256

from transforms.errors import InvalidProofError, RootMismatchError

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = sha256(b"").digest()

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "COMPILED_HASHING",
    "CompactRange",
    "MerkleTree",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "leaf_hashes",
    "node_hash",
    "node_level",
    "reference_leaf_hashes",
    "reference_node_level",
    "reference_root",
    "root",
    "verify_consistency",
    "verify_inclusion",
]


def leaf_hash(data: bytes) -> bytes:
    """Returns SHA-256(0x00 ‖ data), the hash of one log entry."""
    return sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Returns SHA-256(0x01 ‖ left ‖ right), the hash of an interior node."""
    return sha256(NODE_PREFIX + left + right).digest()


# --------------------------------------------------------------------------- in batches
#
# The same hashes over a whole block or tree level in one call. Where the compiled core
# (transforms/native, `auditlog_native`) is built it does them, with the GIL released for large
# inputs; the Python definitions below are the reference it is held to
# (tests/unit/test_native_core.py), and what runs without it.


def reference_leaf_hashes(entries: Sequence[bytes]) -> list[bytes]:
    """`leaf_hash` of each entry."""
    return [sha256(LEAF_PREFIX + e).digest() for e in entries]


def reference_node_level(data: bytes | bytearray) -> bytes:
    """`node_hash` of each pair of 32-byte hashes in `data` (a multiple of 64 bytes), concatenated."""
    if len(data) % (2 * HASH_SIZE):
        raise ValueError(f"a level of pairs is {len(data)} bytes, not a whole number of 64-byte pairs")
    return b"".join(sha256(NODE_PREFIX + data[i : i + 2 * HASH_SIZE]).digest() for i in range(0, len(data), 64))


def reference_root(leaf_hashes: Sequence[bytes]) -> bytes:
    """The Merkle tree hash of the leaf hashes (SHA-256("") when empty), one node at a time."""
    if not leaf_hashes:
        return EMPTY_ROOT
    for h in leaf_hashes:
        if len(h) != HASH_SIZE:
            raise InvalidProofError(f"leaf hash must be {HASH_SIZE} bytes, got {len(h)}")
    cr = CompactRange()
    cr.extend(leaf_hashes)
    return cr.root()


def _compiled() -> tuple[Callable[..., list[bytes]], Callable[..., bytes], Callable[..., bytes]] | None:
    try:
        import auditlog_native  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return None
    return auditlog_native.leaf_hashes, auditlog_native.node_level, auditlog_native.merkle_root


_COMPILED = _compiled()
COMPILED_HASHING = _COMPILED is not None
"""True when the batch functions below run in the compiled core."""


def leaf_hashes(entries: Sequence[bytes]) -> list[bytes]:
    """`leaf_hash` of each entry, in one call."""
    if _COMPILED is None:
        return reference_leaf_hashes(entries)
    return _COMPILED[0](entries)


def node_level(data: bytes | bytearray) -> bytes:
    """`node_hash` of each pair of 32-byte hashes in `data` (a multiple of 64 bytes), concatenated."""
    if _COMPILED is None:
        return reference_node_level(data)
    return _COMPILED[1](data)


def _split(n: int) -> int:
    """The largest power of two strictly less than n (requires n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """Returns the Merkle tree hash of the given leaf hashes (SHA-256("") when empty)."""
    if _COMPILED is None or len(leaf_hashes) < 4 or any(len(h) != HASH_SIZE for h in leaf_hashes):
        return reference_root(leaf_hashes)  # which says which hash is not 32 bytes
    return _COMPILED[2](b"".join(leaf_hashes))


SubtreeRoot = Callable[[int, int], bytes]
"""Returns the root of the leaves [lo, hi) of one tree; the proof walks below only ask for aligned ranges."""


def _slice_roots(leaf_hashes: Sequence[bytes]) -> SubtreeRoot:
    return lambda lo, hi: root(leaf_hashes[lo:hi])


def _inclusion_path(size: int, index: int, subtree: SubtreeRoot) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 9162 §2.1.3.1, unrolled; requires 0 <= index < size."""
    if not 0 <= index < size:
        raise InvalidProofError(f"leaf index {index} is outside a tree of size {size}")
    proof: list[bytes] = []
    lo, hi = 0, size
    # Walk down from the root; each step records the sibling subtree's hash.
    while hi - lo > 1:
        k = _split(hi - lo)
        if index - lo < k:
            proof.append(subtree(lo + k, hi))
            hi = lo + k
        else:
            proof.append(subtree(lo, lo + k))
            lo = lo + k
    proof.reverse()
    return proof


def _consistency_path(size: int, old_size: int, subtree: SubtreeRoot) -> list[bytes]:
    """SUBPROOF(old_size, D[0:size], true) of RFC 9162 §2.1.4.1, unrolled; requires 0 <= old_size <= size."""
    if not 0 <= old_size <= size:
        raise InvalidProofError(f"old size {old_size} is outside 0..{size}")
    if old_size == 0 or old_size == size:
        return []
    proof: list[bytes] = []
    lo, hi, m, complete = 0, size, old_size, True
    while True:
        n = hi - lo
        if m == n:
            if not complete:
                proof.append(subtree(lo, hi))
            break
        k = _split(n)
        if m <= k:
            proof.append(subtree(lo + k, hi))
            hi = lo + k
        else:
            proof.append(subtree(lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    proof.reverse()
    return proof


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """Returns the audit path of leaf `index` in the tree of `leaf_hashes`.

    Requires 0 <= index < len(leaf_hashes).
    """
    return _inclusion_path(len(leaf_hashes), index, _slice_roots(leaf_hashes))


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """Returns the proof that the tree of the first `old_size` leaves is a prefix of this one.

    Requires 0 <= old_size <= len(leaf_hashes). The proof is empty when old_size is 0 or equals
    the new size (RFC 9162 §2.1.4: both are trivially consistent).
    """
    return _consistency_path(len(leaf_hashes), old_size, _slice_roots(leaf_hashes))


def _check_hashes(proof: Sequence[bytes], what: str) -> None:
    for i, h in enumerate(proof):
        if not isinstance(h, bytes) or len(h) != HASH_SIZE:
            raise InvalidProofError(f"{what} element {i} is not a {HASH_SIZE}-byte hash: {h!r}")


def _inclusion_length(index: int, size: int) -> int:
    """Number of hashes in the audit path of `index` in a tree of `size` leaves."""
    inner = (index ^ (size - 1)).bit_length()
    border = bin(index >> inner).count("1")
    return inner + border


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], expected_root: bytes) -> None:
    """Checks that `leaf` (a leaf hash) sits at `index` in the tree of `size` with `expected_root`.

    Raises InvalidProofError if the index, size or proof shape is wrong, and RootMismatchError
    if the path leads to a different root.
    """
    _check_hashes([leaf, expected_root], "hash")
    if size < 1 or not 0 <= index < size:
        raise InvalidProofError(f"leaf index {index} is outside a tree of size {size}")
    _check_hashes(proof, "inclusion proof")
    want = _inclusion_length(index, size)
    if len(proof) != want:
        raise InvalidProofError(
            f"inclusion proof for index {index} in size {size} has {len(proof)} hashes, want {want}"
        )
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise InvalidProofError("inclusion proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProofError("inclusion proof is shorter than the path to the root")
    if r != expected_root:
        raise RootMismatchError(expected_root, r)


def verify_consistency(old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes) -> None:
    """Checks that the tree (old_size, old_root) is a prefix of the tree (new_size, new_root).

    Requires 0 <= old_size <= new_size. For old_size 0 the proof must be empty (any tree
    extends the empty one, whatever old_root is given); for old_size == new_size it must be
    empty and the roots equal.
    """
    if not 0 <= old_size <= new_size:
        raise InvalidProofError(f"old size {old_size} is not within 0..new size {new_size}")
    _check_hashes(proof, "consistency proof")
    if old_size == 0 or old_size == new_size:
        if proof:
            raise InvalidProofError(
                f"consistency proof from {old_size} to {new_size} must be empty, got {len(proof)} hashes"
            )
        if old_size == new_size:
            _check_hashes([old_root, new_root], "root")
            if old_root != new_root:
                raise RootMismatchError(old_root, new_root, "same-size root")
        return
    _check_hashes([old_root, new_root], "root")
    if not proof:
        raise InvalidProofError(f"consistency proof from {old_size} to {new_size} is empty")
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        # The old tree is a complete subtree: its root is the proof's implicit first node.
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise InvalidProofError("consistency proof is longer than needed")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProofError("consistency proof is shorter than needed")
    if fr != old_root:
        raise RootMismatchError(old_root, fr, "old root")
    if sr != new_root:
        raise RootMismatchError(new_root, sr, "new root")


class CompactRange:
    """The compact range [0, size) of a growing tree: one hash per set bit of `size`.

    `hashes` are the roots of the perfect subtrees that make up the leaves so far, largest
    (leftmost) first. Appending costs amortised one node hash; `root()` folds the subtrees
    right to left, which is exactly RFC 9162's left-balanced MTH.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()) -> None:
        self._size = size
        self._hashes = list(hashes)
        if len(self._hashes) != bin(size).count("1"):
            raise InvalidProofError(
                f"compact range of size {size} needs {bin(size).count('1')} hashes, got {len(self._hashes)}"
            )
        _check_hashes(self._hashes, "compact range")

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashes(self) -> list[bytes]:
        """A copy of the subtree roots, for storing the state elsewhere."""
        return list(self._hashes)

    def append(self, leaf: bytes) -> None:
        """Appends one leaf hash (32 bytes)."""
        hashes = self._hashes
        n = self._size
        h = leaf
        while n & 1:
            h = sha256(NODE_PREFIX + hashes.pop() + h).digest()
            n >>= 1
        hashes.append(h)
        self._size += 1

    def extend(self, leaves: Iterable[bytes]) -> None:
        """Appends many leaf hashes; the same as calling append for each, only faster."""
        hashes = self._hashes
        size = self._size
        pop, push = hashes.pop, hashes.append
        for h in leaves:
            n = size
            while n & 1:
                h = sha256(NODE_PREFIX + pop() + h).digest()
                n >>= 1
            push(h)
            size += 1
        self._size = size

    def root(self) -> bytes:
        """Returns the Merkle tree hash of all leaves appended so far."""
        if not self._hashes:
            return EMPTY_ROOT
        it = reversed(self._hashes)
        acc = next(it)
        for h in it:
            acc = node_hash(h, acc)
        return acc

    def copy(self) -> CompactRange:
        return CompactRange(self._size, self._hashes)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CompactRange) and self._size == other._size and self._hashes == other._hashes

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size}, root={self.root().hex()[:16]}…)"


class MerkleTree:
    """Every perfect subtree of a log's leaves, for roots and proofs at any size without rehashing.

    Level k holds the roots of the aligned subtrees of 2**k leaves, concatenated in a bytearray
    (32 bytes each, 2n hashes in all). `root(size)`, `inclusion_proof(index, size)` and
    `consistency_proof(old_size, size)` give exactly what the batch functions give for the first
    `size` leaves, each in O(log² n) node hashes.
    """

    __slots__ = ("_levels",)

    def __init__(self, leaves: Iterable[bytes] = ()) -> None:
        self._levels: list[bytearray] = [bytearray()]
        self.extend(leaves)

    @property
    def size(self) -> int:
        return len(self._levels[0]) // HASH_SIZE

    def extend(self, leaves: Iterable[bytes]) -> None:
        """Appends leaf hashes (32 bytes each) and the perfect subtrees they complete."""
        level0 = self._levels[0]
        for h in leaves:
            if len(h) != HASH_SIZE:
                raise InvalidProofError(f"leaf hash must be {HASH_SIZE} bytes, got {len(h)}")
            level0 += h
        k = 0
        while len(self._levels[k]) >= 2 * HASH_SIZE:
            if len(self._levels) == k + 1:
                self._levels.append(bytearray())
            below, above = self._levels[k], self._levels[k + 1]
            start = len(above) // HASH_SIZE
            pairs = len(below) // (2 * HASH_SIZE)
            if pairs > start:
                above += node_level(below[2 * HASH_SIZE * start : 2 * HASH_SIZE * pairs])
            k += 1

    def leaf(self, index: int) -> bytes:
        """Returns leaf hash `index`; requires 0 <= index < size."""
        if not 0 <= index < self.size:
            raise InvalidProofError(f"leaf index {index} is outside a tree of size {self.size}")
        return bytes(self._levels[0][HASH_SIZE * index : HASH_SIZE * (index + 1)])

    def _subtree(self, lo: int, hi: int) -> bytes:
        n = hi - lo
        if n & (n - 1) == 0 and lo % n == 0:  # a perfect, aligned subtree: stored
            k = n.bit_length() - 1
            return bytes(self._levels[k][HASH_SIZE * (lo >> k) : HASH_SIZE * ((lo >> k) + 1)])
        k = _split(n)
        return node_hash(self._subtree(lo, lo + k), self._subtree(lo + k, hi))

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self.size:
            raise InvalidProofError(f"tree size {size} is outside 0..{self.size} (the leaves held)")

    def root(self, size: int | None = None) -> bytes:
        """Returns the root of the first `size` leaves (all by default); requires 0 <= size <= self.size."""
        size = self.size if size is None else size
        self._check_size(size)
        return self._subtree(0, size) if size else EMPTY_ROOT

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Returns leaf `index`'s audit path in the tree of the first `size` leaves; requires index < size."""
        size = self.size if size is None else size
        self._check_size(size)
        return _inclusion_path(size, index, self._subtree)

    def consistency_proof(self, old_size: int, size: int | None = None) -> list[bytes]:
        """Returns the proof that the first `old_size` leaves are a prefix of the first `size`."""
        size = self.size if size is None else size
        self._check_size(size)
        return _consistency_path(size, old_size, self._subtree)
