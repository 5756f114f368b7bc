"""After an erasure, the person's plaintext must not outlive it in Kafka.

Producers write events with their PII in plaintext; the job seals it before anything is hashed or
stored, but the source topic keeps the records for its retention. `auditlog erase` therefore
deletes, in every partition of the topic, the records the archive already holds — up to the
newest resume point of the partition's log (`pipelines.ingest_core.ResumePoint`), with Kafka's
DeleteRecords. A job that later starts without state sees the partition begin past offset 0 and
goes on from that resume point, so the log continues unchanged.

Records not yet archived when `erase` runs stay (the job still has to log them); running `erase`
again after the job caught up deletes them too. A partition whose log has no resume point yet is
left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipelines.ingest_core import ResumePoint


@dataclass(frozen=True)
class Truncation:
    """What DeleteRecords did to one partition."""

    partition: int
    before_offset: int  # records below this offset are gone
    block_index: int  # the archived block the offset follows


def archived_offsets(archive: Any, topic: str, partitions: list[int]) -> dict[int, ResumePoint]:
    """The newest resume point of each partition's log (the job names logs `<topic>.p<partition>`)."""
    found = {}
    for partition in partitions:
        log_id = f"{topic}.p{partition}"
        points = archive.list_resume_points(log_id)
        if points:
            found[partition] = ResumePoint.from_bytes(archive.get_resume_point(log_id, points[-1]))
    return found


def truncate_archived(archive: Any, admin: Any, topic: str, timeout_s: float = 30) -> list[Truncation]:
    """Deletes the records of `topic` that the archive holds; `admin` is a confluent_kafka AdminClient."""
    from confluent_kafka import TopicPartition

    metadata = admin.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if metadata is None or metadata.error is not None:
        raise LookupError(f"Kafka has no topic {topic!r} ({metadata.error if metadata else 'unknown topic'})")
    points = archived_offsets(archive, topic, sorted(metadata.partitions))
    if not points:
        return []
    wanted = [TopicPartition(topic, p, point.next_offset) for p, point in sorted(points.items())]
    for future in admin.delete_records(wanted, request_timeout=timeout_s).values():
        future.result(timeout_s)
    return [Truncation(p, point.next_offset, point.block_index) for p, point in sorted(points.items())]
