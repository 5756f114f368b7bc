"""Blocks and the hash chain: sealing, verifying, and every kind of tampering with a chain."""

from __future__ import annotations

import dataclasses

import pytest

from transforms.blocks import GENESIS_HASH, BlockHeader, seal_block, verify_chain
from transforms.errors import ChainError, RootMismatchError
from transforms.merkle import CompactRange, leaf_hash, root


@dataclasses.dataclass(frozen=True)
class Block:
    header: BlockHeader
    leaf_hashes: list[bytes]

    @property
    def block_hash(self) -> bytes:
        return self.header.hash()


@dataclasses.dataclass
class State:
    tree: CompactRange = dataclasses.field(default_factory=CompactRange)


def build(n: int, block_size: int):
    """Leaves e0..e(n-1) cut into blocks of `block_size` (the last one partial), as the sequencer cuts them."""
    state, blocks, last = State(), [], None
    for start in range(0, n, block_size):
        indexes = range(start, min(n, start + block_size))
        hashes = [leaf_hash(f"e{i}".encode()) for i in indexes]
        times = [f"2026-01-01T00:00:{i % 60:02d}.000Z" for i in indexes]
        last = seal_block("p0", last, state.tree, hashes, times)
        blocks.append(Block(last, hashes))
    return state, blocks


def chain(blocks):
    return [(b.header, b.leaf_hashes) for b in blocks]


def test_blocks_cover_the_log_and_chain():
    state, blocks = build(103, 10)
    assert [b.header.leaf_count for b in blocks] == [10] * 10 + [3]
    assert blocks[0].header.prev_block_hash == GENESIS_HASH
    for prev, cur in zip(blocks, blocks[1:], strict=False):
        assert cur.header.prev_block_hash == prev.block_hash
    all_leaves = [leaf_hash(f"e{i}".encode()) for i in range(103)]
    assert blocks[-1].header.tree_root == root(all_leaves) == state.tree.root()
    assert verify_chain(chain(blocks)).root() == root(all_leaves)


def test_same_input_gives_identical_blocks():
    _, a = build(57, 8)
    _, b = build(57, 8)
    assert [x.block_hash for x in a] == [x.block_hash for x in b]


def test_header_round_trips_through_json():
    _, blocks = build(5, 2)
    h = blocks[1].header
    assert BlockHeader.from_json(h.canonical_bytes()) == h


def _tamper(blocks, i, **changes):
    c = chain(blocks)
    header, leaves = c[i]
    c[i] = (dataclasses.replace(header, **changes), leaves)
    return c


def test_chain_tampering_is_detected():
    _, blocks = build(40, 8)
    c = chain(blocks)
    modified = list(c)
    modified[2] = (c[2][0], [leaf_hash(b"forged")] + c[2][1][1:])
    with pytest.raises(RootMismatchError):
        verify_chain(modified)
    deleted = list(c)
    deleted[2] = (c[2][0], c[2][1][:-1])
    with pytest.raises(ChainError):
        verify_chain(deleted)
    with pytest.raises(ChainError):
        verify_chain(c[:2] + c[3:])  # a whole block removed
    with pytest.raises(ChainError):
        verify_chain([c[1], c[0]] + c[2:])  # reordered
    reordered_leaves = list(c)
    reordered_leaves[1] = (c[1][0], c[1][1][::-1])
    with pytest.raises(RootMismatchError):
        verify_chain(reordered_leaves)
    with pytest.raises(ChainError):
        verify_chain(_tamper(blocks, 3, prev_block_hash=b"\x00" * 32))
    # A rewritten header with a consistent block root but the old successor link breaks the chain.
    rewritten = _tamper(blocks, 1, max_event_time="2030-01-01T00:00:00.000Z")
    with pytest.raises(ChainError):
        verify_chain(rewritten)
    with pytest.raises(RootMismatchError):
        verify_chain(_tamper(blocks, len(blocks) - 1, tree_root=b"\x01" * 32))
