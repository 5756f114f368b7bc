"""`auditlog produce` through real Kafka: a round trip, the CLI's summary and rate, a missing topic.

The generator itself (no services) is tested in tests/unit/test_produce.py.

.venv/bin/python -m pytest -m integration tests/integration/test_produce.py
"""

from __future__ import annotations

import time
import uuid
from collections import Counter, defaultdict

import pytest

from infra.kafka import EVENT_TOPIC_PARTITIONS
from infra.stack import Stack
from pipelines.io.kafka import kafka_client_config
from runners.cli import main
from runners.commands.produce import DUPLICATE, EVENT, ProduceError, generate_records, produce_records
from schemas.events import EventValidationError, parse_event
from schemas.settings import Settings

pytestmark = pytest.mark.integration


def _create_topic(settings: Settings, name: str, partitions: int = EVENT_TOPIC_PARTITIONS) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(kafka_client_config(settings))
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    futures[name].result(timeout=30)
    deadline = time.monotonic() + 30
    while name not in admin.list_topics(timeout=10).topics:
        assert time.monotonic() < deadline, f"topic {name} did not appear"
        time.sleep(0.2)


def _consume(settings: Settings, topic: str, count: int, timeout_s: float = 90) -> list[tuple[bytes, bytes, int]]:
    from confluent_kafka import Consumer

    consumer = Consumer(
        kafka_client_config(
            settings,
            **{
                "group.id": f"it-produce-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            },
        )
    )
    consumer.subscribe([topic])
    received: list[tuple[bytes, bytes, int]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(received) < count and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=1.0):
                assert message.error() is None, message.error()
                received.append((message.key(), message.value(), message.partition()))
        # Anything beyond `count` would be a producer-side duplicate: give it a moment to show.
        for message in consumer.consume(num_messages=1000, timeout=2.0):
            received.append((message.key(), message.value(), message.partition()))
    finally:
        consumer.close()
    return received


def test_produce_5000_with_duplicates_and_malformed_round_trips_through_kafka(stack: Stack) -> None:
    settings = stack.settings
    topic = f"it.produce.{uuid.uuid4().hex[:8]}"
    _create_topic(settings, topic)
    records = list(generate_records(5000, tenants=7, duplicates=0.05, malformed=0.03, seed=11))
    kinds = Counter(r.kind for r in records)

    summary = produce_records(settings, records, topic=topic, progress=False, total=len(records))

    assert summary.sent == 5000 and summary.kinds == dict(kinds)
    assert summary.duplicates == kinds[DUPLICATE] and summary.malformed == 5000 - kinds[EVENT] - kinds[DUPLICATE]
    print(summary.line())

    received = _consume(settings, topic, 5000)
    assert len(received) == 5000
    assert Counter((k, v) for k, v, _ in received) == Counter((r.key, r.value) for r in records)

    partitions: dict[bytes, set[int]] = defaultdict(set)
    for key, _, partition in received:
        partitions[key].add(partition)
    assert len(partitions) == 7
    assert all(len(p) == 1 for p in partitions.values()), partitions  # a tenant stays in one log
    for key in partitions:  # and in the order it was produced
        assert [v for k, v, _ in received if k == key] == [r.value for r in records if r.key == key]

    rejected = 0
    for _, value, _ in received:
        try:
            parse_event(value)
        except EventValidationError:
            rejected += 1
    assert rejected == summary.malformed


def test_cli_produce_prints_a_summary_and_honours_the_rate(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = stack.settings
    topic = f"it.produce.cli.{uuid.uuid4().hex[:8]}"
    _create_topic(settings, topic)
    monkeypatch.setenv("AUDITLOG_HOST", settings.host)
    monkeypatch.setenv("AUDITLOG_KAFKA_PORT", str(settings.kafka_port))

    began = time.monotonic()
    code = main(["produce", "--events", "300", "--rate", "200", "--duplicates", "0.1", "--topic", topic, "--quiet"])

    assert code == 0
    assert time.monotonic() - began >= 1.4  # 300 records at 200/s take at least 1.5 s
    out = capsys.readouterr().out
    assert f"sent 300 records to {topic} at {settings.kafka_bootstrap}" in out and "records/s" in out
    assert len(_consume(settings, topic, 300, timeout_s=30)) == 300


def test_a_missing_topic_is_a_clear_error(stack: Stack) -> None:
    with pytest.raises(ProduceError, match="does not exist.*not created automatically"):
        produce_records(stack.settings, [], topic=f"it.missing.{uuid.uuid4().hex[:8]}", progress=False)
