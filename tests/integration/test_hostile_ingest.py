"""No record stops the job: hostile records and an erased subject's events, ingested again and again.

On the real stack (Kafka, the PyFlink job on a local mini-cluster, SeaweedFS, chDB):

1. a topic holds ordinary events, among them a subject's events with PII, and records that used
   to crash-loop the job (out-of-range dates, deep nesting, lone surrogates, huge numbers,
   reserved names, a boolean schema_version, random bytes); `auditlog ingest --bounded` finishes
   and dead-letters exactly those, each with a reason naming what was wrong;
2. `auditlog erase` erases the subject and deletes from Kafka what the archive holds: none of
   the subject's plaintext is left in the topic; more of its events arrive;
3. the topic is ingested twice more, bounded, from the earliest offset left: both runs resume
   each log from the archive and finish, the archive gains only the new blocks (no archived key
   gets a second version), the subject's new events are logged with PII marked erased and no
   key re-created, and the second of the two runs changes nothing.

    .venv/bin/python -m pytest -m integration tests/integration/test_hostile_ingest.py -s
"""

from __future__ import annotations

import json
import random
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from runners.deployment import with_master_key
from schemas.samples import EventGenerator, to_record
from schemas.settings import REPO_ROOT, Settings
from tests.integration.test_ingest_e2e import (
    PII_PATTERN,
    auditlog_command,
    cli_env,
    dead_letters,
    deployment,
    ingest,
    read_topic,
    s3_objects,
)

pytestmark = pytest.mark.integration

PARTITIONS = 2
TENANT = "t_hostile"
SUBJECT = "u_hostile_erased"
BIG = "123456789012345678901234567"


def _event(event_id: str, actor: str, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "tenant_id": TENANT,
        "actor": {"id": actor, "type": "USER", "email": f"{actor}@example.org", "name": f"Name {actor}"},
        "action": "document.read",
        "resource": {"id": "doc_1", "type": "DOCUMENT"},
        "result": "SUCCESS",
        "client_ip": "192.0.2.7",
        "occurred_at": "2026-11-30T10:00:00.000Z",
        **extra,
    }


def hostile_values() -> dict[str, bytes]:
    """Records that used to stop the job, by what their dead letter must name."""
    base = json.dumps(_event("evt_h", "u_h"))
    surrogate = json.dumps(_event("evt_s", "u_s", request_id=BIG[:20])).replace('"Name u_s"', '"\\ud800"')
    return {
        "occurred_at '9999-12-31T23:59:59-01:00'": json.dumps(
            _event("evt_late", "u_h", occurred_at="9999-12-31T23:59:59-01:00")
        ).encode(),
        "occurred_at '0001-01-01T00:00:00+01:00'": json.dumps(
            _event("evt_early", "u_h", occurred_at="0001-01-01T00:00:00+01:00")
        ).encode(),
        "nested deeper than": (
            base[:-1] + f', "request_id": "{BIG[:20]}", "metadata": {{"d": ' + "[" * 100_000 + "]" * 100_000 + "}}"
        ).encode(),
        "lone surrogate": surrogate.encode(),
        "beyond ±2**53": (base[:-1].replace("evt_h", "evt_big") + f', "metadata": {{"n": {BIG}}}}}').encode(),
        "reserved name 'audit_log.search'": json.dumps(_event("evt_r", "u_h", action="audit_log.search")).encode(),
        "reserved name 'apikey:": json.dumps(_event("evt_k", "apikey:0123456789abcdef")).encode(),
        "schema_version True": json.dumps({**_event("evt_v", "u_h"), "schema_version": True}).encode(),
        "is not UTF-8": bytes(random.Random(7).randrange(128, 256) for _ in range(200)),
    }


def produce(settings: Settings, topic: str, values: list[bytes], partition: int) -> None:
    from confluent_kafka import Producer

    from pipelines.io.kafka import kafka_client_config

    producer = Producer(kafka_client_config(settings, **{"enable.idempotence": True}))
    for value in values:
        producer.produce(topic, value, key=TENANT.encode(), partition=partition)
    assert producer.flush(60) == 0


def create_topics(settings: Settings, topic: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    from pipelines.io.archive import ensure_bucket
    from pipelines.io.kafka import kafka_client_config
    from pipelines.io.s3 import s3_client

    admin = AdminClient(kafka_client_config(settings))
    for future in admin.create_topics(
        [
            NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1),
            NewTopic(settings.dlq_topic, num_partitions=1, replication_factor=1),
        ]
    ).values():
        future.result(30)
    ensure_bucket(s3_client(settings), settings.bucket)


def auditlog(settings: Settings, *args: str, timeout: float = 600) -> str:
    """Runs `auditlog ARGS` against the test's deployment; fails with its output unless it exits 0."""
    done = subprocess.run(
        [auditlog_command(), *args],
        env=cli_env(settings),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done.stdout + done.stderr


def erase(settings: Settings) -> str:
    return auditlog(settings, "erase", "--tenant", TENANT, "--subject", SUBJECT, "--reason", "test: GDPR request")


def archived_entries(settings: Settings) -> dict[str, list[bytes]]:
    """Every archived block's entries, by object key."""
    from pipelines.io.s3 import s3_client
    from tests.synthetic import block_entries

    s3 = s3_client(settings)
    objects = {key: s3.get_object(Bucket=settings.bucket, Key=key)["Body"].read() for key in s3_objects(settings)}
    return {key: block_entries(objects, key)[1] for key in objects if "/blocks/" in key}


@pytest.mark.timeout(1800)
def test_hostile_records_and_an_erased_subject_never_stop_the_job_and_reruns_agree(
    stack: Any, stack_settings: Settings, tmp_path: Path
) -> None:
    topic = f"e2e.hostile-{uuid.uuid4().hex[:8]}"
    settings = deployment(stack_settings, tmp_path, "hostile").replace(topic=topic)
    create_topics(settings, topic)
    generator = EventGenerator(seed=5)
    ordinary = [to_record(generator.event())[1] for _ in range(120)]
    subject_before = [json.dumps(_event(f"evt_s{i}", SUBJECT)).encode() for i in range(6)]
    hostile = hostile_values()
    produce(settings, topic, ordinary[:60] + subject_before[:3] + list(hostile.values())[:5], partition=0)
    produce(settings, topic, ordinary[60:] + subject_before[3:] + list(hostile.values())[5:], partition=1)

    first = ingest(settings, topic, "--block-size", "16")
    assert "indexed into ClickHouse" in first.output
    before = s3_objects(settings)
    sealed_before = archived_entries(settings)
    subject_entries = [e for es in sealed_before.values() for e in es if SUBJECT.encode() in e]
    assert len(subject_entries) == 6 and all(b'"ct":' in e for e in subject_entries)
    letters = dead_letters(settings)
    assert len(letters) == len(hostile)
    reasons = [letter["reason"] for letter in letters]
    for what in hostile:
        assert any(what in reason for reason in reasons), (what, reasons)

    said = erase(settings)
    assert "erased" in said and "deleted the records of" in said, said
    left = read_topic(settings, topic, PARTITIONS, isolation="read_uncommitted")
    plaintext = [SUBJECT.encode() + b"@example.org", f"Name {SUBJECT}".encode()]
    assert not [v for _, _, _, v in left if any(p in v for p in plaintext)], "plaintext outlived the erasure"
    assert len(left) < len(ordinary), "the archived records were not deleted"
    subject_after = [json.dumps(_event(f"evt_s_after{i}", SUBJECT)).encode() for i in range(4)]
    produce(settings, topic, subject_after[:2], partition=0)
    produce(settings, topic, subject_after[2:], partition=1)

    second = ingest(settings, topic, "--block-size", "16")
    after = s3_objects(settings)  # asserts no archived key was written twice
    assert {k: v for k, v in after.items() if k in before} == before, "an archived object changed"
    assert len(after) > len(before)
    entries = archived_entries(settings)
    for key, sealed in sealed_before.items():
        assert entries[key] == sealed
    new_entries = [e for key, es in entries.items() if key not in sealed_before for e in es]
    erased_events = [d for d in map(json.loads, new_entries) if d["actor"]["id"] == SUBJECT]
    assert sorted(d["event_id"] for d in erased_events) == [f"evt_s_after{i}" for i in range(4)]
    for doc in erased_events:
        assert doc["pii"] == {f: {"erased": True} for f in ("actor.email", "actor.name", "client_ip")}
    assert not any(PII_PATTERN.search(e) for e in new_entries if SUBJECT.encode() in e)
    erasure = [d for d in map(json.loads, new_entries) if d["action"] == "privacy.subject.erase"]
    assert [d["resource"]["id"] for d in erasure] == [SUBJECT], "the erasure's own audit event is logged"

    from pipelines.io.keystore import open_keystore

    with open_keystore(with_master_key(settings)) as keystore:
        assert keystore.get(TENANT, SUBJECT) is None and keystore.is_erased(TENANT, SUBJECT)

    third = ingest(settings, topic, "--block-size", "16")
    assert s3_objects(settings) == after
    assert archived_entries(settings) == entries
    assert "indexed into ClickHouse: 0 blocks, 0 events" in third.output, third.output[-4000:]
    assert second.output and "indexed into ClickHouse" in second.output
    # The resumed logs chain on from the blocks archived before the truncation, and verify.
    assert "verified" in auditlog(settings, "verify")
    # The first run dead-lettered each hostile record once; they were archived past, so deleted.
    sources = [(d["source"]["partition"], d["source"]["offset"]) for d in dead_letters(settings)]
    assert len(sources) == len(set(sources)) == len(hostile)
