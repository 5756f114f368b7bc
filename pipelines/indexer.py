"""The archive indexer: follows the WORM archive and loads every sealed block into ClickHouse.

ClickHouse is the search index and the archive is the source of truth (docs/design.md §8),
so the index is *derived* from the archive: the ingest job archives each block with its signed
checkpoint, and this indexer, in one process of its own, checks each new block against the
previous one (chain link, block root, tree root, checkpoint signature) and inserts its rows with
a per-block deduplication token. Re-running it is harmless; running it on an empty ClickHouse
rebuilds the index from the archive alone.

Why a separate process: embedded chDB may be opened by one process only, and it cannot be
loaded inside a Flink TaskManager's embedded Python (the JVM dies). The indexer runs in the
`auditlog ingest` process on the local default, in `auditlog index --follow` beside a cluster,
and inside `auditlog serve`, so the UI sees events as they arrive.

    auditlog index            # catch up once
    auditlog index --follow   # keep following
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipelines.io.archive import ArchiveNotFoundError, expired_key
from pipelines.io.clickhouse.arrow import SealedBlock
from transforms.blocks import BlockHeader, decode_expired_block, verify_block
from transforms.checkpoint import open_checkpoint
from transforms.errors import VerificationError
from transforms.merkle import CompactRange, leaf_hashes
from transforms.note import Verifier
from transforms.retention import LegalHold

log = logging.getLogger(__name__)


class IndexingHalted(VerificationError):
    """A block in the archive does not follow from the indexed log; indexing of that log stops."""


GROUP_EVENTS = 10_000
"""The indexer inserts verified blocks together until they hold this many events (or it has no more).

An insert has a fixed cost of ~20 ms in embedded chDB (a part written, later merged), ~20 µs an
event at 1,000-event blocks: `make bench`'s indexer table measures 29-40 µs of CPU an event one
block per insert, 15-17 with 5 blocks and 11-12 with 10; 20 blocks cost more than 10 (13.8-15.5).
"""

GROUP_HOLD_S = 3.0
"""How long a following indexer holds a log's blocks back while they add up to fewer than GROUP_EVENTS.

Polling every second beside a running job, the indexer found 2-3 new blocks a log a pass, and
inserted them at that size's cost (bench-ingest at parallelism 1: 47.5 µs of CPU an event by
difference). Held up to 3 s, a live log goes in at about ten blocks an insert; a search sees an
event at most ~4 s after its block is archived. A pass with nothing new for a log still inserts
what waited longer than this, and the last pass of `wait_quiet` holds nothing back.
"""


@dataclass
class _LogProgress:
    last: BlockHeader | None = None
    tree: CompactRange = field(default_factory=CompactRange)
    interrupted: int | None = None
    """The last block of an insert a crash cut short (its leaves are in, its block rows are not)."""
    held: _Group | None = None
    """Blocks verified by earlier passes and held back for a larger insert (`GROUP_HOLD_S`)."""


class _Group:
    """Blocks verified since the log's last insert, waiting to go in together."""

    def __init__(self, last: BlockHeader | None, tree: CompactRange) -> None:
        self.last = last
        self.tree = tree
        self.blocks: list[SealedBlock] = []
        self.notes: list[str | None] = []
        self.events = 0
        self.held_since: float | None = None  # when a pass first held it back

    def add(self, block: SealedBlock, note: str, tree: CompactRange) -> None:
        self.blocks.append(block)
        self.notes.append(note)
        self.events += block.header.leaf_count
        self.last, self.tree = block.header, tree


@dataclass
class IndexStats:
    blocks: int = 0
    events: int = 0
    halted: dict[str, str] = field(default_factory=dict)


class ArchiveIndexer:
    """Loads archived blocks into ClickHouse in log order, verifying each one on the way."""

    def __init__(
        self, archive: Any, clickhouse: Any, verifier: Verifier, origin_prefix: str, core: str = "auto"
    ) -> None:
        from pipelines.retention import HoldWatcher

        self.archive = archive
        self.clickhouse = clickhouse
        self.verifier = verifier
        self.origin_prefix = origin_prefix
        self.core = core
        self.progress: dict[str, _LogProgress] = {}
        self.stats = IndexStats()
        self.clock = time.monotonic  # what holding blocks back (`GROUP_HOLD_S`) is timed by
        self.holds = HoldWatcher(archive)
        self._active_holds: tuple[LegalHold, ...] = ()

    def _resume(self, log_id: str) -> _LogProgress:
        """Where the index of `log_id` stands: its last header and the tree after it."""
        progress = self.progress.get(log_id)
        if progress is None:
            progress = _LogProgress()
            headers = self.clickhouse.block_headers(log_id)
            if headers:
                progress.last = headers[-1]
                leaves = self.clickhouse.leaf_hashes(log_id, headers[-1].tree_size)
                progress.tree.extend(leaves)
                if progress.tree.root() != headers[-1].tree_root:
                    raise IndexingHalted(f"log {log_id}: ClickHouse's leaves do not give its last tree root")
            progress.interrupted = self.clickhouse.interrupted_insert(log_id, progress.tree.size)
            self.progress[log_id] = progress
        return progress

    def sync_once(self, on_block: Callable[[str, BlockHeader], None] | None = None, hold_s: float = 0.0) -> int:
        """Indexes every archived block not yet in ClickHouse; returns how many it loaded.

        Legal holds placed or released since the last pass are applied first, and new rows of
        held events are written exempt from expiry. With `hold_s`, a log's verified blocks that
        hold fewer than GROUP_EVENTS events wait in memory for the next pass, for up to `hold_s`
        seconds, so that they go in with the blocks that follow them (`follow`).
        """
        self._active_holds = self.holds.sync(self.clickhouse)
        loaded = 0
        for log_id in self.archive.list_logs():
            if log_id in self.stats.halted:
                continue
            try:
                loaded += self._sync_log(log_id, on_block, hold_s)
            except VerificationError as exc:
                self.stats.halted[log_id] = str(exc)
                log.error("indexer: stopped indexing log %s: %s (run `auditlog verify`)", log_id, exc)
            except Exception:
                # An insert may have stopped halfway: the next pass starts the log again from what
                # ClickHouse holds (`_resume` finds an interrupted insert), not from memory.
                self.progress.pop(log_id, None)
                raise
        return loaded

    def _sync_log(self, log_id: str, on_block: Callable[[str, BlockHeader], None] | None, hold_s: float = 0.0) -> int:
        progress = self._resume(log_id)
        # Blocks held back by the last pass (never after an interrupted insert) go on growing.
        group, progress.held = progress.held or _Group(progress.last, progress.tree), None
        after = group.last.block_index if group.last else None
        origin = f"{self.origin_prefix}/{log_id}"
        loaded = 0
        expected = after + 1 if after is not None else 0
        for index in self.archive.list_blocks(log_id, after=after):
            while expected < index:  # blocks that expired before they were indexed (a rebuilt index)
                loaded += self._flush(log_id, group, progress, on_block, complete=True)
                progress.last, progress.tree = self._index_expired(log_id, expected, progress)
                group = _Group(progress.last, progress.tree)
                expected += 1
            expected = index + 1
            header, entries = self.archive.read_block(log_id, index)
            if header.log_id != log_id or header.block_index != index:
                raise IndexingHalted(f"object of log {log_id} block {index} holds {header.log_id}/{header.block_index}")
            hashes = leaf_hashes(entries)  # one call for the block (compiled when built)
            verify_block(header, group.last, hashes)
            tree = group.tree.copy()
            tree.extend(hashes)
            if tree.root() != header.tree_root:
                raise IndexingHalted(f"log {log_id} block {index}: tree root does not follow from the leaves")
            try:
                note = self.archive.get_checkpoint(log_id, header.tree_size)
            except ArchiveNotFoundError:
                log.info("indexer: checkpoint of %s at %d not archived yet; next pass", log_id, header.tree_size)
                break
            checkpoint = open_checkpoint(note, self.verifier, origin=origin)
            if (checkpoint.size, checkpoint.root) != (header.tree_size, header.tree_root):
                raise IndexingHalted(f"log {log_id} block {index}: signed checkpoint disagrees with the header")
            group.add(SealedBlock(header, entries, hashes), note, tree)
            if index == progress.interrupted or (progress.interrupted is None and group.events >= GROUP_EVENTS):
                loaded += self._flush(log_id, group, progress, on_block)
                group = _Group(progress.last, progress.tree)
        if hold_s > 0 and group.blocks and progress.interrupted is None:
            now = self.clock()
            if group.held_since is None:
                group.held_since = now
            if now - group.held_since < hold_s:
                progress.held = group
                return loaded
        return loaded + self._flush(log_id, group, progress, on_block)

    def _flush(
        self,
        log_id: str,
        group: _Group,
        progress: _LogProgress,
        on_block: Callable[[str, BlockHeader], None] | None,
        complete: bool = False,
    ) -> int:
        """Inserts the verified blocks of `group` in one `write_blocks`; returns how many.

        After a crash mid-insert (`progress.interrupted`), only the same blocks may go in
        together, so that the insert's deduplication token matches and nothing is indexed twice;
        a group that stops short of them waits for the next pass, unless `complete` says no more
        of them can come.
        """
        if not group.blocks:
            return 0
        last = group.blocks[-1].header
        if progress.interrupted is not None:
            if last.block_index < progress.interrupted and not complete:
                return 0
            if last.block_index != progress.interrupted:
                raise IndexingHalted(
                    f"log {log_id}: an insert of blocks up to {progress.interrupted} was interrupted and those "
                    f"blocks can no longer be read together (block {last.block_index + 1} expired since); "
                    "run `auditlog rebuild` for this log"
                )
        self.clickhouse.write_blocks(group.blocks, group.notes, holds=self._active_holds, core=self.core)
        progress.last, progress.tree, progress.interrupted = last, group.tree, None
        for block in group.blocks:
            self.stats.blocks += 1
            self.stats.events += block.header.leaf_count
            if on_block:
                on_block(log_id, block.header)
        return len(group.blocks)

    def _index_expired(self, log_id: str, index: int, progress: _LogProgress) -> tuple[BlockHeader, Any]:
        """Indexes the leaf hashes `auditlog expire` left in place of block `index`; returns (header, tree)."""
        try:
            header, hashes, _ = decode_expired_block(self.archive.get(expired_key(log_id, index)))
        except ArchiveNotFoundError:
            raise IndexingHalted(f"log {log_id}: block {index} is missing from the archive") from None
        verify_block(header, progress.last, hashes)
        tree = progress.tree.copy()
        tree.extend(hashes)
        if tree.root() != header.tree_root:
            raise IndexingHalted(f"log {log_id} expired block {index}: tree root does not follow from the leaves")
        note = self.archive.get_checkpoint(log_id, header.tree_size)
        checkpoint = open_checkpoint(note, self.verifier, origin=f"{self.origin_prefix}/{log_id}")
        if (checkpoint.size, checkpoint.root) != (header.tree_size, header.tree_root):
            raise IndexingHalted(f"log {log_id} expired block {index}: signed checkpoint disagrees with the header")
        self.clickhouse.write_expired_block(header, hashes)
        self.clickhouse.write_checkpoint(header, note)
        return header, tree

    def follow(
        self,
        stop: threading.Event,
        interval_s: float = 1.0,
        on_block: Callable[[str, BlockHeader], None] | None = None,
        hold_s: float = GROUP_HOLD_S,
    ) -> None:
        """Keeps indexing until `stop` is set; a failing archive or ClickHouse is retried, not fatal.

        Blocks of a log that add up to fewer than GROUP_EVENTS wait up to `hold_s` for more
        (`sync_once`); what is held when `stop` is set goes in before this returns.
        """
        while not stop.is_set():
            try:
                self.sync_once(on_block, hold_s)
            except Exception as exc:  # keep following through S3 or ClickHouse outages
                log.warning("indexer: sync failed, retrying in %.0f s: %s", interval_s, exc)
            stop.wait(interval_s)
        if any(progress.held for progress in self.progress.values()):
            try:
                self.sync_once(on_block)
            except Exception as exc:  # noqa: BLE001 - the next start indexes them from the archive
                log.warning("indexer: the blocks held for a larger insert were not indexed on stop: %s", exc)


class IndexerThread:
    """Runs an ArchiveIndexer in a background thread (used by `auditlog ingest` locally)."""

    def __init__(self, indexer: ArchiveIndexer, interval_s: float = 1.0) -> None:
        self.indexer = indexer
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=indexer.follow, args=(self._stop, interval_s), daemon=True, name="archive-indexer"
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started (a job that failed to build never starts it)
            self._thread.join(30)


def wait_quiet(indexer: ArchiveIndexer, settle_s: float = 0.0) -> IndexStats:
    """Syncs until a pass loads nothing (the archive has no more unindexed blocks)."""
    while indexer.sync_once():
        time.sleep(settle_s)
    return indexer.stats
