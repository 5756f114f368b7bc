"""The transactional outbox against real PostgreSQL (Debian's binaries) and real Kafka.

    AUDITLOG_TEST_PORT_OFFSET=40000 .venv/bin/python -m pytest -m integration tests/integration/test_outbox.py

The test starts its own PostgreSQL (initdb into a temp dir, a free loopback port), commits events
with business rows (and rolls some back), runs `auditlog outbox forward` as a subprocess, kills it
with SIGKILL in the middle of a batch — after Kafka acknowledged it, before the delete — restarts
it, and checks that every committed event is in Kafka at least once, no rolled-back one is, and
that the ingest job's dedupe (LogSequencer) leaves each exactly once.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.sdk import SEED_LANES, AuditClient, create_outbox_table, record_in_transaction
from api.sdk.localpg import LocalPostgres
from infra.stack import Stack
from pipelines.io.keystore import InMemoryKeyStore
from schemas.samples import EventGenerator
from schemas.settings import REPO_ROOT, Settings
from tests.integration.test_gateway import Consumed, consume, create_topic, log_leaves

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def postgres() -> Iterator[LocalPostgres]:
    with LocalPostgres() as pg:
        yield pg


def _event_ids(records: list[Consumed]) -> Counter[str]:
    import json

    return Counter(json.loads(r.value)["event_id"] for r in records)


def fill_postgres(dsn: str, n: int, per_tx: int = 200, seed: int = 31) -> tuple[set[str], set[str]]:
    """Commits n events with business rows, `per_tx` per transaction; every 7th transaction rolls back."""
    import psycopg

    gen = EventGenerator(seed=seed, tenants=6)
    committed: set[str] = set()
    rolled_back: set[str] = set()
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS role_grants (id BIGSERIAL PRIMARY KEY, who TEXT, role TEXT)")
        create_outbox_table(conn)
        tx = 0
        while len(committed) < n:
            tx += 1
            ids = []
            conn.execute("INSERT INTO role_grants (who, role) VALUES (%s, %s)", (f"u_{tx}", "admin"))
            for _ in range(min(per_tx, n - len(committed))):
                ids.append(record_in_transaction(conn, gen.event())["event_id"])
            if tx % 7 == 0:
                conn.rollback()
                rolled_back.update(ids)
            else:
                conn.commit()
                committed.update(ids)
    return committed, rolled_back


def forward(settings: Settings, dsn: str, topic: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "runners.cli", "outbox", "forward", "--dsn", dsn, "--topic", topic, *extra],
        env={**os.environ, **settings.to_env()},
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def kill_mid_batch(settings: Settings, topic: str, process: subprocess.Popen[str], at_least: int) -> int:
    """Waits until Kafka holds `at_least` records, then SIGKILLs the forwarder; returns the count seen."""
    from confluent_kafka import Consumer

    from pipelines.io.kafka import kafka_client_config

    consumer = Consumer(
        kafka_client_config(settings, **{"group.id": f"it-kill-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"})
    )
    consumer.subscribe([topic])
    seen = 0
    deadline = time.monotonic() + 120
    try:
        while seen < at_least:
            assert time.monotonic() < deadline, "the forwarder made no progress"
            assert process.poll() is None, process.communicate()[0]
            seen += sum(1 for m in consumer.consume(num_messages=5000, timeout=0.05) if m.error() is None)
        # The batch just acknowledged is now in its pause before the delete: kill it there.
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        consumer.close()
    assert process.returncode == -signal.SIGKILL
    return seen


def test_postgres_outbox_survives_a_killed_forwarder_without_loss(stack: Stack, postgres: LocalPostgres) -> None:
    settings = stack.settings
    topic = f"it.outbox.pg.{uuid.uuid4().hex[:8]}"
    create_topic(settings, topic)
    committed, rolled_back = fill_postgres(postgres.dsn, 12_000)
    assert len(rolled_back) > 0

    first = forward(settings, postgres.dsn, topic, "--batch-size", "1000", "--debug-pause-before-delete-ms", "400")
    kill_mid_batch(settings, topic, first, at_least=3000)
    import psycopg

    with psycopg.connect(postgres.dsn) as conn:
        left = conn.execute("SELECT count(*) FROM auditlog_outbox").fetchone()[0]
    assert 0 < left < len(committed)

    second = forward(settings, postgres.dsn, topic, "--batch-size", "1000", "--until-empty")
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0, out
    assert "events/s" in out

    records = consume(settings, topic, len(committed) + 1000, timeout_s=30)
    counts = _event_ids(records)
    assert set(counts) == committed  # every committed event, at least once; no rolled-back one
    assert not set(counts) & rolled_back
    repeats = sum(counts.values()) - len(counts)
    assert repeats > 0, "the kill should have left an acknowledged batch behind to send again"

    leaves = log_leaves(records, InMemoryKeyStore())  # the ingest job's dedupe: exactly once
    assert len(leaves) == len(committed)
    with psycopg.connect(postgres.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM auditlog_outbox").fetchone()[0] == 0


def test_sqlite_outbox_lease_expires_after_a_kill_and_every_event_arrives(stack: Stack, tmp_path: Path) -> None:
    settings = stack.settings
    topic = f"it.outbox.sqlite.{uuid.uuid4().hex[:8]}"
    create_topic(settings, topic)
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db)
    create_outbox_table(conn)
    gen = EventGenerator(seed=32, tenants=3)
    with conn:
        ids = {record_in_transaction(conn, gen.event())["event_id"] for _ in range(5000)}
    conn.close()
    dsn = f"sqlite:///{db}"

    first = forward(
        settings, dsn, topic, "--batch-size", "500", "--lease-s", "2", "--debug-pause-before-delete-ms", "400"
    )
    kill_mid_batch(settings, topic, first, at_least=1000)
    second = forward(settings, dsn, topic, "--batch-size", "500", "--lease-s", "2", "--until-empty")
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0, out
    if sqlite3.connect(db).execute("SELECT count(*) FROM auditlog_outbox").fetchone()[0]:
        # The killed forwarder's lease had not expired when the second one drained: go again.
        time.sleep(2.1)
        third = forward(settings, dsn, topic, "--batch-size", "500", "--until-empty")
        out, _ = third.communicate(timeout=300)
        assert third.returncode == 0, out
    counts = _event_ids(consume(settings, topic, len(ids), timeout_s=60))
    assert set(counts) == ids
    assert sqlite3.connect(db).execute("SELECT count(*) FROM auditlog_outbox").fetchone()[0] == 0


def test_the_client_sends_compliance_actions_through_the_outbox_and_the_rest_direct(
    stack: Stack, postgres: LocalPostgres
) -> None:
    import psycopg

    settings = stack.settings
    topic = f"it.outbox.lanes.{uuid.uuid4().hex[:8]}"
    create_topic(settings, topic)
    dsn = postgres.dsn.replace("/postgres", "/lanes")
    with psycopg.connect(postgres.dsn, autocommit=True) as admin:
        admin.execute("CREATE DATABASE lanes")
    gen = EventGenerator(seed=33, tenants=2)
    events = [gen.event() for _ in range(400)]
    client = AuditClient.from_settings(settings, topic=topic, lanes=SEED_LANES, gateway=None)
    lanes = Counter()
    with psycopg.connect(dsn) as conn:
        create_outbox_table(conn)
        for event in events:
            lanes[client.record(event, conn=conn).lane] += 1
            conn.commit()
    client.close()
    assert lanes["outbox"] > 0 and lanes["direct"] > 0
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM auditlog_outbox").fetchone()[0] == lanes["outbox"]

    done = forward(settings, dsn, topic, "--until-empty")
    out, _ = done.communicate(timeout=120)
    assert done.returncode == 0, out
    counts = _event_ids(consume(settings, topic, len(events)))
    assert set(counts) == {e["event_id"] for e in events}
