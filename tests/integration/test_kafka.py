"""Kafka on the test stack: the topics `stack up` creates, and a produce/consume round trip."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from infra.kafka import DLQ_TOPIC_PARTITIONS, EVENT_TOPIC_PARTITIONS
from infra.stack import Stack
from pipelines.io.kafka import kafka_client_config

pytestmark = pytest.mark.integration


def test_up_creates_event_and_dead_letter_topics(stack: Stack) -> None:
    settings = stack.settings
    topics = AdminClient(kafka_client_config(settings)).list_topics(timeout=10).topics

    assert len(topics[settings.topic].partitions) == EVENT_TOPIC_PARTITIONS
    assert len(topics[settings.dlq_topic].partitions) == DLQ_TOPIC_PARTITIONS


def test_produce_consume_round_trip_keeps_per_key_order(stack: Stack) -> None:
    settings = stack.settings
    run = uuid.uuid4().hex
    sent = [(f"tenant-{i % 3}".encode(), f"{run}:{i}".encode()) for i in range(30)]
    delivered: list[tuple[bytes, int]] = []

    def on_delivery(error: object, message: object) -> None:
        assert error is None, error
        delivered.append((message.key(), message.partition()))  # type: ignore[attr-defined]

    producer = Producer(kafka_client_config(settings, **{"enable.idempotence": True, "acks": "all"}))
    for key, value in sent:
        producer.produce(settings.topic, key=key, value=value, on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert len(delivered) == len(sent)
    # Key = tenant: one tenant's events land in one partition (one log).
    assert all(len({p for k, p in delivered if k == key}) == 1 for key, _ in sent)

    consumer = Consumer(
        kafka_client_config(
            settings,
            **{"group.id": f"it-{run}", "auto.offset.reset": "earliest", "enable.auto.commit": False},
        )
    )
    consumer.subscribe([settings.topic])
    received: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + 60
    try:
        while len(received) < len(sent) and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None:
                continue
            assert message.error() is None, message.error()
            if message.value().startswith(run.encode()):
                received.append((message.key(), message.value()))
    finally:
        consumer.close()

    assert sorted(received) == sorted(sent)
    for key in {k for k, _ in sent}:
        assert [v for k, v in received if k == key] == [v for k, v in sent if k == key]
