"""The per-log sequencer: appends canonical events as leaves and cuts blocks.

A pure state machine in the `step(state, input) -> outputs` shape: a Flink operator (or the
demo, or a test) keeps one `LogState` per log, feeds it entries in log order, and gets back the
blocks it sealed. Blocks are cut by leaf count, so the same input always gives the same blocks
(docs/design.md §6); `flush` seals a partial block at the end of a bounded input or at an
explicit cut marker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transforms.blocks import BlockHeader, seal_block
from transforms.checkpoint import Checkpoint, sign_checkpoint
from transforms.merkle import CompactRange, leaf_hash
from transforms.note import Signer


@dataclass(frozen=True)
class Entry:
    """One leaf: the canonical bytes and what search needs beside them."""

    canonical: bytes
    event_time: str
    attributes: Any = None


@dataclass(frozen=True)
class SequencedEntry:
    entry: Entry
    leaf_index: int
    leaf_hash: bytes


@dataclass(frozen=True)
class SealedBlock:
    header: BlockHeader
    entries: tuple[SequencedEntry, ...]
    block_hash: bytes


@dataclass
class LogState:
    """Everything a log needs to go on: O(log n) tree state, the last header, the open block."""

    log_id: str
    tree: CompactRange = field(default_factory=CompactRange)
    last_block: BlockHeader | None = None
    pending: list[tuple[Entry, bytes]] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Leaves sequenced so far, sealed or not."""
        return self.tree.size + len(self.pending)


def append(state: LogState, entry: Entry, block_size: int) -> SealedBlock | None:
    """Appends one entry; returns the block it completed, if any."""
    state.pending.append((entry, leaf_hash(entry.canonical)))
    if len(state.pending) >= block_size:
        return flush(state)
    return None


def flush(state: LogState) -> SealedBlock | None:
    """Seals the open block (if it has any entries) and returns it."""
    if not state.pending:
        return None
    pending, state.pending = state.pending, []
    first = state.tree.size
    hashes = [h for _, h in pending]
    header = seal_block(state.log_id, state.last_block, state.tree, hashes, (e.event_time for e, _ in pending))
    state.last_block = header
    entries = tuple(SequencedEntry(e, first + i, h) for i, (e, h) in enumerate(pending))
    return SealedBlock(header, entries, header.hash())


def checkpoint_for(block: BlockHeader, origin: str, signer: Signer) -> str:
    """Returns the signed checkpoint of the tree head that `block` ends at."""
    return sign_checkpoint(Checkpoint(origin, block.tree_size, block.tree_root), signer)
