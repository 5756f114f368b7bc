"""The ingest job on two TaskManagers sharing the PostgreSQL key store, one of them killed mid-run.

The standalone Flink cluster of the test stack (two one-slot TaskManagers) runs `auditlog ingest
--bounded --cluster` at parallelism 2 with AUDITLOG_KEYSTORE_URL naming PostgreSQL (`auditlog
stack up postgres`). The records are keyed by their content, not by tenant, so every subject's
events are spread over all four partitions and both TaskManagers ask the key store for the same
subjects at the same time. One TaskManager is SIGKILLed once the job has archived part of the
topic and completed a checkpoint; the job fails over and finishes. Then, with the checks of
test_ingest_recovery.py (its helpers, against a single-process `LogSequencer` reference over the
same topic with the keys the job made): the archive objects are byte-identical, each written
once; the chains and checkpoints verify; ClickHouse holds each event once; the DLQ holds each
dead letter once. And PostgreSQL's key table holds exactly one row per subject the events name,
never updated or deleted: each subject's keys were created once, by whichever TaskManager came
first, and used by both::

    AUDITLOG_TEST_PORT_OFFSET=51000 .venv/bin/python -m pytest tests/integration/test_multi_taskmanager.py -s
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.stack import Stack
from pipelines.io.archive import ensure_bucket
from pipelines.io.kafka import kafka_client_config
from pipelines.io.keystore.postgres import POSTGRES_SCHEMA
from pipelines.io.s3 import s3_client
from schemas.events import pii_subject
from schemas.settings import Settings
from tests.integration.test_ingest_recovery import (
    DUPLICATE_FRACTION,
    MALFORMED_FRACTION,
    PARTITIONS,
    TENANTS,
    IngestRun,
    archived_blocks,
    check_everything,
    completed_checkpoints,
    deployment,
    find_job,
    kill_seed,
    leave_cluster_whole,
    read_topic,
    rest,
    restarted_since,
    sizing,
    wait_until,
)

# The fixture `postgres_home` (its `home`): a folder of its own that PostgreSQL (as user postgres, when root) can reach.
from tests.integration.test_postgres_stack import home as postgres_home  # noqa: F401
from transforms.tiles import decode_bundle

pytestmark = pytest.mark.integration

RECORDS = 60_000
KILL_AT = (0.15, 0.35)  # the kill comes once this fraction of the reference's blocks is archived
JOB_TIMEOUT_S = 1500.0


@pytest.fixture
def postgres(stack: Stack, request: pytest.FixtureRequest) -> Iterator[Settings]:
    """`auditlog stack up postgres` on the test port offset, in a home of its own; its settings."""
    home: Path = request.getfixturevalue("postgres_home")
    offset = int(os.environ.get("AUDITLOG_TEST_PORT_OFFSET", 10000))
    settings = stack.settings.replace(home=home, postgres_port=Settings().postgres_port + offset)
    pg = Stack(settings, say=print)
    try:
        pg.up(["postgres"])
        yield settings
    finally:
        pg.down(["postgres"])


def produce_spread(settings: Settings, seed: int) -> None:
    """The topic (PARTITIONS partitions) and its DLQ and bucket; RECORDS records, each keyed by its content.

    A duplicate has the bytes of its original, so it lands in the same partition and the job's
    per-log dedupe still drops it; a subject's events land in every partition.
    """
    from confluent_kafka.admin import AdminClient, NewTopic

    from runners.commands.produce import generate_records, produce_records
    from schemas.samples import start_of_today

    admin = AdminClient(kafka_client_config(settings))
    for future in admin.create_topics(
        [NewTopic(settings.topic, num_partitions=PARTITIONS), NewTopic(settings.dlq_topic, num_partitions=1)]
    ).values():
        future.result(30)
    ensure_bucket(s3_client(settings), settings.bucket)
    records = generate_records(
        RECORDS, TENANTS, DUPLICATE_FRACTION, MALFORMED_FRACTION, seed=seed, start=start_of_today()
    )
    spread = ((hashlib.sha256(value).hexdigest()[:16].encode(), value, kind) for _, value, kind in records)
    summary = produce_records(settings, spread, topic=settings.topic, progress=False)
    assert summary.sent == RECORDS, summary.line()


def key_table(settings: Settings) -> tuple[set[tuple[str, str]], int, dict[str, int]]:
    """(tenant, subject) of every row of the key table, the rows, and the table's insert/update/delete counts."""
    import psycopg

    with psycopg.connect(settings.keystore_url, autocommit=True) as conn:
        rows = conn.execute(f"SELECT tenant_id, subject_id FROM {POSTGRES_SCHEMA}.subject_keys").fetchall()
        stats = conn.execute(
            "SELECT n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables "
            "WHERE schemaname = %s AND relname = 'subject_keys'",
            (POSTGRES_SCHEMA,),
        ).fetchone()
    assert stats is not None
    return {(t, s) for t, s in rows}, len(rows), dict(zip(("inserted", "updated", "deleted"), stats, strict=True))


def archived_subjects(settings: Settings) -> set[tuple[str, str]]:
    """(tenant, subject) of every archived event: the subjects the job asked the key store for."""
    s3 = s3_client(settings)
    subjects = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=settings.bucket, Prefix="logs/"):
        for item in page.get("Contents", []):
            if "/tile/entries/" in item["Key"]:  # every event's bytes are in its log's entry bundles
                bundle = s3.get_object(Bucket=settings.bucket, Key=item["Key"])["Body"].read()
                for entry in decode_bundle(bundle):
                    event = json.loads(entry)
                    subjects.add((event["tenant_id"], pii_subject(event)))
    return subjects


@pytest.mark.timeout(JOB_TIMEOUT_S + 900)
def test_two_taskmanagers_share_the_postgres_key_store_through_a_kill(
    stack: Stack, postgres: Settings, tmp_path: Path
) -> None:
    assert stack.settings.flink_taskmanagers == 2
    overview = rest(stack.settings, "/overview")
    assert (overview["taskmanagers"], overview["slots-total"]) == (2, 2), overview
    settings = deployment(stack, "multi-tm").replace(
        keystore_url=postgres.local_keystore_url, master_key=base64.b64encode(os.urandom(32)).decode()
    )
    assert settings.job_parallelism(local=False) == 2
    seed = kill_seed()
    rng = random.Random(seed)
    started = time.monotonic()
    produce_spread(settings, seed % 1000)
    partitions = read_topic(settings, settings.topic)
    assert all(partitions.values()), {p: len(r) for p, r in partitions.items()}
    total_blocks = sizing(settings, partitions).blocks
    kill_point = max(1, round(rng.uniform(*KILL_AT) * total_blocks))
    print(f"\nmulti-TaskManager test: seed {seed}, {RECORDS} records, {total_blocks} blocks; kill after {kill_point}")

    run = IngestRun(settings, tmp_path / "ingest.out", cluster=True)
    job_id = ""
    try:
        job_id = find_job(settings, run)
        wait_until(f"{kill_point} blocks are archived", lambda: archived_blocks(settings) >= kill_point, run)
        wait_until("a checkpoint completes", lambda: completed_checkpoints(settings, job_id) > 0, run)
        running = [row for row in stack.status(["flink"]) if row.name.startswith("flink-taskmanager") and row.pid]
        assert len(running) == 2, running
        victim = rng.choice(running)
        assert victim.pid is not None
        blocks_at_kill = archived_blocks(settings)
        killed_at_ms = int(time.time() * 1000)
        os.killpg(victim.pid, signal.SIGKILL)  # the TaskManager and anything it started
        print(f"  killed {victim.name} (pid {victim.pid}) at {run.elapsed:.0f} s, {blocks_at_kill} blocks archived")
        wait_until(
            f"{victim.name} is gone",
            lambda: all(r.pid is None for r in stack.status(["flink"]) if r.name == victim.name),
            run,
            timeout=60,
        )
        stack.up(["flink"])  # starts the missing TaskManager only
        wait_until("the job failed over and runs again", lambda: restarted_since(settings, job_id, killed_at_ms), run)
        rc = run.wait(JOB_TIMEOUT_S)
    finally:
        run.stop()
        leave_cluster_whole(stack, job_id)
    assert rc == 0, f"auditlog ingest failed (exit {rc}):\n{run.tail()}"
    job = rest(settings, f"/jobs/{job_id}")
    assert job["state"] == "FINISHED"
    assert max(vertex["parallelism"] for vertex in job["vertices"]) == 2
    assert blocks_at_kill < total_blocks, "the job had archived everything before the kill"
    restored = rest(settings, f"/jobs/{job_id}/checkpoints")["counts"]["restored"]
    assert restored >= 1, "the recovery must have restored a checkpoint"

    print("  " + check_everything(settings, partitions, run))

    subjects, rows, stats = key_table(settings)
    needed = archived_subjects(settings)
    assert len(needed) > TENANTS, "too few subjects for a race"
    assert subjects == needed and rows == len(needed)
    assert (stats["updated"], stats["deleted"]) == (0, 0), stats
    print(
        f"  key store: {rows} subjects, one key row each (inserts {stats['inserted']}, updates 0, deletes 0); "
        f"job {job['duration'] / 1000:.0f} s, test {time.monotonic() - started:.0f} s"
    )
