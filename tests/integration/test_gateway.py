"""`auditlog gateway` against the real Kafka of the test stack: acks, leaf hashes, status codes, workers.

    AUDITLOG_TEST_PORT_OFFSET=40000 .venv/bin/python -m pytest -m integration tests/integration/test_gateway.py

The gateway runs as a subprocess with its own key store, API keys and topic. The test reads the
topic back and runs the ingest job's LogSequencer over it with the same key store: every
`verification_hash` the gateway returned is the leaf the log stores.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from api.keys import ApiKeyStore
from api.sdk import GatewayClient, GatewayError
from infra.kafka import EVENT_TOPIC_PARTITIONS
from infra.stack import Stack
from pipelines.ingest_core import IngestOptions, LogCursor, LogSequencer, MemoryDedupe, SourceRecord
from pipelines.io.kafka import kafka_client_config
from pipelines.io.keystore import open_keystore
from schemas.samples import EventGenerator
from schemas.settings import REPO_ROOT, Settings
from transforms.blocks import decode_block_object
from transforms.merkle import leaf_hash
from transforms.note import Signer

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def create_topic(settings: Settings, name: str, partitions: int = EVENT_TOPIC_PARTITIONS) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(kafka_client_config(settings))
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name].result(timeout=30)
    deadline = time.monotonic() + 30
    while name not in admin.list_topics(timeout=10).topics:
        assert time.monotonic() < deadline, f"topic {name} did not appear"
        time.sleep(0.2)


@dataclass(frozen=True)
class Consumed:
    key: bytes
    value: bytes
    partition: int
    offset: int


def consume(settings: Settings, topic: str, count: int, timeout_s: float = 60, settle_s: float = 2.0) -> list[Consumed]:
    """Reads `topic` from the start until `count` records came, then `settle_s` more for extras."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        kafka_client_config(
            settings,
            **{"group.id": f"it-{uuid.uuid4().hex}", "auto.offset.reset": "earliest", "enable.auto.commit": False},
        )
    )
    consumer.subscribe([topic])
    received: list[Consumed] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(received) < count and time.monotonic() < deadline:
            for m in consumer.consume(num_messages=5000, timeout=0.5):
                assert m.error() is None, m.error()
                received.append(Consumed(m.key(), m.value(), m.partition(), m.offset()))
        quiet_until = time.monotonic() + settle_s
        while time.monotonic() < quiet_until:
            for m in consumer.consume(num_messages=5000, timeout=0.2):
                received.append(Consumed(m.key(), m.value(), m.partition(), m.offset()))
    finally:
        consumer.close()
    return received


def log_leaves(records: list[Consumed], keys: Any) -> dict[str, str]:
    """The ingest job's LogSequencer per partition: event_id -> hex leaf hash it stores."""
    options = IngestOptions(topic="audit.events", origin_prefix="auditlog.it", block_size=1_000_000)
    sequencer = LogSequencer(options, keys, Signer.generate("auditlog.it"))
    leaves: dict[str, str] = {}
    by_partition: dict[int, list[Consumed]] = defaultdict(list)
    for record in records:
        by_partition[record.partition].append(record)
    for partition, recs in by_partition.items():
        cursor, dedupe = LogCursor(options.log_id(partition)), MemoryDedupe()
        for r in sorted(recs, key=lambda r: r.offset):
            assert sequencer.step(cursor, dedupe, SourceRecord(partition, r.offset, 0, r.key, r.value)) == []
        block = sequencer.seal(cursor)
        if block:
            for entry in decode_block_object(block.block_object)[1]:
                leaves[json.loads(entry)["event_id"]] = leaf_hash(entry).hex()
    return leaves


@dataclass
class Gateway:
    settings: Settings
    topic: str
    target: str
    tenant_key: str
    admin_key: str
    process: subprocess.Popen[str]

    def client(self, key: str | None = None, **options: Any) -> GatewayClient:
        return GatewayClient(self.target, key or self.tenant_key, **options)


def start_gateway(settings: Settings, topic: str, *extra: str, timeout_s: float = 60) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "runners.cli", "gateway", "--topic", topic, *extra]
    process = subprocess.Popen(
        argv,
        env={**os.environ, **settings.to_env()},
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + timeout_s
    lines = []
    assert process.stdout is not None
    ready = 0
    workers = int(extra[extra.index("--workers") + 1]) if "--workers" in extra else 1
    while ready < workers:
        line = process.stdout.readline()
        lines.append(line)
        if "gateway listening on" in line:
            ready += 1
        if (not line and process.poll() is not None) or time.monotonic() > deadline:
            process.kill()
            pytest.fail("the gateway did not start:\n" + "".join(lines))
    return process


def stop_gateway(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    try:
        out, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
        pytest.fail("the gateway did not stop on SIGTERM:\n" + out)
    assert process.returncode == 0, out
    return out


@pytest.fixture(scope="module")
def gateway_settings(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    home = tmp_path_factory.mktemp("gateway")
    return stack.settings.replace(
        master_key=base64.b64encode(os.urandom(32)).decode(),
        keystore_file=str(home / "keystore.sqlite"),
        apikeys_file=str(home / "apikeys.sqlite"),
        gateway_port=free_port(),
    )


@pytest.fixture(scope="module")
def gateway(gateway_settings: Settings) -> Iterator[Gateway]:
    settings = gateway_settings
    topic = f"it.gateway.{uuid.uuid4().hex[:8]}"
    create_topic(settings, topic)
    with ApiKeyStore.open(settings) as keys:
        tenant_key = keys.create(tenant_id="t_1000", label="it", scopes=("write",))[1]
        admin_key = keys.create(admin=True, label="it-admin")[1]
    process = start_gateway(settings, topic)
    running = Gateway(settings, topic, f"127.0.0.1:{settings.gateway_port}", tenant_key, admin_key, process)
    try:
        yield running
    finally:
        if process.poll() is None:
            print(stop_gateway(process))


def test_every_receipt_is_an_acknowledged_record_and_its_leaf(gateway: Gateway) -> None:
    gen = EventGenerator(seed=21, tenants=4)
    events = [gen.event() for _ in range(600)]
    with gateway.client(gateway.admin_key) as client:
        receipts = [client.record(e) for e in events[:100]]
        for start in range(100, 600, 250):
            receipts += client.record_many(events[start : start + 250])

    records = consume(gateway.settings, gateway.topic, 600)
    assert len(records) == 600
    by_id = {json.loads(r.value)["event_id"]: r for r in records}
    for event, receipt in zip(events, receipts, strict=True):
        record = by_id[event["event_id"]]
        assert (receipt.partition, receipt.offset) == (record.partition, record.offset)
        assert record.key == event["tenant_id"].encode()
    partitions = defaultdict(set)
    for r in records:
        partitions[r.key].add(r.partition)
    assert all(len(p) == 1 for p in partitions.values())  # a tenant's events share one log

    with open_keystore(gateway.settings) as keystore:  # the store the gateway used, opened here too
        leaves = log_leaves(records, keystore)
    assert {r.event_id: r.verification_hash for r in receipts} == leaves


def test_status_codes_over_the_wire(gateway: Gateway) -> None:
    gen = EventGenerator(seed=22, tenants=1)
    event = gen.event()
    with pytest.raises(GatewayError) as caught:
        GatewayClient(gateway.target).record(event)
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(GatewayError) as caught:
        gateway.client().record({**event, "tenant_id": "t_9999"})
    assert caught.value.code == grpc.StatusCode.PERMISSION_DENIED
    bad = {**event, "actor": {"id": "u_1", "type": "USER", "email": "no at sign"}}
    with pytest.raises(Exception) as invalid:
        gateway.client().record(bad)  # the SDK validates before sending ...
    assert "actor.email" in str(invalid.value)
    from api.gateway import audit_pb2_grpc
    from api.gateway.convert import request_from_event
    from api.sdk.events import wire_event

    request = request_from_event(wire_event(event))
    request.actor.email = "no at sign"  # ... and the gateway checks again
    stub = audit_pb2_grpc.AuditLogServiceStub(grpc.insecure_channel(gateway.target))
    with pytest.raises(grpc.RpcError) as rpc:
        stub.RecordEvent(request, metadata=(("authorization", f"Bearer {gateway.tenant_key}"),))
    assert rpc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "actor.email" in rpc.value.details()


def test_a_repeat_is_idempotent(gateway: Gateway) -> None:
    topic_before = len(consume(gateway.settings, gateway.topic, 0, settle_s=1))
    event = EventGenerator(seed=23, tenants=1).event()
    with gateway.client() as client:
        first = client.record(event)
        again = client.record(event)
    assert again.duplicate and again.verification_hash == first.verification_hash
    assert len(consume(gateway.settings, gateway.topic, topic_before + 1, settle_s=1)) == topic_before + 1


def test_two_thread_pool_workers_share_a_port(gateway_settings: Settings) -> None:
    settings = gateway_settings.replace(gateway_port=free_port())
    topic = f"it.gateway.workers.{uuid.uuid4().hex[:8]}"
    create_topic(settings, topic)
    process = start_gateway(settings, topic, "--workers", "2", "--server", "threads", "--no-auth")
    try:
        gen = EventGenerator(seed=24, tenants=3)
        events = [gen.event() for _ in range(200)]
        with GatewayClient(f"127.0.0.1:{settings.gateway_port}") as client:
            receipts = client.record_many(events[:100]) + [client.record(e) for e in events[100:]]
        assert len({r.event_id for r in receipts}) == 200
        assert len(consume(settings, topic, 200)) == 200
    finally:
        out = stop_gateway(process)
    assert out.count("gateway stopped") == 2
