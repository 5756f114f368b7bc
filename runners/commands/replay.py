"""`auditlog replay`: write a recording back into a Kafka topic, partition by partition in order.

    auditlog replay audit-events.parquet --topic audit.events                        # partitioned by key
    auditlog replay audit-events.parquet --topic audit.events --preserve-partitions  # each to its recorded partition
    auditlog replay audit-events.parquet --topic audit.events --rate 2000            # at most 2000 records/s

Each record keeps its key, value, headers and timestamp (sent as CreateTime; `--timestamps now`
lets the producer stamp the current time instead). Records of one recorded partition are written
in offset order (acks=all, idempotent producer, so retries never reorder them). Without
`--preserve-partitions` keyed records go where the producer's partitioner
puts them — murmur2 of the key, as Java clients do, so a topic with the recorded partition count
gets each record back in its recorded partition — and records without a key (cut markers) go to
their recorded partition modulo the topic's partition count. With it, every record goes to its
recorded partition, and the topic needs at least as many partitions as the recording.

Recorded timestamps age: a broker deletes records older than the topic's `retention.ms` (7 days
by default) at its next retention check, minutes after the replay. So replay refuses, before
writing anything, when the recording's oldest timestamp is already past the target topic's
retention; create the topic with `retention.ms=-1` (as CI does) or use `--timestamps now`.

Replaying into a topic the ingest job reads yields exactly the logs of the recording
(docs/design.md §6); `auditlog ingest --from-recording FILE` gets the same logs with no broker at all
(`ingest_recording` below runs that).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.recording import RecordedRecord, iter_records, oldest_timestamp_ms, read_info
from runners.argtypes import UsageError, records_per_second
from runners.deployment import halted_error, indexer_unless_served, load_or_create_signer, with_master_key
from runners.sending import pace, produce_waiting, progress_bar
from schemas.settings import Settings
from transforms.errors import AuditlogError

RECORDED = "recorded"
NOW = "now"
RETENTION_MARGIN_MS = 3_600_000
"""Replayed records must outlive the topic's retention by at least this much (an hour to ingest them)."""
CONNECT_TIMEOUT_S = 10.0
FLUSH_TIMEOUT_S = 120.0
PROGRESS_EVERY = 1000


class ReplayError(AuditlogError, RuntimeError):
    """Records could not be replayed: Kafka unreachable, topic missing or too small, or deliveries failed."""


@dataclass(frozen=True)
class ReplaySummary:
    topic: str
    bootstrap: str
    sent: int
    partitions: dict[int, int]
    """Records sent, per recorded partition."""
    preserve_partitions: bool
    elapsed_s: float

    def line(self) -> str:
        where = ", ".join(f"p{p}: {n}" for p, n in sorted(self.partitions.items()))
        how = "to their recorded partitions" if self.preserve_partitions else "partitioned by key"
        rate = self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0
        return (
            f"replayed {self.sent} records to {self.topic} at {self.bootstrap}, {how} "
            f"(per recorded partition {where}); "
            f"{self.elapsed_s:.2f} s, {rate:,.0f} records/s"
        )


def replay_records(
    settings: Settings,
    records: Iterable[RecordedRecord],
    topic: str,
    preserve_partitions: bool = False,
    min_partitions: int = 1,
    rate: float | None = None,
    progress: bool = True,
    total: int | None = None,
    timestamps: str = RECORDED,
    oldest_ms: int | None = None,
) -> ReplaySummary:
    """Writes recorded records to `topic` in the given order and waits until all are acknowledged.

    Args:
        settings: where Kafka is.
        records: the records, each partition's in offset order (as `iter_records` gives them).
        topic: an existing topic.
        preserve_partitions: send each record to its recorded partition (else: by key).
        min_partitions: with `preserve_partitions`, the topic needs at least this many partitions.
        rate: at most this many records per second; None or 0 is as fast as possible.
        progress: show a progress bar on stderr when it is a terminal.
        total: the number of records, for the progress bar.
        timestamps: `recorded` sends each record's recorded timestamp, `now` lets the producer
            stamp the current time.
        oldest_ms: the oldest recorded timestamp, to check against the topic's retention.

    Raises:
        ReplayError: Kafka did not answer, the topic is missing or has too few partitions, its
            retention would delete the records at once, or a record was not delivered.
    """
    from confluent_kafka import KafkaException, Producer

    from pipelines.io.kafka import kafka_client_config
    from runners.commands.produce import PRODUCER_CONFIG

    quiet = logging.getLogger("auditlog.replay.librdkafka")
    quiet.setLevel(logging.CRITICAL)
    producer = Producer(kafka_client_config(settings, logger=quiet, **PRODUCER_CONFIG))
    try:
        metadata = producer.list_topics(topic=topic, timeout=CONNECT_TIMEOUT_S)
    except KafkaException as exc:
        raise ReplayError(
            f"Kafka at {settings.kafka_bootstrap} did not answer within {CONNECT_TIMEOUT_S:.0f} s "
            f"({exc.args[0].str()}); start it with `auditlog stack up`"
        ) from None
    described = metadata.topics.get(topic)
    if described is None or described.error is not None or not described.partitions:
        raise ReplayError(
            f"topic {topic!r} does not exist on Kafka at {settings.kafka_bootstrap}; create it first "
            "(with at least the recording's partition count to keep records in their partitions)"
        )
    count = len(described.partitions)
    if preserve_partitions and count < min_partitions:
        raise ReplayError(
            f"topic {topic!r} has {count} partitions and the recording {min_partitions}: with "
            "--preserve-partitions every recorded partition must exist; add partitions or replay by key"
        )

    if timestamps == RECORDED and oldest_ms is not None and oldest_ms >= 0:
        _check_retention(settings, topic, oldest_ms)
    elif timestamps not in (RECORDED, NOW):
        raise ValueError(f"timestamps {timestamps!r}: choose {RECORDED!r} or {NOW!r}")

    failures: list[str] = []

    def on_delivery(error: Any, message: Any) -> None:
        if error is not None:
            failures.append(f"{error.str()} (partition {message.partition()}, key {message.key()!r})")

    sent_to: dict[int, int] = {}
    bar = progress_bar(total, f"replay {topic}", progress)
    start = time.monotonic()
    sent = 0
    try:
        for record in records:
            pace(start, sent, rate)
            options: dict[str, Any] = {"headers": list(record.headers)} if record.headers else {}
            if timestamps == RECORDED and record.timestamp_ms >= 0:
                options["timestamp"] = record.timestamp_ms
            if preserve_partitions:
                options["partition"] = record.partition
            elif record.key is None:
                options["partition"] = record.partition % count
            produce_waiting(producer, topic, value=record.value, key=record.key, on_delivery=on_delivery, **options)
            sent += 1
            sent_to[record.partition] = sent_to.get(record.partition, 0) + 1
            if sent % PROGRESS_EVERY == 0:
                producer.poll(0)
                bar.update(PROGRESS_EVERY)
                if failures:
                    break
        left = producer.flush(FLUSH_TIMEOUT_S)
        bar.update(sent % PROGRESS_EVERY)
    finally:
        bar.close()
    elapsed = time.monotonic() - start
    if failures:
        raise ReplayError(f"{len(failures)} record(s) were not delivered to {topic}; first: {failures[0]}")
    if left:
        raise ReplayError(
            f"{left} of {sent} records were not acknowledged by Kafka at {settings.kafka_bootstrap} "
            f"within {FLUSH_TIMEOUT_S:.0f} s; check the broker (`auditlog stack status`)"
        )
    return ReplaySummary(topic, settings.kafka_bootstrap, sent, sent_to, preserve_partitions, elapsed)


def _check_retention(settings: Settings, topic: str, oldest_ms: int) -> None:
    """Refuses a replay whose records the topic's time retention would delete right away."""
    from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

    from pipelines.io.kafka import kafka_client_config

    quiet = logging.getLogger("auditlog.replay.librdkafka")
    admin = AdminClient(kafka_client_config(settings, logger=quiet))
    resource = ConfigResource(ResourceType.TOPIC, topic)
    try:
        config = admin.describe_configs([resource])[resource].result(timeout=CONNECT_TIMEOUT_S)
    except Exception as exc:  # confluent_kafka raises KafkaException with no subclass to catch
        raise ReplayError(f"cannot read the configuration of topic {topic!r}: {exc}") from None
    policy = config["cleanup.policy"].value if "cleanup.policy" in config else "delete"
    retention_ms = int(config["retention.ms"].value) if "retention.ms" in config else -1
    if "delete" not in policy or retention_ms < 0:
        return
    age_ms = int(time.time() * 1000) - oldest_ms
    if age_ms + RETENTION_MARGIN_MS > retention_ms:
        raise ReplayError(
            f"the oldest recorded record is {age_ms / 86_400_000:.1f} days old and topic {topic!r} deletes "
            f"records older than retention.ms={retention_ms} ({retention_ms / 86_400_000:.1f} days): the broker "
            "would drop the replayed records within minutes. Set retention.ms=-1 on the topic (e.g. "
            f"kafka-configs --alter --entity-type topics --entity-name {topic} --add-config retention.ms=-1), "
            "or replay with --timestamps now"
        )


def replay_file(
    settings: Settings,
    path: Path,
    topic: str,
    preserve_partitions: bool = False,
    rate: float | None = None,
    progress: bool = True,
    timestamps: str = RECORDED,
) -> ReplaySummary:
    """Replays the recording at `path` into `topic` (see `replay_records`)."""
    info = read_info(path)
    return replay_records(
        settings,
        iter_records(path),
        topic,
        preserve_partitions=preserve_partitions,
        min_partitions=info.partitions,
        rate=rate,
        progress=progress,
        total=info.records,
        timestamps=timestamps,
        oldest_ms=oldest_timestamp_ms(path),
    )


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "replay",
        help="write a recording (from `auditlog record`) back into a Kafka topic, in per-partition order",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", type=Path, metavar="FILE", help="the recording (.parquet)")
    p.add_argument("--topic", required=True, help="the topic to write to; it must exist")
    p.add_argument(
        "--rate",
        type=records_per_second,
        default=0.0,
        metavar="N",
        help="at most N records per second (default 0: no limit)",
    )
    p.add_argument(
        "--preserve-partitions",
        action="store_true",
        help="send each record to its recorded partition instead of partitioning by key",
    )
    p.add_argument(
        "--timestamps",
        choices=[RECORDED, NOW],
        default=RECORDED,
        help="send the recorded timestamps (default), or let the producer stamp the current time",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        summary = replay_file(
            settings,
            args.file,
            args.topic,
            preserve_partitions=args.preserve_partitions,
            rate=args.rate,
            progress=not args.quiet,
            timestamps=args.timestamps,
        )
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from exc
    print(summary.line())
    return 0


# --------------------------------------------------------------------------- ingest --from-recording


def ingest_recording(args: argparse.Namespace, settings: Settings) -> int:
    """`auditlog ingest --from-recording FILE`: the ingest job on a recording, with no broker.

    The same graph as the Kafka path (`build_ingest`), fed by `recording_records`, on the local
    mini-cluster; blocks and checkpoints go to the WORM archive and ClickHouse as usual, dead
    letters to a local JSON Lines file. Logs are named after the recorded topic (or `--topic`),
    so they are the logs the Kafka path makes from that topic.
    """
    from pipelines.indexer import IndexerThread, wait_quiet
    from pipelines.ingest_config import job_config

    if args.cluster:
        raise UsageError("--from-recording runs on the local mini-cluster; drop --cluster")
    try:
        info = read_info(args.from_recording)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from exc
    if args.parallelism:
        settings = settings.replace(parallelism=args.parallelism)
    topic = args.topic or info.topic
    settings = with_master_key(settings)
    _prepare_without_kafka(settings)
    if not settings.key_seed:
        print(
            "note: AUDITLOG_KEY_SEED is not set, so PII keys are random: these logs match other runs only "
            "through this key store (CI sets the seed; production never does)",
            file=sys.stderr,
        )
    config = job_config(settings, topic=topic, block_size=args.block_size, verifiable=not args.unverifiable)
    dlq_file = Path(args.dlq_file) if args.dlq_file else settings.home / "dlq" / f"{topic}.dlq.jsonl"
    indexer = None if args.no_index or args.unverifiable else indexer_unless_served(settings)
    follower = IndexerThread(indexer) if indexer else None
    if follower:
        follower.start()
    try:
        if info.records:
            dead = run_recording_local(settings, config, Path(args.from_recording), dlq_file)
        else:
            dead = write_dead_letters([], dlq_file)
            print(f"ingest: recording {args.from_recording} holds no records", file=sys.stderr)
    finally:
        if follower:
            follower.stop()
    print(f"dead letters: {dead} in {dlq_file}", file=sys.stderr)
    if indexer is None:
        return 0
    stats = wait_quiet(indexer)
    print(f"indexed into ClickHouse: {stats.blocks} blocks, {stats.events} events", file=sys.stderr)
    indexer.clickhouse.close()
    halted = halted_error(stats.halted)
    if halted:
        raise halted
    return 0


def _prepare_without_kafka(settings: Settings) -> None:
    """What `ingest.prepare` does minus Kafka: the signing key, and a key store that opens."""
    from pipelines.io.keystore import open_keystore

    load_or_create_signer(settings.keys_dir, settings.origin)
    open_keystore(settings).close()  # fails here, clearly, on a wrong or missing master key


def run_recording_local(settings: Settings, config: Any, path: Path, dlq_file: Path) -> int:
    """Runs the job on the recording at `path`; returns the number of dead letters written to `dlq_file`."""
    from pyflink.common import Encoder
    from pyflink.datastream.connectors.file_system import BucketAssigner, FileSink, OutputFileConfig

    from infra.jars import ensure_operators
    from pipelines.ingest import build_ingest, create_environment, recording_records

    parts = dlq_file.parent / f".{dlq_file.name}.{uuid.uuid4().hex[:8]}.parts"
    parts.mkdir(parents=True)
    try:
        env, _ = create_environment(
            config,
            parallelism=settings.job_parallelism(local=True),
            checkpoint_interval_ms=settings.checkpoint_interval_ms,
            checkpoint_dir=(settings.home / "checkpoints" / "ingest-recording").as_uri(),
            jars=[str(ensure_operators(settings))],
            local=True,
        )
        dlq = (
            FileSink.for_row_format(str(parts), Encoder.simple_string_encoder())
            .with_bucket_assigner(BucketAssigner.base_path_bucket_assigner())
            .with_output_file_config(
                OutputFileConfig.builder().with_part_prefix("dlq").with_part_suffix(".jsonl").build()
            )
            .build()
        )
        build_ingest(recording_records(env, str(path)), config, dlq=dlq)
        print(
            f"ingest: recording {path} → logs {config.options.topic}.p* ({config.options.origin_prefix}/…), "
            "local mini-cluster, no broker",
            file=sys.stderr,
        )
        started = time.monotonic()
        result = env.execute(f"auditlog ingest --from-recording {path.name}")
        print(
            f"ingest finished in {time.monotonic() - started:.1f} s (job {result.get_job_id()}, "
            f"net runtime {result.get_net_runtime()} ms)",
            file=sys.stderr,
        )
        unfinished = [p for p in parts.rglob(".*") if p.is_file()]
        if unfinished:
            raise RuntimeError(f"the dead-letter sink left uncommitted files: {', '.join(map(str, unfinished))}")
        lines = [line for f in sorted(parts.rglob("dlq*")) if f.is_file() for line in f.read_text().splitlines()]
        return write_dead_letters(lines, dlq_file)
    finally:
        shutil.rmtree(parts, ignore_errors=True)


def write_dead_letters(lines: list[str], dlq_file: Path) -> int:
    """Writes dead letters (JSON lines) to `dlq_file` in source order (partition, offset), atomically."""

    def position(line: str) -> tuple[int, int]:
        source = json.loads(line)["source"]
        return source["partition"], source["offset"]

    ordered = sorted((line for line in lines if line.strip()), key=position)
    dlq_file.parent.mkdir(parents=True, exist_ok=True)
    partial = dlq_file.with_name(f".{dlq_file.name}.partial")
    partial.write_text("".join(line + "\n" for line in ordered))
    partial.replace(dlq_file)
    return len(ordered)
