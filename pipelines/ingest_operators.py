"""The ingest job's Python operator: the keyed sequencer (pipelines/ingest.py wires it).

`SequenceFunction` runs `LogSequencer` (pipelines/ingest_core.py) with the log's keyed state and
hands each sealed block to a `BackgroundArchiver`, which puts it and its signed checkpoint into
the WORM archive on a thread of its own while the sequencer goes on.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pyflink.datastream.functions import KeyedProcessFunction, RuntimeContext

from pipelines.batches import read_batch
from pipelines.ingest_config import JobConfig
from pipelines.ingest_core import (
    ArchivedEntries,
    BlockDedupe,
    LogCursor,
    LogSequencer,
    SealedBlockRecord,
    archived_event_keys,
    resume_cursor,
)
from pipelines.state_keys import partition_of_key
from schemas.settings import Settings
from transforms.note import Signer

MAX_TIMESTAMP = 2**63 - 1
# Libraries whose DEBUG records the operators' S3 and HTTP calls make: see quiet_library_debug.
CHATTY_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3")
METRICS_EVERY_S = 1.0  # the accepted and duplicate counters reach Flink at least this often
# Sealed blocks the sequencer may run ahead of the archive: ~1 MB each in memory, ~50 ms each to put.
ARCHIVE_AHEAD_BLOCKS = 4


def quiet_library_debug() -> None:
    """Stops the HTTP libraries' DEBUG records at their loggers inside a TaskManager.

    Thread mode's embedded interpreter (PEMJA) sets the root logger to DEBUG and hands every
    record to Java over JNI, under a lock, where log4j then drops it. botocore writes dozens of
    DEBUG records per S3 call: in the ingest job that was 12% of the TaskManager's Python samples
    (py-spy). Their INFO and above still reach the TaskManager's log.
    """
    for name in CHATTY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)


class SequenceFunction(KeyedProcessFunction):  # type: ignore[misc]  # pyflink has no types: its base is Any
    """Keyed by partition: feeds each batch's records to the LogSequencer with the log's keyed state.

    Its elements are (partition, frame) batches from the JVM batcher (pipelines/batches.py). The
    open block's entries go into the list state once a batch, not once a record; every batch
    arrives before the checkpoint barrier that follows its records, so each checkpoint still
    holds the open block whole.
    """

    def __init__(self, config: JobConfig, dlq_tag: Any) -> None:
        self.config = config
        self.dlq_tag = dlq_tag

    def open(self, runtime_context: RuntimeContext) -> None:
        from pyflink.common import Types
        from pyflink.common.time import Duration, Time
        from pyflink.datastream.state import (
            ListStateDescriptor,
            MapStateDescriptor,
            StateTtlConfig,
            ValueStateDescriptor,
        )

        from pipelines.io.archive import open_archive
        from pipelines.io.keystore import open_keystore

        quiet_library_debug()
        ttl = (
            StateTtlConfig.new_builder(Time.days(self.config.dedupe_ttl_days))
            .set_update_type(StateTtlConfig.UpdateType.OnCreateAndWrite)
            .set_state_visibility(StateTtlConfig.StateVisibility.NeverReturnExpired)
            # The cleanup Flink uses by default with RocksDB, named explicitly: PyFlink's default
            # builds its 30-day compaction period with a py4j call, and a standalone TaskManager's
            # embedded Python has no gateway (it tries to start a JVM and the task fails). Only
            # the entry count reaches Java, which keeps its own 30-day period.
            .disable_cleanup_in_background()
            .cleanup_in_rocksdb_compact_filter(1000, periodic_compaction_time=Duration(None))
            .build()
        )
        seen = MapStateDescriptor("seen-event-ids", Types.STRING(), Types.BOOLEAN())
        seen.enable_time_to_live(ttl)
        self.seen_state = runtime_context.get_map_state(seen)
        self.dedupes: dict[int, BlockDedupe] = {}  # per partition; all over the one keyed MapState
        self.pending_state = runtime_context.get_list_state(ListStateDescriptor("open-block", Types.STRING()))
        self.cursor_state = runtime_context.get_state(ValueStateDescriptor("log-cursor", Types.STRING()))
        signer = Signer.from_key(Path(self.config.signer_key_file).read_text())
        self.keystore = open_keystore(Settings().replace(**self.config.keystore))
        self.archived = ArchivedEntries(open_archive(**self.config.archive))
        self.archiver = BackgroundArchiver(open_archive(**self.config.archive), self.config.options.retention.longest())
        self.sequencer = LogSequencer(self.config.options, self.keystore, signer, self.archived)
        self.cursors: dict[int, LogCursor] = {}
        self.timed: set[int] = set()  # partitions whose end-of-input timer this process registered
        metrics = self.metrics = runtime_context.get_metrics_group()
        self.m_accepted = metrics.counter("events_accepted")
        self.m_duplicates = metrics.counter("duplicates_dropped")
        self.m_dlq = metrics.counter("dead_letters")
        self.m_blocks = metrics.counter("blocks_sealed")
        self.m_erased = metrics.counter("erased_subject_events")
        self.tree_sizes: dict[str, tuple[Any, int]] = {}  # log id -> (its counter, the size it reports)
        self.report_by = time.monotonic() + METRICS_EVERY_S

    def close(self) -> None:
        self._report_counts()
        self.keystore.close()
        self.archiver.close()

    def _cursor(self, partition: int, offset: int | None = None) -> LogCursor:
        cursor = self.cursors.get(partition)
        if cursor is None:
            # First record of this key since (re)start: load what the last checkpoint holds.
            stored = self.cursor_state.value()
            log_id = self.config.options.log_id(partition)
            pending = [entry.encode() for entry in (self.pending_state.get() or [])]
            cursor = LogCursor.from_bytes(stored.encode(), pending) if stored else LogCursor(log_id, pending=pending)
            self.dedupes[partition] = BlockDedupe(self.seen_state, pending)
            if offset:
                cursor = self._resume(cursor, offset, self.dedupes[partition])
            self.cursors[partition] = cursor
            # A counter, not a gauge: Flink reads a Python gauge by calling into the interpreter
            # from its metrics thread, which crashed a TaskManager (SIGSEGV in take_gil) when the
            # query came after the job had finished. A counter lives in the JVM; it is raised
            # by each sealed block, so it always reads a signed checkpoint's size.
            counter = self.metrics.add_group("log", log_id).counter("tree_size")
            counter.inc(cursor.tree.size)
            self.tree_sizes[log_id] = (counter, cursor.tree.size)
        return cursor

    def _resume(self, cursor: LogCursor, offset: int, dedupe: BlockDedupe) -> LogCursor:
        """A log whose records before `offset` were deleted goes on from the archive's resume point.

        `auditlog erase` deletes what the archive holds from the topic. A job that then starts
        without state (or restores a checkpoint older than the archive, whose records are gone)
        would start the log again from leaf 0, or re-seal an archived block without its records.
        The archive is ahead exactly when it has a resume point at or before `offset` past the
        cursor's last block; then the log goes on from there (the open block it restored was
        sealed into the archive already) with every archived event id remembered for dedupe.
        """
        resumed = resume_cursor(cursor.log_id, offset, self.archived)
        if resumed is None or resumed.last_block is None:
            return cursor
        resumed_from = resumed.last_block.block_index
        if cursor.last_block is not None and resumed_from <= cursor.last_block.block_index:
            return cursor  # an ordinary restore: the state is as far as the archive
        seen = archived_event_keys(cursor.log_id, resumed_from, self.archived)
        dedupe.restart(seen)
        self.pending_state.clear()
        self.cursor_state.update(resumed.to_bytes().decode())
        print(
            f"ingest: {cursor.log_id} starts at offset {offset}: resumed after block {resumed_from} "
            f"(tree size {resumed.tree.size}) from the archive, {len(seen)} event ids restored for dedupe",
            file=sys.stderr,
        )
        return resumed

    def process_element(self, value: Any, ctx: KeyedProcessFunction.Context) -> Any:
        partition = value[0]
        frame = bytes(value[1])
        if not frame:  # the batcher's barrier marker: a checkpoint follows, so its blocks must be archived
            self.archiver.wait()
            return
        records = read_batch(partition, frame)
        cursor = self._cursor(partition, records[0].offset)
        if partition not in self.timed:
            # Seal whatever is open when a bounded input ends (its final watermark fires this).
            # Once per log and process: Flink keeps one timer per key and time, restores included.
            self.timed.add(partition)
            ctx.timer_service().register_event_time_timer(MAX_TIMESTAMP)
        dedupe = self.dedupes[partition]
        step = self.sequencer.step
        saved = len(cursor.pending)  # the open block's entries already in the list state
        for record in records:
            outputs = step(cursor, dedupe, record)
            if outputs:
                yield from self._emit(cursor, dedupe, outputs)
                if not cursor.pending:  # a block was sealed: its entries left the list state
                    saved = 0
        if len(cursor.pending) > saved:  # the entries that joined the open block in this batch
            self.pending_state.add_all([entry.decode() for entry in cursor.pending[saved:]])
        if time.monotonic() >= self.report_by:
            self._report_counts()

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Any:
        partition = partition_of_key(ctx.get_current_key())
        cursor = self._cursor(partition)
        block = self.sequencer.seal(cursor)
        yield from self._emit(cursor, self.dedupes[partition], [("block", block)] if block else [])
        self.archiver.wait()  # the end of a bounded input: the job finishes with its blocks archived

    def _emit(self, cursor: LogCursor, dedupe: BlockDedupe, outputs: list[tuple[str, Any]]) -> Any:
        for kind, item in outputs:
            if kind == "dlq":
                self.m_dlq.inc()
                yield self.dlq_tag, item.to_json().decode()
            else:
                # The block's entries leave the list state and its dedupe keys enter the map
                # state in the same step, so every checkpoint holds each key in one of the two.
                self.pending_state.clear()
                dedupe.sealed()
                self.cursor_state.update(cursor.to_bytes().decode())
                self.m_blocks.inc()
                self._report_tree_size(cursor)
                self.archiver.put(item)
        # From the sequencer's counters, handed to Flink at every block and at least every
        # METRICS_EVERY_S: each inc() is a call into the JVM, which per record cost ~14% of the
        # job's Python time.
        if outputs:
            self._report_counts()

    def _report_counts(self) -> None:
        self.report_by = time.monotonic() + METRICS_EVERY_S
        counters = self.sequencer.counters
        if counters.accepted:
            self.m_accepted.inc(counters.accepted)
            counters.accepted = 0
        if counters.duplicates:
            self.m_duplicates.inc(counters.duplicates)
            counters.duplicates = 0
        if counters.erased_subject_events:
            self.m_erased.inc(counters.erased_subject_events)
            counters.erased_subject_events = 0

    def _report_tree_size(self, cursor: LogCursor) -> None:
        counter, reported = self.tree_sizes[cursor.log_id]
        if cursor.tree.size > reported:
            counter.inc(cursor.tree.size - reported)
            self.tree_sizes[cursor.log_id] = (counter, cursor.tree.size)


class _Closed(Exception):
    """What a block queued when the archiver closed is failed with."""


class BackgroundArchiver:
    """Puts sealed blocks into the WORM archive in order, on one thread, while the sequencer goes on.

    `put` returns once the block is queued; the sequencer runs at most ARCHIVE_AHEAD_BLOCKS blocks
    ahead of the archive. `wait` returns when every queued block is archived: the sequencer calls
    it at the batcher's barrier marker (before each checkpoint) and at the end of input, so no
    checkpoint completes, and no bounded job finishes, ahead of its blocks. A failed put fails the
    next `put` or `wait`, which fails the job (it restarts from the last checkpoint and re-derives
    the blocks; re-puts of identical bytes are no-ops). Blocks queued after a failed one are not
    put, so the archive never holds a block after a missing one.
    """

    def __init__(self, archive: Any, evidence: Any, ahead: int = ARCHIVE_AHEAD_BLOCKS) -> None:
        self.archive = archive
        self.evidence = evidence
        self.ahead = ahead
        self.queued: deque[Future[None]] = deque()
        self.failed: BaseException | None = None
        # One thread: a log's blocks go in order (its tile builders are not shared between threads).
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="auditlog-archive")

    def put(self, block: SealedBlockRecord) -> None:
        while self.queued and self.queued[0].done():
            self.queued.popleft().result()  # raises the failure of an earlier put
        self.queued.append(self.pool.submit(self._put, block))
        while len(self.queued) > self.ahead:
            self.queued.popleft().result()

    def _put(self, block: SealedBlockRecord) -> None:
        if self.failed is not None:
            reason = self.failed if isinstance(self.failed, _Closed) else f"an earlier put failed ({self.failed})"
            raise RuntimeError(f"block {block.log_id}/{block.block_index} not archived: {reason}") from self.failed
        try:
            self.archive.put_sealed_block(block, self.evidence)
        except BaseException as exc:
            self.failed = exc
            raise

    def wait(self) -> None:
        while self.queued:
            self.queued.popleft().result()

    def close(self) -> None:
        """Stops: the put under way finishes, the blocks still queued are dropped.

        A finished input and every checkpoint have waited for their blocks already (`wait`), so
        what is still queued here was sealed after the last checkpoint of a task that is failing
        or being cancelled: the restart re-derives it from that checkpoint. Not putting it keeps
        the cancel short when S3 is down (one put's retries, not one for each queued block). A
        failure is reported, not raised: the task is going away.
        """
        if self.failed is None:
            self.failed = _Closed("the operator closed")
        try:
            self.wait()
        except Exception as exc:  # noqa: BLE001 - the task is closing; a restart re-derives the block
            print(f"ingest: a block was not archived before the operator closed: {exc}", file=sys.stderr)
        self.pool.shutdown(wait=True)
