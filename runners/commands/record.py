"""`auditlog record`: capture every record of a Kafka topic into a recording file.

    auditlog record --topic audit.events --out audit-events.parquet
    auditlog record --topic audit.events --out head.parquet --max 1000

Reads every partition from its first offset (in `read_committed` mode) up to the end offsets seen
when recording begins — records written meanwhile are not taken — or until `--max` records, and
writes partition, offset, timestamp, key, headers and value bytes into the versioned Parquet
format of `pipelines/recording.py`. Nothing is committed to Kafka: recording has no side effects.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.recording import TIMESTAMP_TYPES, RecordedRecord, RecordingInfo, RecordingWriter
from runners.argtypes import positive_int
from runners.sending import progress_bar
from schemas.settings import Settings
from transforms.errors import AuditlogError

CONNECT_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 60.0
CONSUME_BATCH = 1000


class RecordError(AuditlogError, RuntimeError):
    """The topic could not be recorded: Kafka unreachable, topic missing, or reading stalled."""


@dataclass(frozen=True)
class RecordSummary:
    """What `record_topic` wrote."""

    path: Path
    info: RecordingInfo
    elapsed_s: float
    interrupted: bool = False

    def line(self) -> str:
        info = self.info
        how = "to the end offsets seen at start" if info.complete else "stopped early (--max or Ctrl-C)"
        rate = info.records / self.elapsed_s if self.elapsed_s > 0 else 0.0
        return (
            f"recorded {info.records} records of {info.topic} ({info.partitions} partitions), {how}, "
            f"into {self.path} ({self.path.stat().st_size:,} bytes); {self.elapsed_s:.2f} s, {rate:,.0f} records/s"
        )


def record_topic(
    settings: Settings,
    topic: str,
    out: Path,
    max_records: int | None = None,
    progress: bool = True,
    idle_timeout_s: float = IDLE_TIMEOUT_S,
) -> RecordSummary:
    """Records `topic` into `out`: every partition up to the end offsets present at start.

    Args:
        settings: where Kafka is.
        topic: the topic to record.
        out: the recording file to write (replaced atomically when done).
        max_records: stop after this many records in all (None: no limit).
        progress: show a progress bar on stderr when it is a terminal.
        idle_timeout_s: give up if no partition moves for this long before its end offset.

    Raises:
        RecordError: Kafka does not answer, the topic does not exist, or reading stalled.
    """
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    from pipelines.io.kafka import kafka_client_config

    quiet = logging.getLogger("auditlog.record.librdkafka")
    quiet.setLevel(logging.CRITICAL)
    consumer = Consumer(
        kafka_client_config(
            settings,
            logger=quiet,
            **{
                "group.id": f"auditlog-record-{uuid.uuid4().hex}",  # never committed: no side effects
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
            },
        )
    )
    started = time.monotonic()
    try:
        try:
            metadata = consumer.list_topics(topic=topic, timeout=CONNECT_TIMEOUT_S)
        except KafkaException as exc:
            raise RecordError(
                f"Kafka at {settings.kafka_bootstrap} did not answer within {CONNECT_TIMEOUT_S:.0f} s "
                f"({exc.args[0].str()}); start it with `auditlog stack up`"
            ) from None
        described = metadata.topics.get(topic)
        if described is None or described.error is not None or not described.partitions:
            raise RecordError(f"topic {topic!r} does not exist on Kafka at {settings.kafka_bootstrap}")
        partitions = sorted(described.partitions)
        start: dict[int, int] = {}
        end: dict[int, int] = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=CONNECT_TIMEOUT_S)
            start[p], end[p] = low, high
        total = sum(end[p] - start[p] for p in partitions)
        if max_records is not None:
            total = min(total, max_records)
        pending = {p for p in partitions if end[p] > start[p]}
        if pending:
            consumer.assign([TopicPartition(topic, p, start[p]) for p in sorted(pending)])
        writer = RecordingWriter(
            out, topic, len(partitions), start, end, source=f"kafka {settings.kafka_bootstrap} (read_committed)"
        )
        bar = progress_bar(total, f"record {topic}", progress)
        interrupted = False
        try:
            last_progress = time.monotonic()
            while pending and (max_records is None or writer.records < max_records):
                messages = consumer.consume(num_messages=CONSUME_BATCH, timeout=1.0)
                before = writer.records
                for message in messages:
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            continue
                        raise RecordError(f"reading {topic} failed: {error.str()}")
                    p, offset = message.partition(), message.offset()
                    if p is None or offset is None:  # librdkafka sets both on every record it hands out
                        raise RecordError(f"reading {topic} failed: a record came without its partition or offset")
                    if p not in pending or offset >= end[p]:
                        continue  # written after recording began
                    if max_records is not None and writer.records >= max_records:
                        break
                    writer.write(_recorded(message))
                bar.update(writer.records - before)
                positions = consumer.position([TopicPartition(topic, p) for p in sorted(pending)])
                finished = {tp.partition for tp in positions if tp.offset >= end[tp.partition]}
                if finished:
                    consumer.pause([TopicPartition(topic, p) for p in sorted(finished)])
                    pending -= finished
                if messages or finished:
                    last_progress = time.monotonic()
                elif time.monotonic() - last_progress > idle_timeout_s:
                    where = ", ".join(
                        f"partition {tp.partition} at {tp.offset} of {end[tp.partition]}" for tp in positions
                    )
                    raise RecordError(f"reading {topic} made no progress for {idle_timeout_s:.0f} s ({where})")
            writer.complete = not pending
            info = writer.close()
        except KeyboardInterrupt:
            writer.complete = False
            info = writer.close()
            interrupted = True
            print("\ninterrupted: the recording holds what was read so far (complete=false)", file=sys.stderr)
        except BaseException:
            writer.abort()
            raise
        finally:
            bar.close()
    finally:
        consumer.close()
    return RecordSummary(out, info, time.monotonic() - started, interrupted)


def _recorded(message: Any) -> RecordedRecord:
    ts_type, ts = message.timestamp()
    return RecordedRecord(
        partition=message.partition(),
        offset=message.offset(),
        timestamp_ms=ts if ts_type else -1,
        timestamp_type=TIMESTAMP_TYPES[ts_type],
        key=message.key(),
        value=message.value(),
        headers=tuple((k, v) for k, v in (message.headers() or ())),
    )


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "record",
        help="capture every record of a Kafka topic into a recording file (Parquet)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--topic", help="topic to record (default: AUDITLOG_TOPIC, audit.events)")
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help="recording file to write (.parquet)")
    p.add_argument("--max", type=positive_int, metavar="N", help="stop after N records in all")
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=IDLE_TIMEOUT_S,
        metavar="S",
        help=f"give up if reading stalls this many seconds (default {IDLE_TIMEOUT_S:.0f})",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    summary = record_topic(
        settings,
        args.topic or settings.topic,
        args.out,
        max_records=args.max,
        progress=not args.quiet,
        idle_timeout_s=args.idle_timeout,
    )
    print(summary.line())
    return 130 if summary.interrupted else 0
