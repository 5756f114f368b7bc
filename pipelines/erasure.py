"""After an erasure, the person's plaintext must not outlive it in Kafka.

Producers write events with their PII in plaintext; the job seals it before anything is hashed or
stored, but the source topic keeps the records for its retention. `auditlog erase` therefore
deletes, in every partition of the topic, the records the archive already holds — up to the
newest resume point of the partition's log (`pipelines.ingest_core.ResumePoint`), with Kafka's
DeleteRecords. A job that later starts without state sees the partition begin past offset 0 and
goes on from that resume point, so the log continues unchanged.

Nothing is deleted that the archive does not hold: the record just before the resume point's
offset must be the one that closed its block (its fingerprint is in the resume point), else the
archive's log is not this topic's (a recreated topic, logs built from a recording) and the
partition is left alone, with the reason. Records not yet archived when `erase` runs stay (the
job still has to log them); running `erase` again after the job caught up deletes them too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pipelines.ingest_core import ResumePoint, record_fingerprint


@dataclass(frozen=True)
class Truncation:
    """What became of one partition: records below `before_offset` deleted, or `skipped` and why."""

    partition: int
    before_offset: int
    block_index: int
    skipped: str = ""


def newest_resume_points(archive: Any, topic: str, partitions: list[int]) -> dict[int, ResumePoint]:
    """The newest resume point of each partition's log (the job names logs `<topic>.p<partition>`)."""
    found = {}
    for partition in partitions:
        log_id = f"{topic}.p{partition}"
        points = archive.list_resume_points(log_id)
        if points:
            found[partition] = ResumePoint.from_bytes(archive.get_resume_point(log_id, points[-1]))
    return found


def closes_block(point: ResumePoint, timestamp_ms: int, key: bytes | None, value: bytes | None) -> bool:
    """True if the record at `point.next_offset - 1` is the one that closed the point's block.

    Compared by fingerprint (timestamp, key and value, as the job saw them), so a recreated topic
    whose record at that offset merely looks alike — a cut marker, the same event — does not pass.
    """
    return bool(point.closing) and record_fingerprint(max(timestamp_ms, 0), key, value) == point.closing


def truncate_archived(archive: Any, admin: Any, consumer: Any, topic: str, timeout_s: float = 30) -> list[Truncation]:
    """Deletes the records of `topic` that the archive holds.

    `admin` is a confluent_kafka AdminClient, `consumer` a Consumer (read_uncommitted, no group
    commits) used to read watermarks and the record before each resume point.
    """
    from confluent_kafka import TopicPartition

    metadata = admin.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if metadata is None or metadata.error is not None:
        raise LookupError(f"Kafka has no topic {topic!r} ({metadata.error if metadata else 'unknown topic'})")
    done: list[Truncation] = []
    wanted: list[Any] = []
    for partition, point in sorted(newest_resume_points(archive, topic, sorted(metadata.partitions)).items()):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
        if point.next_offset <= low:
            continue  # deleted before
        why = ""
        if point.next_offset > high:
            why = f"the archive's log is ahead of the topic (offset {point.next_offset} > end {high})"
        elif not closes_block(point, *_record_at(consumer, topic, partition, point)):
            why = f"the record at offset {point.next_offset - 1} is not the one that closed block {point.block_index}"
        if why:
            done.append(Truncation(partition, point.next_offset, point.block_index, f"{why}: not this topic's log"))
            continue
        wanted.append(TopicPartition(topic, partition, point.next_offset))
        done.append(Truncation(partition, point.next_offset, point.block_index))
    if wanted:
        for future in admin.delete_records(wanted, request_timeout=timeout_s).values():
            future.result(timeout_s)
    return done


def _record_at(
    consumer: Any, topic: str, partition: int, point: ResumePoint, timeout_s: float = 30
) -> tuple[int, bytes | None, bytes | None]:
    """(timestamp ms, key, value) of the record at `point.next_offset - 1`; (-1, None, None) if none is there."""
    from confluent_kafka import TopicPartition

    offset = point.next_offset - 1
    consumer.assign([TopicPartition(topic, partition, offset)])
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None or message.error():
                continue
            if message.offset() != offset:
                break  # the offset holds no record (a transaction marker): not a block's end
            return int(message.timestamp()[1]), message.key(), message.value()
    finally:
        consumer.unassign()
    return -1, None, None
