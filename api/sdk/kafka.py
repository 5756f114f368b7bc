"""The one Kafka producer configuration of every path into the log (SDK, gateway, outbox forwarder).

acks=all with the idempotent producer: a record counts as written only once every in-sync
replica has it, and the producer's own retries neither duplicate nor reorder records. The
partitioner is Kafka's Java default (murmur2), as in `auditlog produce`, so a tenant's records
land in the same partition — the same log — whichever client wrote them.
"""

from __future__ import annotations

import logging
from typing import Any

from transforms.errors import AuditlogError

__all__ = ["PRODUCER_CONFIG", "KafkaUnavailable", "check_topic", "make_producer"]

PRODUCER_CONFIG: dict[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 5,
    "batch.size": 1_000_000,
    "batch.num.messages": 10_000,
    "compression.type": "lz4",
    "queue.buffering.max.messages": 500_000,
    "queue.buffering.max.kbytes": 524_288,
    "message.timeout.ms": 30_000,
    "partitioner": "murmur2_random",
}


class KafkaUnavailable(AuditlogError, RuntimeError):
    """Kafka does not answer, or the topic is missing."""


def make_producer(bootstrap: str, **overrides: Any) -> Any:
    """A confluent_kafka Producer with PRODUCER_CONFIG, plus `overrides` (dotted keys as strings)."""
    from confluent_kafka import Producer

    quiet = logging.getLogger("auditlog.librdkafka")
    config = {"bootstrap.servers": bootstrap, "logger": quiet, **PRODUCER_CONFIG, **overrides}
    return Producer(config)


def check_topic(producer: Any, bootstrap: str, topic: str, timeout_s: float = 5.0) -> int:
    """Returns the topic's partition count; raises KafkaUnavailable saying what to do."""
    from confluent_kafka import KafkaException

    try:
        metadata = producer.list_topics(topic=topic, timeout=timeout_s)
    except KafkaException as exc:
        raise KafkaUnavailable(
            f"Kafka at {bootstrap} did not answer within {timeout_s:.0f} s ({exc.args[0].str()}); "
            "start it with `auditlog stack up kafka` or point AUDITLOG_HOST / AUDITLOG_KAFKA_PORT at your broker"
        ) from None
    info = metadata.topics.get(topic)
    if info is None or info.error is not None or not info.partitions:
        raise KafkaUnavailable(
            f"topic {topic!r} does not exist on Kafka at {bootstrap}; `auditlog stack up` creates it"
        )
    return len(info.partitions)
