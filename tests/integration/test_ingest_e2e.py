"""End to end: `auditlog ingest --bounded` on the real stack, checked against what was produced.

Each test gets its own topic (4 partitions), DLQ topic, Object Lock bucket and chDB directory,
produces sample events with duplicates and malformed records, runs the CLI as a subprocess, and
then checks every output against the produced records:

- ClickHouse holds each distinct valid event exactly once;
- the DLQ topic (read_committed) holds every malformed record, whole, with where it came from;
- each log's blocks in S3 chain, hold the partition's first occurrences in partition order, and
  no plaintext PII; each log's head in ClickHouse is its newest signed checkpoint in S3;
- inclusion proofs of sampled events verify, also through `auditlog verify-proof`;
- re-running the same job changes nothing (local test), and the job's custom metrics show in the
  Flink REST API (cluster test).

    .venv/bin/python -m pytest -m integration tests/integration/test_ingest_e2e.py -s

ClickHouse is read in a child process (this file run as a script): chDB hosts one data directory
per process, and other tests of the session may hold another one.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from schemas.settings import REPO_ROOT, Settings

pytestmark = pytest.mark.integration

PARTITIONS = 4
TENANTS = 8  # t_1000 .. t_1007: Kafka's murmur2 partitioner puts them on all four partitions
DUPLICATE_FRACTION = 0.02
MALFORMED_FRACTION = 0.01
LOCAL_RECORDS = 20_000
# The REST API fetches metrics from the TaskManagers at most every 10 s
# (metrics.fetcher.update-interval), so the cluster job must run for well over 10 s to be seen.
CLUSTER_RECORDS = 50_000
PROOF_SAMPLES = 20
PII_IP_SAMPLES = 300
# Any e-mail address or IPv4 address in an archived block is plaintext PII: sealed values are
# base64 and lookup hashes hex, which have neither "@" nor dotted quads.
PII_PATTERN = re.compile(rb"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+\.[A-Za-z0-9.-]+|\b\d{1,3}(?:\.\d{1,3}){3}\b")
INGEST_TIMEOUT_S = 600
CUSTOM_COUNTERS = ("events_accepted", "duplicates_dropped", "dead_letters", "blocks_sealed", "erased_subject_events")
_RUNTIME = re.compile(r"net runtime (\d+) ms|Job Runtime: (\d+) ms")


# --------------------------------------------------------------------------- what was produced


@dataclass
class Produced:
    """The records of one test topic as Kafka holds them, and what the job must make of them."""

    topic: str
    records: int
    duplicates: int
    malformed: dict[tuple[int, int], tuple[bytes, bytes]]  # (partition, offset) -> (key, value)
    logs: dict[str, list[tuple[str, str]]]  # log id -> (tenant, event id) of its leaves, in order
    pii: list[str] = field(default_factory=list)  # every e-mail and name sent, and sampled IPs

    @property
    def events(self) -> set[tuple[str, str]]:
        return {leaf for leaves in self.logs.values() for leaf in leaves}


def produce(settings: Settings, topic: str, records: int, seed: int) -> Produced:
    """Creates the topic (and the DLQ topic), writes sample records, and reads them back."""
    from confluent_kafka.admin import AdminClient, NewTopic

    from pipelines.io.archive import ensure_bucket
    from pipelines.io.kafka import kafka_client_config
    from pipelines.io.s3 import s3_client
    from runners.commands.produce import MALFORMED, generate_records, produce_records
    from schemas.samples import start_of_today

    admin = AdminClient(kafka_client_config(settings))
    futures = admin.create_topics(
        [
            NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1),
            NewTopic(settings.dlq_topic, num_partitions=1, replication_factor=1),
        ]
    )
    for future in futures.values():
        future.result(30)
    ensure_bucket(s3_client(settings), settings.bucket)

    generated = list(
        generate_records(records, TENANTS, DUPLICATE_FRACTION, MALFORMED_FRACTION, seed=seed, start=start_of_today())
    )
    summary = produce_records(settings, generated, topic=topic, progress=False)
    assert summary.sent == records
    broken = {r.value for r in generated if r.kind.startswith(MALFORMED)}
    assert len(broken) == summary.malformed

    malformed: dict[tuple[int, int], tuple[bytes, bytes]] = {}
    logs: dict[str, list[tuple[str, str]]] = {}
    seen: set[tuple[str, str]] = set()
    people: set[str] = set()
    addresses: set[str] = set()
    placed = read_topic(settings, topic, PARTITIONS, isolation="read_uncommitted")
    assert len(placed) == records
    for partition, offset, key, value in placed:
        if value in broken:
            malformed[(partition, offset)] = (key, value)
            continue
        event = json.loads(value)
        leaf = (event["tenant_id"], event["event_id"])
        if leaf not in seen:
            seen.add(leaf)
            logs.setdefault(f"{topic}.p{partition}", []).append(leaf)
            people.update(v for v in (event["actor"].get("email"), event["actor"].get("name")) if v)
            addresses.update([event["client_ip"]] if "client_ip" in event else [])
    assert len(logs) == PARTITIONS, f"only partitions {sorted(logs)} got events; use more tenants"
    assert records - len(malformed) - len(seen) == summary.duplicates
    pii = sorted(people) + random.Random(seed).sample(sorted(addresses), min(PII_IP_SAMPLES, len(addresses)))
    return Produced(topic, records, summary.duplicates, malformed, logs, pii)


def read_topic(
    settings: Settings, topic: str, partitions: int, isolation: str = "read_committed", timeout_s: float = 60
) -> list[tuple[int, int, bytes, bytes]]:
    """Every record of a topic as (partition, offset, key, value), read to the end of each partition."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    from pipelines.io.kafka import kafka_client_config

    consumer = Consumer(
        kafka_client_config(
            settings,
            **{
                "group.id": f"e2e-reader-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": isolation,
            },
        )
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    out: list[tuple[int, int, bytes, bytes]] = []
    at_end: set[int] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while len(at_end) < partitions:
            assert time.monotonic() < deadline, f"{topic}: partitions {sorted(at_end)} of {partitions} read in time"
            message = consumer.poll(1.0)
            if message is None:
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(message.partition())
                    continue
                raise AssertionError(f"reading {topic}: {message.error()}")
            at_end.discard(message.partition())
            out.append((message.partition(), message.offset(), message.key() or b"", message.value() or b""))
    finally:
        consumer.close()
    return out


# --------------------------------------------------------------------------- running the CLI


def deployment(base: Settings, tmp_path: Path, name: str) -> Settings:
    """The stack's settings with this test's own DLQ topic, bucket and chDB directory."""
    tag = f"{name}-{uuid.uuid4().hex[:8]}"
    return base.replace(
        dlq_topic=f"e2e.{tag}.dlq",
        bucket=f"e2e-{tag}",
        clickhouse_url=f"chdb://{tmp_path / 'chdb'}",
    )


def auditlog_command() -> str:
    found = Path(sys.executable).with_name("auditlog")
    return str(found) if found.exists() else (shutil.which("auditlog") or "auditlog")


def cli_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, **settings.to_env()}


@dataclass
class IngestRun:
    output: str
    wall_s: float
    runtime_s: float | None  # the Flink job's own runtime, as the CLI reports it
    job_id: str | None

    def report(self, label: str, records: int) -> str:
        runtime = f"job runtime {self.runtime_s:.1f} s" if self.runtime_s else "job runtime ?"
        rate = f" = {records / self.runtime_s:,.0f} records/s" if self.runtime_s else ""
        return f"{label}: {records} records, {runtime}{rate}, CLI wall {self.wall_s:.1f} s"


class Ingest:
    """`auditlog ingest --bounded --topic TOPIC ...` running as a subprocess, its output drained."""

    def __init__(self, settings: Settings, topic: str, *extra: str) -> None:
        self.label = " ".join(["auditlog ingest --bounded --topic", topic, *extra])
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [auditlog_command(), "ingest", "--bounded", "--topic", topic, *extra],
            env=cli_env(settings),
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._lines: list[str] = []
        self._drain = threading.Thread(target=self._read, daemon=True)
        self._drain.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.append(line)

    def running(self) -> bool:
        return self.process.poll() is None and time.monotonic() - self.started < INGEST_TIMEOUT_S

    def wait(self) -> IngestRun:
        """Waits for the CLI; fails the test with its output unless it exits 0 in time."""
        try:
            self.process.wait(timeout=max(1.0, INGEST_TIMEOUT_S - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            self._drain.join(10)
            pytest.fail(f"{self.label} did not finish within {INGEST_TIMEOUT_S} s:\n{''.join(self._lines)[-8000:]}")
        wall = time.monotonic() - self.started
        self._drain.join(30)
        output = "".join(self._lines)
        assert self.process.returncode == 0, f"{self.label} exited {self.process.returncode}:\n{output[-8000:]}"
        runtime = _RUNTIME.search(output)
        job = re.search(r"\(job ([0-9a-f]{32})|JobID ([0-9a-f]{32})", output)
        return IngestRun(
            output,
            wall,
            int(runtime.group(1) or runtime.group(2)) / 1000 if runtime else None,
            (job.group(1) or job.group(2)) if job else None,
        )


def ingest(settings: Settings, topic: str, *extra: str) -> IngestRun:
    return Ingest(settings, topic, *extra).wait()


# --------------------------------------------------------------------------- ClickHouse, in a child process


def clickhouse_facts(settings: Settings, samples: list[tuple[str, str]], needles: list[str]) -> dict[str, Any]:
    """What the deployment's ClickHouse holds, read by this file run as a script (see `_child_main`)."""
    request = json.dumps({"samples": samples, "needles": needles})
    done = subprocess.run(
        [sys.executable, __file__, "--clickhouse-facts"],
        input=request,
        env={**cli_env(settings), "PYTHONPATH": str(REPO_ROOT)},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"reading ClickHouse failed:\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}"
    facts: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return facts


def _child_main() -> None:
    """In the child: counts, events, heads, PII matches and proofs of one chDB directory, as JSON."""
    from pipelines.io.clickhouse import open_clickhouse
    from runners.commands.proof import build_proof

    request = json.loads(sys.stdin.read())
    settings = Settings.from_env()
    ch = open_clickhouse(settings.effective_clickhouse_url)
    tables = ("audit_logs", "audit_leaves", "audit_blocks", "audit_checkpoints")
    counts = {t: int(ch.query(f"SELECT count() FROM auditlog.{t}")[0][0]) for t in tables}
    unique = int(ch.query("SELECT uniqExact(tenant_id, event_id) FROM auditlog.audit_logs")[0][0])
    events = [list(row) for row in ch.query("SELECT tenant_id, event_id FROM auditlog.audit_logs")]
    pii_rows = int(
        ch.query(
            "SELECT count() FROM auditlog.audit_logs WHERE match(canonical, {pattern:String})",
            {"pattern": PII_PATTERN.pattern.decode()},
        )[0][0]
    )
    needles = request["needles"]
    for start in range(0, len(needles), 200):  # multiSearchAny takes at most 255 needles
        pii_rows += int(
            ch.query(
                "SELECT count() FROM auditlog.audit_logs WHERE multiSearchAny(canonical, {needles:Array(String)})",
                {"needles": needles[start : start + 200]},
            )[0][0]
        )
    proofs = []
    for tenant_id, event_id in request["samples"]:
        found = ch.find_events(tenant_id, event_id)
        canonical, text = build_proof(settings, tenant_id, event_id)
        proofs.append(
            {
                "tenant_id": tenant_id,
                "event_id": event_id,
                "occurrences": len(found),
                "log_id": found[0]["log_id"],
                "leaf_index": found[0]["leaf_index"],
                "canonical_b64": base64.b64encode(canonical).decode(),
                "proof": text,
            }
        )
    heads = {log_id: [size, root.hex()] for log_id, (size, root) in ch.log_heads().items()}
    facts = {"counts": counts, "unique": unique, "events": events, "pii_rows": pii_rows, "proofs": proofs}
    print(json.dumps({**facts, "heads": heads}))


# --------------------------------------------------------------------------- the checks


@dataclass
class Snapshot:
    """What a re-run must leave exactly as it was."""

    objects: dict[str, str]  # S3 key -> ETag
    counts: dict[str, int]  # ClickHouse table -> rows
    heads: dict[str, list[Any]]


def s3_objects(settings: Settings) -> dict[str, str]:
    """Every key of the bucket with its ETag; checks that no key has a second version or a delete marker."""
    from pipelines.io.s3 import s3_client

    s3 = s3_client(settings)
    objects: dict[str, str] = {}
    versions: Counter[str] = Counter()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=settings.bucket):
        objects.update({o["Key"]: o["ETag"] for o in page.get("Contents", [])})
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=settings.bucket):
        versions.update(v["Key"] for v in page.get("Versions", []))
        assert not page.get("DeleteMarkers"), f"delete markers in {settings.bucket}: {page['DeleteMarkers'][:3]}"
    assert {k for k, n in versions.items() if n > 1} == set(), "an archived key was written twice"
    assert set(versions) == set(objects)
    return objects


def check_deployment(settings: Settings, produced: Produced, tmp_path: Path) -> tuple[Snapshot, dict[str, list[int]]]:
    """Every check of one ingest run; returns the snapshot and each log's checkpoint sizes."""
    from pipelines.io.archive import S3Archive
    from transforms.blocks import verify_chain
    from transforms.checkpoint import open_checkpoint
    from transforms.merkle import leaf_hash
    from transforms.note import Verifier
    from transforms.tlogproof import verify_proof

    verifier = Verifier.from_key(settings.verifier_key_file.read_text())

    # The archive: chained blocks holding each partition's first occurrences, signed heads, no PII.
    archive = S3Archive.from_settings(settings)
    assert archive.list_logs() == sorted(produced.logs)
    archived_heads: dict[str, tuple[int, bytes]] = {}
    checkpoint_sizes: dict[str, list[int]] = {}
    entries_of: dict[str, list[bytes]] = {}
    needles = re.compile(b"|".join(re.escape(n.encode()) for n in produced.pii))
    for log_id, leaves in produced.logs.items():
        indexes = archive.list_blocks(log_id)
        assert indexes == list(range(len(indexes))) and indexes, f"{log_id}: blocks {indexes}"
        blocks = []
        entries: list[bytes] = []
        for index in indexes:
            header, block_entries = archive.read_block(log_id, index)  # entries from the log's bundles
            data = archive.get_block(log_id, index) + b"\n".join(block_entries)
            leaked = needles.findall(data) + PII_PATTERN.findall(data)
            assert not leaked, f"{log_id} block {index} holds plaintext PII: {leaked[:5]}"
            assert (header.log_id, header.block_index) == (log_id, index)
            blocks.append((header, [leaf_hash(e) for e in block_entries]))
            entries.extend(block_entries)
        tree = verify_chain(blocks)
        ids = [(e["tenant_id"], e["event_id"]) for e in map(json.loads, entries)]
        assert ids == leaves, f"{log_id}: leaves are not the partition's first occurrences in order"
        sizes = archive.list_checkpoints(log_id)
        assert sizes == [header.tree_size for header, _ in blocks], f"{log_id}: one checkpoint per block"
        size, note = archive.latest_checkpoint(log_id) or (0, "")
        checkpoint = open_checkpoint(note, verifier, origin=f"{settings.origin}/{log_id}")
        assert (checkpoint.size, checkpoint.root) == (size, tree.root()) == (len(leaves), blocks[-1][0].tree_root)
        archived_heads[log_id] = (checkpoint.size, checkpoint.root)
        checkpoint_sizes[log_id] = sizes
        entries_of[log_id] = entries

    # ClickHouse: every distinct valid event once, heads equal to the signed ones, no PII, proofs.
    rng = random.Random(produced.topic)
    samples = sorted(rng.sample(sorted(produced.events), PROOF_SAMPLES))
    facts = clickhouse_facts(settings, samples, produced.pii)
    assert facts["counts"]["audit_logs"] == facts["unique"] == len(produced.events)
    assert sorted(map(tuple, facts["events"])) == sorted(produced.events)
    assert facts["counts"]["audit_leaves"] == len(produced.events)
    assert (
        facts["counts"]["audit_blocks"]
        == facts["counts"]["audit_checkpoints"]
        == sum(len(s) for s in checkpoint_sizes.values())
    )
    assert {k: (size, bytes.fromhex(root)) for k, (size, root) in facts["heads"].items()} == archived_heads
    assert facts["pii_rows"] == 0, f"{facts['pii_rows']} ClickHouse rows hold plaintext PII in `canonical`"
    for proof in facts["proofs"]:
        canonical = base64.b64decode(proof["canonical_b64"])
        assert proof["occurrences"] == 1
        leaf = (proof["tenant_id"], proof["event_id"])
        assert proof["leaf_index"] == produced.logs[proof["log_id"]].index(leaf)
        assert entries_of[proof["log_id"]][proof["leaf_index"]] == canonical
        verify_proof(proof["proof"], verifier, entry=canonical, origin=f"{settings.origin}/{proof['log_id']}")

    # One bundle through the offline verifier, as an auditor would check it; then tampered.
    bundle = tmp_path / "bundle"
    bundle.mkdir(exist_ok=True)
    first = facts["proofs"][0]
    (bundle / "entry.json").write_bytes(base64.b64decode(first["canonical_b64"]))
    (bundle / "proof.tlog-proof").write_text(first["proof"])
    key = str(settings.verifier_key_file)
    checked = subprocess.run(
        [auditlog_command(), "verify-proof", str(bundle), "--key", key],
        env=cli_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, f"verify-proof: {checked.stdout}{checked.stderr}"
    tampered = tmp_path / "tampered.json"
    tampered.write_bytes(base64.b64decode(first["canonical_b64"]).replace(b'"SUCCESS"', b'"FAILURE"', 1) + b" ")
    refused = subprocess.run(
        [auditlog_command(), "verify-proof", str(bundle), "--key", key, "--entry", str(tampered)],
        env=cli_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 1, f"a tampered entry verified: {refused.stdout}{refused.stderr}"

    # The DLQ: every malformed record, whole, once, with where it was and why it was refused.
    letters = dead_letters(settings)
    placed = Counter((d["source"]["partition"], d["source"]["offset"]) for d in letters)
    assert {k for k, n in placed.items() if n > 1} == set(), "a malformed record was dead-lettered twice"
    assert set(placed) == set(produced.malformed)
    for letter in letters:
        key_bytes, value = produced.malformed[(letter["source"]["partition"], letter["source"]["offset"])]
        assert letter["source"]["topic"] == produced.topic
        assert base64.b64decode(letter["value_b64"]) == value
        assert base64.b64decode(letter["key_b64"]) == key_bytes
        assert isinstance(letter["reason"], str) and letter["reason"].strip(), letter
        assert letter["field"], letter

    return Snapshot(s3_objects(settings), facts["counts"], facts["heads"]), checkpoint_sizes


def dead_letters(settings: Settings) -> list[dict[str, Any]]:
    """The committed dead letters of the deployment's DLQ topic (created with one partition)."""
    return [json.loads(value) for _, _, _, value in read_topic(settings, settings.dlq_topic, 1)]


def indexed_line(run: IngestRun) -> tuple[int, int]:
    found = re.search(r"indexed into ClickHouse: (\d+) blocks, (\d+) events", run.output)
    assert found, run.output[-4000:]
    return int(found.group(1)), int(found.group(2))


# --------------------------------------------------------------------------- the tests


@pytest.mark.timeout(1200)
def test_bounded_ingest_on_a_local_mini_cluster_end_to_end_and_rerun_changes_nothing(
    stack: Any, stack_settings: Settings, tmp_path: Path
) -> None:
    settings = deployment(stack_settings, tmp_path, "local")
    topic = f"e2e.local-{uuid.uuid4().hex[:8]}"
    produced = produce(settings, topic, LOCAL_RECORDS, seed=101)

    first = ingest(settings, topic)
    print("\n" + first.report("local mini-cluster, first run", produced.records))
    snapshot, sizes = check_deployment(settings, produced, tmp_path)
    assert indexed_line(first) == (sum(len(s) for s in sizes.values()), len(produced.events))

    again = ingest(settings, topic)
    print(again.report("local mini-cluster, re-run", produced.records))
    assert indexed_line(again) == (0, 0)
    assert s3_objects(settings) == snapshot.objects
    facts = clickhouse_facts(settings, [], [])
    assert (facts["counts"], facts["heads"]) == (snapshot.counts, snapshot.heads)
    # A re-run is a new job reading from the earliest offsets: it dead-letters the same records
    # again (consumers of the DLQ dedupe by source partition and offset), and no others.
    sources = {(d["source"]["partition"], d["source"]["offset"]) for d in dead_letters(settings)}
    assert sources == set(produced.malformed)


@pytest.mark.timeout(1200)
def test_the_same_job_on_the_standalone_cluster_end_to_end_with_its_metrics_in_the_rest_api(
    stack: Any, stack_settings: Settings, tmp_path: Path
) -> None:
    settings = deployment(stack_settings, tmp_path, "cluster")
    topic = f"e2e.cluster-{uuid.uuid4().hex[:8]}"
    produced = produce(settings, topic, CLUSTER_RECORDS, seed=202)
    job_name = f"auditlog ingest {topic}"

    running = Ingest(settings, topic, "--cluster", settings.flink_rest)
    observed = watch_custom_metrics(settings.flink_rest, job_name, running)
    run = running.wait()
    print("\n" + run.report("standalone cluster", produced.records))

    assert run.job_id and observed.job_id == run.job_id
    # `flink run` returns on the job's result; the REST view of the job can lag a moment behind.
    deadline = time.monotonic() + 30
    job = rest(settings.flink_rest, f"/jobs/{run.job_id}")
    while job["state"] not in ("FINISHED", "FAILED", "CANCELED") and time.monotonic() < deadline:
        time.sleep(0.5)
        job = rest(settings.flink_rest, f"/jobs/{run.job_id}")
    assert job["state"] == "FINISHED"
    print(
        f"standalone cluster: REST job duration {job['duration'] / 1000:.1f} s, "
        f"{len(observed.snapshots)} metric snapshots"
    )
    _, sizes = check_deployment(settings, produced, tmp_path)
    assert indexed_line(run) == (sum(len(s) for s in sizes.values()), len(produced.events))
    check_custom_metrics(observed, produced, sizes, settings.job_parallelism(local=False))


# --------------------------------------------------------------------------- Flink REST metrics


@dataclass
class Observed:
    job_id: str | None = None
    names: set[str] = field(default_factory=set)
    snapshots: list[dict[str, float]] = field(default_factory=list)


_CUSTOM = re.compile(r"\.(?:" + "|".join(CUSTOM_COUNTERS) + r"|log\..+\.tree_size)$")


def rest(base: str, path: str) -> Any:
    with urllib.request.urlopen(f"{base}{path}", timeout=10) as response:
        return json.load(response)


def watch_custom_metrics(base: str, job_name: str, running: Ingest) -> Observed:
    """Polls the job's vertices for the custom metrics while the CLI runs; keeps each new snapshot."""
    observed = Observed()
    while running.running():
        try:
            poll_metrics(base, job_name, observed)
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            pass  # the job is between states (not yet listed, vertices not yet deployed)
        time.sleep(0.5)
    return observed


def poll_metrics(base: str, job_name: str, observed: Observed) -> None:
    if observed.job_id is None:
        jobs = [j for j in rest(base, "/jobs/overview")["jobs"] if j["name"] == job_name]
        if not jobs:
            return
        observed.job_id = jobs[0]["jid"]
    job = rest(base, f"/jobs/{observed.job_id}")
    if job["state"] != "RUNNING":
        return
    values: dict[str, float] = {}
    for vertex in job["vertices"]:
        path = f"/jobs/{observed.job_id}/vertices/{vertex['id']}/metrics"
        names = [m["id"] for m in rest(base, path) if _CUSTOM.search(m["id"])]
        if names:
            observed.names.update(names)
            got = rest(base, f"{path}?get={','.join(names)}")
            values.update({m["id"]: float(m["value"]) for m in got})
    if values and (not observed.snapshots or observed.snapshots[-1] != values):
        observed.snapshots.append(values)


def check_custom_metrics(
    observed: Observed, produced: Produced, checkpoint_sizes: dict[str, list[int]], parallelism: int
) -> None:
    """Every counter on every subtask and a tree size per log were seen, with values the run allows."""
    assert observed.snapshots, (
        "the custom metrics never showed in the REST API while the job ran "
        f"(names seen: {sorted(observed.names)}); the job may have ended before a metrics fetch"
    )
    print("custom metric names:", *sorted(observed.names), sep="\n  ")
    for subtask in range(parallelism):
        for counter in CUSTOM_COUNTERS:
            assert any(re.fullmatch(rf"{subtask}\..+\.{counter}", n) for n in observed.names), (subtask, counter)
    sanitized = {re.sub(r"[^A-Za-z0-9_-]", "_", log_id): log_id for log_id in produced.logs}
    tree_logs = {m.group(1) for n in observed.names if (m := re.search(r"\.log\.(.+)\.tree_size$", n))}
    assert tree_logs == set(sanitized), f"tree_size gauges for {sorted(tree_logs)}, logs {sorted(sanitized)}"

    limits = {
        "events_accepted": len(produced.events),
        "duplicates_dropped": produced.duplicates,
        "dead_letters": len(produced.malformed),
        "blocks_sealed": sum(len(s) for s in checkpoint_sizes.values()),
        "erased_subject_events": 0,  # nobody in this run was erased
    }
    previous: dict[str, float] = {}
    for snapshot in observed.snapshots:
        for counter, limit in limits.items():
            total = sum(v for n, v in snapshot.items() if n.endswith(f".{counter}"))
            assert 0 <= total <= limit, f"{counter} = {total}, but the run has {limit}"
        for name, value in snapshot.items():
            assert value >= previous.get(name, 0), f"{name} went down: {previous[name]} -> {value}"
            match = re.search(r"\.log\.(.+)\.tree_size$", name)
            if match:
                # A log's tree grows block by block, so it is always a signed checkpoint's size.
                assert value in {0, *checkpoint_sizes[sanitized[match.group(1)]]}, (name, value)
        previous.update(snapshot)
    last = observed.snapshots[-1]
    print("last metric snapshot:", json.dumps(last, indent=1, sort_keys=True))


if __name__ == "__main__" and sys.argv[1:] == ["--clickhouse-facts"]:
    _child_main()
