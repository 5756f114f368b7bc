"""The streaming ingest job: Kafka → validate → seal PII → dedupe → logs, blocks, checkpoints → sinks.

Run it with the CLI (a local mini-cluster by default, or a Flink cluster)::

    auditlog ingest --bounded              # read to the end offsets present at start, then finish
    auditlog ingest                        # run until stopped
    auditlog ingest --cluster http://127.0.0.1:8081

The graph (every stateful operator has a stable uid, so savepoints survive upgrades)::

    kafka source (SQL connector: value bytes + partition/offset/timestamp metadata)
      → key by partition_key(partition), in the JVM (the record enters Python once)
      → batch each partition's records, in the JVM (pipelines/jvm: RecordBatcher; one call into
        Python per batch; every batch is handed on before each checkpoint barrier)
      → sequence (one log per partition: dedupe state, open block, tree)
          ├─ side output: dead letters → Kafka DLQ topic (exactly-once, transactional)
          └─ sealed blocks + signed checkpoints → WORM S3 (idempotent re-puts), on a thread of
             the sequencer's own, all of them archived before each checkpoint completes
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
import logging
import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from pipelines.batches import BATCH_BYTES, BATCH_LINGER_MS, BATCH_RECORDS
from pipelines.ingest_config import JobConfig, config_from_json
from pipelines.ingest_core import DeadLetter, service_sig
from pipelines.ingest_operators import SequenceFunction
from pipelines.state_keys import MAX_PARALLELISM, key_group, partition_key
from schemas.reserved import SERVICE_SIG_HEADER

REPO_ROOT = Path(__file__).resolve().parent.parent


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

    Dead letters go to `dlq` (a Flink sink; default: the Kafka DLQ topic). Sealed blocks go into
    the WORM archive from the sequencer itself (`BackgroundArchiver`). Returns the sequencer's
    stream, whose only output is the dead letters.
    """
    from pyflink.common import Types
    from pyflink.datastream import OutputTag

    dlq_tag = OutputTag("dead-letters", Types.STRING())
    sequenced = (
        batched_by_partition(records)
        .process(SequenceFunction(config, dlq_tag), output_type=Types.PICKLED_BYTE_ARRAY())
        .name("sequence: dedupe, seal PII, append, cut blocks, sign, archive")
        .uid("auditlog-sequence-v2")  # v2: state keyed by partition_key
    )
    sequenced.get_side_output(dlq_tag).sink_to(dlq if dlq is not None else dlq_sink(config)).name("dead letters").uid(
        "auditlog-dlq-sink-v1"
    )
    return sequenced


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
    from pyflink.datastream.data_stream import KeyedStream

    return KeyedStream(_keyed_in_jvm(records._j_data_stream), record_type(), records)


def _keyed_in_jvm(j_stream: Any) -> Any:
    """A Java stream of (state key, ...) rows keyed by its first field, with Flink's KeyByKeySelector."""
    from pyflink.common import Types
    from pyflink.java_gateway import get_gateway

    _check_key_groups()
    selector = get_gateway().jvm.org.apache.flink.streaming.api.functions.python.KeyByKeySelector()
    return j_stream.keyBy(selector, Types.ROW([Types.INT()]).get_java_type_info())


def batch_type() -> Any:
    """The type of one batch: (partition, frame of records; pipelines/batches.py)."""
    from pyflink.common import Types

    return Types.ROW([Types.INT(), Types.PRIMITIVE_ARRAY(Types.BYTE())])


def batched_by_partition(records: Any) -> Any:
    """Keys (partition, record) rows by partition and batches each partition's records, in the JVM.

    The keyed function then gets (partition, frame) batches: `auditlog.flink.RecordBatcher`
    (pipelines/jvm/), chained after the keying, keeps records in memory only and hands every open
    batch on before each checkpoint barrier, watermark and the end of input, so checkpoints and
    blocks are as without it. Its output is keyed by the same state keys (a stream Flink is told
    is keyed already, so no second shuffle). Needs the operators jar (infra/jars.py) on the
    job's classpath (`create_environment`'s `jars`).
    """
    from pyflink.common import Types
    from pyflink.datastream.data_stream import DataStream, KeyedStream
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    keyed = _keyed_in_jvm(records._j_data_stream)
    try:
        batcher = jvm.auditlog.flink.RecordBatcher(BATCH_RECORDS, BATCH_BYTES, BATCH_LINGER_MS)
    except TypeError as exc:  # py4j: a JavaPackage, not a class, when the jar is not on the classpath
        raise RuntimeError(
            "the ingest job's JVM operators (auditlog.flink.RecordBatcher) are not on the job's classpath: "
            "pass infra.jars.ensure_jars(settings).operators in create_environment(jars=...)"
        ) from exc
    out_type = Types.ROW([Types.INT(), batch_type()])
    batches = keyed.transform("batch records by partition", out_type.get_java_type_info(), batcher).uid(
        "auditlog-batcher-v1"
    )
    rekeyed = jvm.org.apache.flink.streaming.api.datastream.DataStreamUtils.reinterpretAsKeyedStream(
        batches, keyed.getKeySelector(), keyed.getKeyType()
    )
    return KeyedStream(rekeyed, batch_type(), DataStream(batches))


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
                "subtasks (they stay correct); update pipelines.state_keys.key_group",
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


def create_environment(
    config: JobConfig,
    *,
    parallelism: int,
    checkpoint_interval_ms: int,
    checkpoint_dir: str | None,
    jars: list[str],
    local: bool,
) -> tuple[Any, Any]:
    """A StreamExecutionEnvironment and table environment set up for the ingest job.

    `jars`: paths of the jars the job needs on its classpath: the operators jar always
    (`batched_by_partition`), the Kafka connector for a Kafka source (infra/jars.py has both).
    """
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
    if jars:
        conf.set_string("pipeline.jars", ";".join(Path(jar).resolve().as_uri() for jar in jars))
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
    parser.add_argument("--jar", action="append", default=[], help="a jar the job needs (repeatable)")
    args, _ = parser.parse_known_args(argv)
    config = config_from_json(Path(args.config).read_text())
    env, t_env = create_environment(
        config,
        parallelism=args.parallelism,
        checkpoint_interval_ms=args.checkpoint_interval_ms,
        checkpoint_dir=None,
        jars=args.jar,
        local=False,
    )
    build_ingest(kafka_records(t_env, config, args.bounded), config)
    env.execute(f"auditlog ingest {config.options.topic}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))
    sys.exit(main())


__all__ = ["DeadLetter", "JobConfig", "build_ingest", "main"]
