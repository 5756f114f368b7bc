r"""Blocks and the hash chain: the seed's chained blocks, built on the RFC 9162 tree.

A block is a run of consecutive leaves of one log. Its header commits to where the run sits in
the log (first leaf index, leaf count), to the leaves themselves (the block's own Merkle root),
to the whole log so far (tree size and root after the block) and to the previous block's hash:

    block_hash = SHA-256("auditlog/block/v1\n" ‖ JCS(header))

so rewriting any historical block changes every later hash, and every block also pins a tree
head that a signed checkpoint can be compared with. `seal_block` computes a header;
`verify_block` and `verify_chain` are its verify twins.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from hashlib import sha256
from typing import Any

from transforms.errors import ChainError, RootMismatchError
from transforms.jcs import canonicalize
from transforms.merkle import HASH_SIZE, CompactRange, root

BLOCK_DOMAIN = b"auditlog/block/v1\n"
GENESIS_HASH = bytes(HASH_SIZE)
HEADER_VERSION = 1


@dataclass(frozen=True)
class BlockHeader:
    """The header of one sealed block; hashes are raw 32-byte values."""

    log_id: str
    block_index: int
    first_leaf_index: int
    leaf_count: int
    tree_size: int
    tree_root: bytes
    block_root: bytes
    prev_block_hash: bytes
    min_event_time: str
    max_event_time: str
    version: int = HEADER_VERSION

    def to_json(self) -> dict[str, Any]:
        """Returns the header as a JSON object with hex hashes (the form that is hashed)."""
        obj = asdict(self)
        for key in ("tree_root", "block_root", "prev_block_hash"):
            obj[key] = obj[key].hex()
        return obj

    def canonical_bytes(self) -> bytes:
        return canonicalize(self.to_json())

    def hash(self) -> bytes:
        return sha256(BLOCK_DOMAIN + self.canonical_bytes()).digest()

    @classmethod
    def from_json(cls, obj: dict[str, Any] | str | bytes) -> BlockHeader:
        if isinstance(obj, (str, bytes)):
            obj = json.loads(obj)
        assert isinstance(obj, dict)
        fields = dict(obj)
        try:
            for key in ("tree_root", "block_root", "prev_block_hash"):
                fields[key] = bytes.fromhex(fields[key])
            return cls(**fields)
        except (KeyError, TypeError, ValueError) as exc:
            raise ChainError(f"block header is malformed: {exc}") from None


def seal_block(
    log_id: str,
    prev: BlockHeader | None,
    tree: CompactRange,
    leaf_hashes: Sequence[bytes],
    event_times: Iterable[str],
) -> BlockHeader:
    """Appends `leaf_hashes` to `tree` (in place) and returns the header of the new block.

    Requires `tree` to hold exactly the leaves of all earlier blocks (size == prev's tree size)
    and at least one leaf. `event_times` are the leaves' ISO-8601 UTC times.
    """
    if not leaf_hashes:
        raise ValueError("a block needs at least one leaf")
    expected = prev.tree_size if prev is not None else 0
    if tree.size != expected:
        raise ChainError(f"log {log_id}: tree has {tree.size} leaves but the previous block ends at {expected}")
    times = sorted(event_times)
    first = tree.size
    tree.extend(leaf_hashes)
    return BlockHeader(
        log_id=log_id,
        block_index=prev.block_index + 1 if prev is not None else 0,
        first_leaf_index=first,
        leaf_count=len(leaf_hashes),
        tree_size=tree.size,
        tree_root=tree.root(),
        block_root=root(leaf_hashes),
        prev_block_hash=prev.hash() if prev is not None else GENESIS_HASH,
        min_event_time=times[0] if times else "",
        max_event_time=times[-1] if times else "",
    )


def verify_block(header: BlockHeader, prev: BlockHeader | None, leaf_hashes: Sequence[bytes]) -> None:
    """Checks a block's position, link and own root against its predecessor and its leaves.

    Does not check `tree_root` (that needs the whole log; see verify_chain). Raises ChainError
    or RootMismatchError.
    """
    where = f"log {header.log_id} block {header.block_index}"
    want_index = prev.block_index + 1 if prev is not None else 0
    if header.block_index != want_index:
        raise ChainError(f"{where}: expected block index {want_index}")
    if prev is not None and prev.log_id != header.log_id:
        raise ChainError(f"{where}: previous block belongs to log {prev.log_id}")
    want_prev = prev.hash() if prev is not None else GENESIS_HASH
    if header.prev_block_hash != want_prev:
        raise ChainError(
            f"{where}: previous-block hash {header.prev_block_hash.hex()} does not link to {want_prev.hex()}"
        )
    want_first = prev.tree_size if prev is not None else 0
    if header.first_leaf_index != want_first:
        raise ChainError(f"{where}: first leaf index {header.first_leaf_index}, expected {want_first}")
    if header.leaf_count != len(leaf_hashes) or header.leaf_count < 1:
        raise ChainError(f"{where}: header says {header.leaf_count} leaves, found {len(leaf_hashes)}")
    if header.tree_size != header.first_leaf_index + header.leaf_count:
        raise ChainError(f"{where}: tree size {header.tree_size} is not first leaf + leaf count")
    calculated = root(leaf_hashes)
    if calculated != header.block_root:
        raise RootMismatchError(header.block_root, calculated, f"{where} block root")


def verify_chain(blocks: Iterable[tuple[BlockHeader, Sequence[bytes]]]) -> CompactRange:
    """Verifies a log's blocks from genesis, in order, each with its leaf hashes.

    Returns the log's compact range after the last block. Raises ChainError or
    RootMismatchError at the first block that does not check out.
    """
    tree = CompactRange()
    prev: BlockHeader | None = None
    for header, leaves in blocks:
        verify_block(header, prev, leaves)
        tree.extend(leaves)
        calculated = tree.root()
        if calculated != header.tree_root:
            raise RootMismatchError(
                header.tree_root, calculated, f"log {header.log_id} block {header.block_index} tree root"
            )
        prev = header
    return tree


BLOCK_OBJECT_VERSION = "auditlog-block/v1"


def encode_block_object(header: BlockHeader, entries: Sequence[bytes]) -> bytes:
    """Returns the archive object of a sealed block: a version line, the header, one entry a line.

    Entries are canonical JSON (RFC 8785 never writes a raw newline), so the object is plain
    JSON Lines that anyone can read; the same block always gives the same bytes.
    """
    if len(entries) != header.leaf_count:
        raise ChainError(f"block {header.block_index} has {header.leaf_count} leaves, got {len(entries)} entries")
    for i, entry in enumerate(entries):
        if b"\n" in entry:
            raise ChainError(f"entry {header.first_leaf_index + i} contains a newline; it is not canonical JSON")
    lines = [BLOCK_OBJECT_VERSION.encode(), header.canonical_bytes(), *entries]
    return b"\n".join(lines) + b"\n"


def decode_block_object(data: bytes) -> tuple[BlockHeader, list[bytes]]:
    """Parses an archive block object; checks its shape, not its hashes (see verify_block)."""
    lines = data.split(b"\n")
    if len(lines) < 3 or lines[-1] != b"" or lines[0] != BLOCK_OBJECT_VERSION.encode():
        raise ChainError(f"not an {BLOCK_OBJECT_VERSION} object")
    header = BlockHeader.from_json(lines[1])
    entries = lines[2:-1]
    if len(entries) != header.leaf_count:
        raise ChainError(
            f"log {header.log_id} block {header.block_index}: header says {header.leaf_count} leaves, "
            f"object holds {len(entries)}"
        )
    return header, entries


BLOCK_HEADER_VERSION = "auditlog-block/v2"


def encode_block_header(header: BlockHeader) -> bytes:
    """Returns the archive object of a sealed block whose events live in its log's entry bundles.

    A version line and the header: the events' canonical bytes are stored once, in the log's
    tlog-tiles entry bundles (docs/design.md §13), and a reader takes leaves first_leaf_index ..
    tree_size - 1 from the bundles of the tree of `tree_size`. The block hash is the header's, so
    the chain is the same whichever object holds the entries.
    """
    return b"\n".join([BLOCK_HEADER_VERSION.encode(), header.canonical_bytes()]) + b"\n"


def decode_block(data: bytes) -> tuple[BlockHeader, list[bytes] | None]:
    """Parses either block object: (header, entries) of an `auditlog-block/v1`, (header, None) of a v2.

    Checks the shape, not the hashes (see verify_block).
    """
    if data.startswith(BLOCK_HEADER_VERSION.encode() + b"\n"):
        lines = data.split(b"\n")
        if len(lines) != 3 or lines[-1] != b"":
            raise ChainError(f"not an {BLOCK_HEADER_VERSION} object (a version line and a header)")
        return BlockHeader.from_json(lines[1]), None
    return decode_block_object(data)


EXPIRED_BLOCK_VERSION = "auditlog-expired-block/v1"


def encode_expired_block(header: BlockHeader, leaf_hashes: Sequence[bytes], retain_until: str) -> bytes:
    """Returns what stays of a block once its retention ended.

    A version line, the header, the block's retention end, and its leaf hashes in hex, one a line.
    With it the log's chain and tree (and so every retained event's proof) still verify after the
    block object itself expired. `retain_until` is the latest retention end of the block's events.
    """
    if len(leaf_hashes) != header.leaf_count:
        raise ChainError(f"block {header.block_index} has {header.leaf_count} leaves, got {len(leaf_hashes)} hashes")
    lines = [EXPIRED_BLOCK_VERSION, header.canonical_bytes().decode(), retain_until, *(h.hex() for h in leaf_hashes)]
    return ("\n".join(lines) + "\n").encode()


def decode_expired_block(data: bytes) -> tuple[BlockHeader, list[bytes], str]:
    """Parses an expired block: (header, leaf hashes, retention end); checks its shape, not its hashes."""
    lines = data.decode("ascii", "replace").split("\n")
    if len(lines) < 4 or lines[-1] != "" or lines[0] != EXPIRED_BLOCK_VERSION:
        raise ChainError(f"not an {EXPIRED_BLOCK_VERSION} object")
    header = BlockHeader.from_json(lines[1])
    try:
        hashes = [bytes.fromhex(line) for line in lines[3:-1]]
    except ValueError as exc:
        raise ChainError(f"log {header.log_id} block {header.block_index}: a leaf hash is not hex ({exc})") from None
    if len(hashes) != header.leaf_count or any(len(h) != HASH_SIZE for h in hashes):
        raise ChainError(
            f"log {header.log_id} block {header.block_index}: header says {header.leaf_count} leaves, "
            f"the expired block holds {len(hashes)} hashes"
        )
    return header, hashes, lines[2]
