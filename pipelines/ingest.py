"""The streaming ingest job: Kafka → validate → seal PII → dedupe → logs, blocks, checkpoints → sinks.

Run it with the CLI (a local mini-cluster by default, or a Flink cluster)::

    auditlog ingest --bounded              # read to the end offsets present at start, then finish
    auditlog ingest                        # run until stopped
    auditlog ingest --cluster http://127.0.0.1:8081

The graph (every stateful operator has a stable uid, so savepoints survive upgrades)::

    kafka source (SQL connector: value bytes + partition/offset/timestamp metadata)
      → key by partition_key(partition), in the JVM (the record enters Python once)
      → sequence (one log per partition: dedupe state, open block, tree)
          ├─ side output: dead letters → Kafka DLQ topic (exactly-once, transactional)
          └─ sealed blocks + signed checkpoints → WORM S3 (idempotent re-puts)
    archive → indexer (pipelines/indexer.py, its own process) → ClickHouse (per-block dedup tokens)

Upgrades: the sequence operator's state is keyed by `partition_key` since its uid became
`auditlog-sequence-v2`; a savepoint of a v1 job (keyed by the partition number) does not restore
into it. Flink refuses it, and must not be told to skip it (`--allowNonRestoredState` would
restart every log at size 0 beside its archived blocks): drain the v1 job to a final block, then
start the new job on a new topic or origin.

Exactly-once (docs/design.md §6, option a): a log's leaves are a function of its partition's
records, blocks are cut by count or by cut markers written into the partition, so a restore from
a checkpoint re-creates byte-identical blocks; S3 re-puts of identical bytes are no-ops, and the
indexer's ClickHouse inserts carry a per-block deduplication token.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.ingest_core import (
    MAX_PARALLELISM,
    ArchivedEntries,
    DeadLetter,
    IngestOptions,
    LogCursor,
    LogSequencer,
    SealedBlockRecord,
    SourceRecord,
    archived_event_keys,
    key_group,
    partition_key,
    partition_of_key,
    resume_cursor,
    service_sig,
)
from schemas.reserved import SERVICE_SIG_HEADER
from schemas.retention import load_policy
from schemas.settings import Settings
from transforms.note import Signer
from transforms.retention import RetentionPolicy

MAX_TIMESTAMP = 2**63 - 1
METRICS_EVERY_S = 1.0  # the accepted and duplicate counters reach Flink at least this often
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class JobConfig:
    """Everything the job's functions need on the workers (pickled with them)."""

    options: IngestOptions
    bootstrap: str
    signer_key_file: str
    keystore: dict[str, Any]
    archive: dict[str, Any]
    dlq_topic: str
    dedupe_ttl_days: int = 7
    group_id: str = "auditlog-ingest"


def source_ddl(config: JobConfig, bounded: bool, table: str = "audit_source") -> str:
    """The Kafka table: raw value bytes plus the record's partition, offset, timestamp and key."""
    bounded_opt = "'scan.bounded.mode' = 'latest-offset'," if bounded else ""
    return f"""
        CREATE TEMPORARY TABLE {table} (
            `k` BYTES,
            `v` BYTES,
            `partition` INT METADATA VIRTUAL,
            `offset` BIGINT METADATA VIRTUAL,
            `ts` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL,
            `headers` MAP<STRING, BYTES> METADATA VIRTUAL
        ) WITH (
            'connector' = 'kafka',
            'topic' = '{config.options.topic}',
            'properties.bootstrap.servers' = '{config.bootstrap}',
            'properties.group.id' = '{config.group_id}',
            'properties.isolation.level' = 'read_committed',
            'scan.startup.mode' = 'earliest-offset',
            {bounded_opt}
            'key.format' = 'raw',
            'key.fields' = 'k',
            'value.format' = 'raw',
            'value.fields-include' = 'EXCEPT_KEY'
        )
    """


def kafka_records(t_env: Any, config: JobConfig, bounded: bool) -> Any:
    """The source: Kafka records as (partition, (partition, offset, timestamp ms, key, value, service sig)) rows.

    The service signature is the record's SERVICE_SIG_HEADER (schemas/reserved.py), or null.
    """
    # EXTRACT reads a TIMESTAMP_LTZ in the session's time zone: pinned to UTC, EPOCH is the
    # record's epoch second on every machine, and MILLISECOND adds back what EPOCH drops.
    t_env.get_config().set("table.local-time-zone", "UTC")
    t_env.execute_sql(source_ddl(config, bounded))
    # Each row is (partition, record): the key first, so the JVM keys the stream (see keyed_by_partition).
    stream = t_env.to_data_stream(
        t_env.sql_query(
            f"SELECT {_partition_key_sql()}, ROW(`partition`, `offset`,"
            " CAST(EXTRACT(EPOCH FROM `ts`) AS BIGINT) * 1000 + EXTRACT(MILLISECOND FROM `ts`),"
            f" `k`, `v`, `headers`['{SERVICE_SIG_HEADER}']) FROM audit_source"
        )
    )
    # The rows are plain Rows; declaring their RowTypeInfo (the Table API's own is an
    # ExternalTypeInfo) is what PyFlink's keyed operator reads its input fields from.
    stream._j_data_stream.getTransformation().setOutputType(keyed_record_type().get_java_type_info())
    return stream


def _partition_key_sql() -> str:
    """The SQL of each record's state key: `partition_key(partition)`, from a table of the first 128."""
    keys = ", ".join(str(partition_key(p)) for p in range(MAX_PARALLELISM))
    return f"COALESCE(ARRAY[{keys}][`partition` + 1], `partition`)"


def recording_records(env: Any, path: str) -> Any:
    """The source of `auditlog ingest --from-recording`: a recording's records as `kafka_records` rows.

    Bounded, no broker: the file (pipelines/recording.py) is read here and handed to Flink as a
    non-parallel collection in file order, so each partition keeps its offset order. Requires a
    non-empty recording.
    """
    from pyflink.common import Row

    from pipelines.recording import iter_records

    rows = [
        Row(
            partition_key(r.partition),
            Row(r.partition, r.offset, r.timestamp_ms, r.key, r.value, service_sig(r.headers)),
        )
        for r in iter_records(path)
    ]
    if not rows:
        raise ValueError(f"recording {path} holds no records")
    row_type = keyed_record_type()
    # PyFlink pickles the collection into a temporary folder it never removes; the JVM has
    # read it once from_collection returns.
    spool, saved = tempfile.mkdtemp(prefix="auditlog-recording-"), tempfile.tempdir
    tempfile.tempdir = spool
    try:
        return (
            env.from_collection(rows, type_info=row_type)
            .name(f"recording {Path(path).name}")
            .uid("auditlog-recording-source-v1")
        )
    finally:
        tempfile.tempdir = saved
        shutil.rmtree(spool, ignore_errors=True)


def build_ingest(records: Any, config: JobConfig, dlq: Any | None = None) -> Any:
    """Adds the ingest graph after a source of (partition, (partition, offset, ts, key, value)) rows.

    Dead letters go to `dlq` (a Flink sink; default: the Kafka DLQ topic). Returns the stream of
    archived block names.
    """
    from pyflink.common import Types
    from pyflink.datastream import OutputTag

    dlq_tag = OutputTag("dead-letters", Types.STRING())
    sequenced = (
        keyed_by_partition(records)
        .process(SequenceFunction(config, dlq_tag), output_type=Types.PICKLED_BYTE_ARRAY())
        .name("sequence: dedupe, seal PII, append, cut blocks, sign")
        .uid("auditlog-sequence-v2")  # v2: state keyed by partition_key
    )
    sequenced.get_side_output(dlq_tag).sink_to(dlq if dlq is not None else dlq_sink(config)).name("dead letters").uid(
        "auditlog-dlq-sink-v1"
    )
    return (
        sequenced.map(ArchiveWriter(config), output_type=Types.STRING())
        .name("archive blocks and checkpoints to WORM S3")
        .uid("auditlog-archive-writer-v1")
    )


def record_type() -> Any:
    """The type of one source record: (partition, offset, timestamp ms, key, value, service signature)."""
    from pyflink.common import Types

    raw = Types.PRIMITIVE_ARRAY(Types.BYTE())
    return Types.ROW([Types.INT(), Types.LONG(), Types.LONG(), raw, raw, raw])


def keyed_record_type() -> Any:
    """The type of a source row: (partition, record)."""
    from pyflink.common import Types

    return Types.ROW([Types.INT(), record_type()])


def keyed_by_partition(records: Any) -> Any:
    """Keys (partition, record) rows by partition in the JVM; the keyed function gets the record.

    PyFlink's `key_by` would call a Python function for every record to compute its key, moving
    the whole record into Python and back before the shuffle. The sources here emit the key
    beside the record, so Flink's own KeyByKeySelector (what `key_by` uses after its Python step)
    keys them, and each record enters Python once, in the sequencer.
    """
    from pyflink.common import Types
    from pyflink.datastream.data_stream import KeyedStream
    from pyflink.java_gateway import get_gateway

    _check_key_groups()
    selector = get_gateway().jvm.org.apache.flink.streaming.api.functions.python.KeyByKeySelector()
    j_keyed = records._j_data_stream.keyBy(selector, Types.ROW([Types.INT()]).get_java_type_info())
    return KeyedStream(j_keyed, record_type(), records)


def _check_key_groups() -> None:
    """Warns if this Flink assigns state keys to key groups otherwise than `key_group` computes."""
    from pyflink.java_gateway import get_gateway

    gateway = get_gateway()
    jvm = gateway.jvm
    for partition in (0, 1, 2, 3):
        key = partition_key(partition)
        fields = gateway.new_array(jvm.java.lang.Object, 1)
        fields[0] = jvm.java.lang.Integer.valueOf(key)
        group = jvm.org.apache.flink.runtime.state.KeyGroupRangeAssignment.assignToKeyGroup(
            jvm.org.apache.flink.types.Row.of(fields), MAX_PARALLELISM
        )
        if group != key_group(key):
            logging.getLogger(__name__).warning(
                "Flink puts state key %d in key group %d, not %d: the logs may not spread evenly over the "
                "subtasks (they stay correct); update pipelines.ingest_core.key_group",
                key,
                group,
                key_group(key),
            )
            return


def dlq_sink(config: JobConfig) -> Any:
    """Kafka sink for dead letters, exactly-once through Flink's transactional KafkaSink."""
    from pyflink.common.serialization import SimpleStringSchema
    from pyflink.datastream.connectors.base import DeliveryGuarantee
    from pyflink.datastream.connectors.kafka import KafkaRecordSerializationSchema, KafkaSink

    return (
        KafkaSink.builder()
        .set_bootstrap_servers(config.bootstrap)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(config.dlq_topic)
            .set_value_serialization_schema(SimpleStringSchema())
            .build()
        )
        .set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE)
        .set_transactional_id_prefix(f"{config.group_id}-dlq")
        .set_property("transaction.timeout.ms", "600000")
        .build()
    )


from pyflink.datastream.functions import KeyedProcessFunction, MapFunction, RuntimeContext  # noqa: E402


class SequenceFunction(KeyedProcessFunction):  # type: ignore[misc]  # pyflink has no types: its base is Any
    """Keyed by partition: feeds each record to the LogSequencer with the log's keyed state."""

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
        self.dedupe = _MapStateDedupe(runtime_context.get_map_state(seen))
        self.pending_state = runtime_context.get_list_state(ListStateDescriptor("open-block", Types.STRING()))
        self.cursor_state = runtime_context.get_state(ValueStateDescriptor("log-cursor", Types.STRING()))
        signer = Signer.from_key(Path(self.config.signer_key_file).read_text())
        self.keystore = open_keystore(Settings().replace(**self.config.keystore))
        self.archived = ArchivedEntries(open_archive(**self.config.archive))
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

    def _cursor(self, partition: int, offset: int | None = None) -> LogCursor:
        cursor = self.cursors.get(partition)
        if cursor is None:
            # First record of this key since (re)start: load what the last checkpoint holds.
            stored = self.cursor_state.value()
            log_id = self.config.options.log_id(partition)
            pending = [entry.encode() for entry in (self.pending_state.get() or [])]
            cursor = LogCursor.from_bytes(stored.encode(), pending) if stored else LogCursor(log_id, pending=pending)
            if offset:
                cursor = self._resume(cursor, offset)
            self.cursors[partition] = cursor
            # A counter, not a gauge: Flink reads a Python gauge by calling into the interpreter
            # from its metrics thread, which crashed a TaskManager (SIGSEGV in take_gil) when the
            # query came after the job had finished. A counter lives in the JVM; it is raised
            # by each sealed block, so it always reads a signed checkpoint's size.
            counter = self.metrics.add_group("log", log_id).counter("tree_size")
            counter.inc(cursor.tree.size)
            self.tree_sizes[log_id] = (counter, cursor.tree.size)
        return cursor

    def _resume(self, cursor: LogCursor, offset: int) -> LogCursor:
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
        for key in seen:
            self.dedupe.seen(key)
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
        cursor = self._cursor(partition, value[1])
        if partition not in self.timed:
            # Seal whatever is open when a bounded input ends (its final watermark fires this).
            # Once per log and process: Flink keeps one timer per key and time, restores included.
            self.timed.add(partition)
            ctx.timer_service().register_event_time_timer(MAX_TIMESTAMP)
        record = SourceRecord(partition, value[1], value[2] or 0, _bytes(value[3]), _bytes(value[4]), _bytes(value[5]))
        before = len(cursor.pending)
        outputs = self.sequencer.step(cursor, self.dedupe, record)
        if len(cursor.pending) > before:
            self.pending_state.add(cursor.pending[-1].decode())
        yield from self._emit(cursor, outputs)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Any:
        cursor = self._cursor(partition_of_key(ctx.get_current_key()))
        block = self.sequencer.seal(cursor)
        yield from self._emit(cursor, [("block", block)] if block else [])

    def _emit(self, cursor: LogCursor, outputs: list[tuple[str, Any]]) -> Any:
        for kind, item in outputs:
            if kind == "dlq":
                self.m_dlq.inc()
                yield self.dlq_tag, item.to_json().decode()
            else:
                self.pending_state.clear()
                self.cursor_state.update(cursor.to_bytes().decode())
                self.m_blocks.inc()
                self._report_tree_size(cursor)
                yield item
        # From the sequencer's counters, handed to Flink at every block and at least every
        # METRICS_EVERY_S: each inc() is a call into the JVM, which per record cost ~14% of the
        # job's Python time.
        if outputs or time.monotonic() >= self.report_by:
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


class _MapStateDedupe:
    __slots__ = ("state",)

    def __init__(self, state: Any) -> None:
        self.state = state

    def seen(self, key: str) -> bool:
        if self.state.contains(key):
            return True
        self.state.put(key, True)
        return False


def _bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


class ArchiveWriter(MapFunction):  # type: ignore[misc]  # pyflink has no types: its base is Any
    """Archives each sealed block and its signed checkpoint in WORM S3 (idempotent re-puts).

    ClickHouse is loaded from the archive by the indexer (pipelines/indexer.py), outside Flink:
    embedded chDB is single-process and cannot live inside a TaskManager's embedded Python.
    """

    def __init__(self, config: JobConfig) -> None:
        self.config = config

    def open(self, runtime_context: RuntimeContext) -> None:
        from pipelines.io.archive import open_archive

        self.archive = open_archive(**self.config.archive)
        self.evidence = self.config.options.retention.longest()

    def map(self, block: SealedBlockRecord) -> str:
        self.archive.put_sealed_block(block, self.evidence)
        return f"{block.log_id}/{block.block_index}"


def job_config(
    settings: Any, topic: str | None = None, block_size: int | None = None, verifiable: bool = True
) -> JobConfig:
    """The job's configuration from the one settings object."""
    options = IngestOptions(
        topic=topic or settings.topic,
        origin_prefix=settings.origin,
        block_size=block_size or settings.block_size,
        verifiable=verifiable,
        retention=load_policy(settings.retention_policy_path),
        core=settings.core,
    )
    return JobConfig(
        options=options,
        bootstrap=settings.kafka_bootstrap,
        signer_key_file=str(settings.signer_key_file),
        keystore=keystore_spec(settings),
        archive=archive_spec(settings),
        dlq_topic=settings.dlq_topic,
        dedupe_ttl_days=settings.dedupe_ttl_days,
    )


def keystore_spec(settings: Any) -> dict[str, Any]:
    """The settings fields that open the key store on a worker."""
    return {
        "keystore_file": str(settings.keystore_path),
        "keystore_url": settings.keystore_url,
        "master_key_file": settings.master_key_file,
        "master_key": settings.master_key,
        "key_seed": settings.key_seed,
    }


def archive_spec(settings: Any) -> dict[str, Any]:
    return {
        "endpoint": settings.s3_endpoint,
        "region": settings.s3_region,
        "bucket": settings.bucket,
        "access_key": settings.s3_access_key,
        "secret_key": settings.s3_secret_key,
    }


def config_to_json(config: JobConfig) -> str:
    data = dataclasses.asdict(config)
    data["options"]["retention"] = config.options.retention.to_spec()
    return json.dumps(data, indent=2)


def config_from_json(text: str) -> JobConfig:
    data = json.loads(text)
    options = data.pop("options")
    options["pii_fields"] = tuple(options["pii_fields"])
    options["retention"] = RetentionPolicy.parse(options["retention"], source="the job config's options.retention")
    return JobConfig(options=IngestOptions(**options), **data)


def create_environment(
    config: JobConfig,
    *,
    parallelism: int,
    checkpoint_interval_ms: int,
    checkpoint_dir: str | None,
    connector_jar: str | None,
    local: bool,
) -> tuple[Any, Any]:
    """A StreamExecutionEnvironment and table environment set up for the ingest job."""
    from pyflink.common import Configuration
    from pyflink.datastream import CheckpointingMode, StreamExecutionEnvironment
    from pyflink.table import StreamTableEnvironment

    conf = Configuration()
    # Thread mode: the Python functions run inside the TaskManager's JVM, 2-4x faster than
    # separate worker processes for per-record work (docs/design.md §11); one GIL per TaskManager.
    conf.set_string("python.execution-mode", "thread")
    conf.set_string("state.backend.type", "rocksdb")
    conf.set_string("state.backend.incremental", "true")
    conf.set_string("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION")
    if checkpoint_dir:
        conf.set_string("execution.checkpointing.dir", checkpoint_dir)
    if connector_jar:
        conf.set_string("pipeline.jars", Path(connector_jar).as_uri())
    if local:
        paths = [str(REPO_ROOT), *_site_packages()]
        conf.set_string("python.pythonpath", os.pathsep.join(paths))
        conf.set_string("python.executable", sys.executable)
        conf.set_string("restart-strategy.type", "fixed-delay")
        conf.set_string("restart-strategy.fixed-delay.attempts", "10")
        conf.set_string("restart-strategy.fixed-delay.delay", "2 s")
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(parallelism)
    env.set_max_parallelism(MAX_PARALLELISM)  # the key groups partition_key spreads the logs over
    env.enable_checkpointing(checkpoint_interval_ms, CheckpointingMode.EXACTLY_ONCE)
    return env, StreamTableEnvironment.create(env)


def _site_packages() -> list[str]:

    return list(dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]))


def main(argv: list[str] | None = None) -> int:
    """Entry point on a cluster: `flink run -py pipelines/ingest.py -pyfs ... --config FILE`."""
    parser = argparse.ArgumentParser(description="auditlog ingest job (submitted by `auditlog ingest --cluster`)")
    parser.add_argument("--config", required=True, help="JSON job config written by `auditlog ingest`")
    parser.add_argument("--bounded", action="store_true")
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--checkpoint-interval-ms", type=int, default=10000)
    args, _ = parser.parse_known_args(argv)
    config = config_from_json(Path(args.config).read_text())
    env, t_env = create_environment(
        config,
        parallelism=args.parallelism,
        checkpoint_interval_ms=args.checkpoint_interval_ms,
        checkpoint_dir=None,
        connector_jar=None,
        local=False,
    )
    build_ingest(kafka_records(t_env, config, args.bounded), config)
    env.execute(f"auditlog ingest {config.options.topic}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))
    sys.exit(main())


__all__ = ["DeadLetter", "JobConfig", "build_ingest", "main"]
