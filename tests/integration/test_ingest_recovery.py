"""Recovery of the ingest job on the real stack: crashed TaskManagers and an S3 outage change nothing.

Each test writes a topic of four partitions (duplicates and malformed records included), runs
`auditlog ingest --bounded` as a subprocess while breaking something underneath it, and then
compares everything the job wrote with an uninterrupted run computed in this process by
`LogSequencer` over the exact topic contents (bytewax's test_recovery.py; docs/design.md §6):

- the S3 archive holds exactly the reference's block, checkpoint and resume objects, byte for byte,
  each key with exactly one object version (a replay re-put identical bytes and wrote nothing);
- every log's blocks chain from genesis (`verify_chain`: no gap, no fork) and every block's
  signed checkpoint opens with the deployment's key and names the block's tree head;
- ClickHouse holds each distinct valid event exactly once (rows, leaves and blocks);
- the DLQ topic, read_committed, holds each malformed record's dead letter exactly once.

The crash test SIGKILLs a TaskManager of the standalone cluster KILLS times and restarts it through
`Stack.up`; the job must fail over at least once per kill and finish. The kills land by position
in the input, not by time: kill k waits until the archive holds a seeded random number of blocks
in the k-th of KILLS equal slots of KILL_SPAN of the expected blocks (and more than at the last
kill), then holds the job's reading back (`FetchGate`: a Kafka fetch quota) until a checkpoint has
completed since the last recovery (so every recovery restores state), and only then kills; reading
resumes as the job restarts. A kill lands at its point or past it by what the job had fetched before
the gate closed (several MB), however long the recovery and the checkpoint take, so the job cannot
run on to the end meanwhile.

The outage test stops SeaweedFS for OUTAGE_S seconds under a local mini-cluster run once OUTAGE_AT
of the blocks are archived, and starts it again; the archive writer must have waited (its PUT
retries are in the job's log) and the job must never have failed over::

    .venv/bin/python -m pytest -m integration tests/integration/test_ingest_recovery.py -s

Set AUDITLOG_RECOVERY_SEED to replay a run's kill points (each run prints its seed). ClickHouse
is read in a child process: chDB hosts one data directory per process.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from infra.stack import Stack
from pipelines.ingest_config import archive_spec, job_config
from pipelines.ingest_core import LogCursor, LogSequencer, MemoryDedupe, SourceRecord
from pipelines.io.archive import checkpoint_key, ensure_bucket, open_archive, parse_key
from pipelines.io.archive.testing import InMemoryArchive
from pipelines.io.kafka import kafka_client_config
from pipelines.io.s3 import s3_client
from runners.deployment import with_master_key
from schemas.settings import REPO_ROOT, Settings
from tests.synthetic import block_entries
from transforms.blocks import verify_chain
from transforms.checkpoint import open_checkpoint
from transforms.merkle import leaf_hash
from transforms.note import Signer, Verifier
from transforms.pii import SubjectKeys

pytestmark = pytest.mark.integration

PARTITIONS = 4
# ~75 MB. A kill lands past its point by what the job holds in flight when the gate closes (its
# Kafka fetches of up to 1 MB a partition, the buffers behind them, and what it reads while the
# quota is being set: 40-120 blocks on a busy 2-core machine), and the next kill waits for progress
# past it, so the input must outlast KILLS times that. With 100,000 records (~390 blocks) a run
# whose kills overshot by 57, 106, 120 and 55 blocks put its last kill after the last block.
RECORDS = 150_000
TENANTS = 16  # murmur2 spreads them over all four partitions
DUPLICATE_FRACTION = 0.03
MALFORMED_FRACTION = 0.01
BLOCK_SIZE = 250  # ~590 blocks, so kill points fall between and inside many of them
CHECKPOINT_INTERVAL_MS = 1000  # a checkpoint soon after each recovery, while the gate holds the job
KILLS = 4
KILL_SPAN = (0.05, 0.4)  # the kill points, as fractions of the expected blocks archived
OUTAGE_AT = 0.25  # S3 goes down once this fraction of the blocks is archived
OUTAGE_S = 30.0
JOB_TIMEOUT_S = 1500.0  # the crash run takes ~5 min on a busy 2-core machine (the recoveries, mostly)
POLL_S = 0.5
PUT_RETRY = re.compile(r"S3 PUT \S+ failed .*; retry \d+ in")


# --------------------------------------------------------------------------- the deployment


def deployment(stack: Stack, name: str) -> Settings:
    """The stack's settings with this test's own topics, bucket, chDB directory and job knobs."""
    base = stack.settings
    return base.replace(
        topic=f"recovery.{name}",
        dlq_topic=f"recovery.{name}.dlq",
        bucket=f"auditlog-recovery-{name}",
        clickhouse_url=f"chdb://{base.home / f'chdb-recovery-{name}'}",
        block_size=BLOCK_SIZE,
        checkpoint_interval_ms=CHECKPOINT_INTERVAL_MS,
        parallelism=2,
    )


def kill_seed() -> int:
    seed = os.environ.get("AUDITLOG_RECOVERY_SEED")
    return int(seed) if seed else random.SystemRandom().randrange(2**32)


def produce(settings: Settings, seed: int) -> int:
    """Creates the topic (PARTITIONS partitions), its DLQ topic and bucket; writes RECORDS records."""
    from confluent_kafka.admin import AdminClient, NewTopic

    from runners.commands.produce import generate_records, produce_records
    from schemas.samples import start_of_today

    admin = AdminClient(kafka_client_config(settings))
    futures = admin.create_topics(
        [
            NewTopic(settings.topic, num_partitions=PARTITIONS, replication_factor=1),
            NewTopic(settings.dlq_topic, num_partitions=1, replication_factor=1),
        ]
    )
    for future in futures.values():
        future.result(30)
    deadline = time.monotonic() + 30  # created is not yet in every metadata answer
    while not {settings.topic, settings.dlq_topic} <= set(admin.list_topics(timeout=10).topics):
        assert time.monotonic() < deadline, f"topics {settings.topic}, {settings.dlq_topic} did not appear"
        time.sleep(0.2)
    ensure_bucket(s3_client(settings), settings.bucket)
    records = generate_records(
        RECORDS, TENANTS, DUPLICATE_FRACTION, MALFORMED_FRACTION, seed=seed, start=start_of_today()
    )
    summary = produce_records(settings, records, topic=settings.topic, progress=False)
    assert summary.sent == RECORDS and summary.duplicates and summary.malformed, summary.line()
    return summary.sent


def read_topic(settings: Settings, topic: str) -> dict[int, list[SourceRecord]]:
    """Every committed record of every partition of `topic`, in offset order, read to the end."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        kafka_client_config(
            settings,
            **{
                "group.id": f"recovery-check-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
            },
        )
    )
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        records: dict[int, list[SourceRecord]] = {p: [] for p in partitions}
        at_end: set[int] = set()
        deadline = time.monotonic() + 120
        while len(at_end) < len(partitions):
            assert time.monotonic() < deadline, (
                f"{topic}: partitions {set(partitions) - at_end} never reached their end"
            )
            message = consumer.poll(1.0)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                assert error.code() == KafkaError._PARTITION_EOF, f"reading {topic}: {error.str()}"
                at_end.add(message.partition())
                continue
            _, timestamp_ms = message.timestamp()
            records[message.partition()].append(
                SourceRecord(message.partition(), message.offset(), timestamp_ms, message.key(), message.value())
            )
        return records
    finally:
        consumer.close()


# --------------------------------------------------------------------------- the reference run


@dataclass
class Reference:
    """What an uninterrupted run makes of the topic: archive objects, dead letters, event count."""

    objects: dict[str, bytes]  # archive key -> bytes
    dead_letters: list[bytes]  # each malformed record's dead letter, as the DLQ topic carries it
    valid_events: int  # distinct valid events, i.e. leaves over all logs
    blocks: int


class JobKeys:
    """The job's key store, read only: a subject the job gave no keys fails the test, never gets new ones."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def get_or_create(self, tenant_id: str, subject_id: str) -> SubjectKeys:
        keys = self.store.get(tenant_id, subject_id)
        assert keys is not None, f"the job left subject {tenant_id}/{subject_id} without keys"
        return keys  # type: ignore[no-any-return]


class ThrowawayKeys:
    """Keys for sizing the run before the job made the real ones (block boundaries do not depend on keys)."""

    def get_or_create(self, tenant_id: str, subject_id: str) -> SubjectKeys:
        from pipelines.io.keystore import derive_subject_keys

        return derive_subject_keys(b"sizing only", tenant_id, subject_id)


def reference(settings: Settings, partitions: dict[int, list[SourceRecord]], keys: Any, signer: Signer) -> Reference:
    """Runs LogSequencer over each partition in offset order and seals the open block at the end."""
    options = job_config(settings, topic=settings.topic).options
    sequencer = LogSequencer(options, keys, signer)
    archive = InMemoryArchive()  # what the job's writer puts, by the writer's own code: tiles, blocks, checkpoints
    letters: list[bytes] = []
    blocks = 0
    for partition, records in sorted(partitions.items()):
        cursor, dedupe = LogCursor(options.log_id(partition)), MemoryDedupe()
        outputs = [output for record in records for output in sequencer.step(cursor, dedupe, record)]
        last = sequencer.seal(cursor)  # what the end-of-input timer does
        outputs += [("block", last)] if last else []
        for kind, item in outputs:
            if kind == "dlq":
                letters.append(item.to_json())
            else:
                archive.put_sealed_block(item)  # with its resume point when a record closed the block
                blocks += 1
    objects = {key: archive.get(key) for key in archive.keys("logs/")}
    return Reference(objects, sorted(letters), sequencer.counters.accepted, blocks)


def sizing(settings: Settings, partitions: dict[int, list[SourceRecord]]) -> Reference:
    return reference(settings, partitions, ThrowawayKeys(), Signer.generate(settings.origin))


def job_reference(settings: Settings, partitions: dict[int, list[SourceRecord]]) -> Reference:
    """The reference with the job's own signing key and subject keys, so the bytes must match."""
    from pipelines.io.keystore import open_keystore

    signer = Signer.from_key(settings.signer_key_file.read_text())
    with open_keystore(with_master_key(settings)) as store:
        return reference(settings, partitions, JobKeys(store), signer)


# --------------------------------------------------------------------------- the job


def cli_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, **settings.to_env()}


@dataclass
class IngestRun:
    """`auditlog ingest --bounded` running in a child process, its output in a file."""

    settings: Settings
    output: Path
    cluster: bool
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] = field(init=False)
    started: float = field(init=False)

    def __post_init__(self) -> None:
        command = [str(Path(sys.executable).with_name("auditlog")), "ingest", "--bounded", "--topic"]
        command.append(self.settings.topic)
        if self.cluster:
            command += ["--cluster", self.settings.flink_rest]
        self.started = time.monotonic()
        with open(self.output, "wb") as out:
            self.proc = subprocess.Popen(
                command,
                env={**cli_env(self.settings), **self.env},
                cwd=REPO_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # so that stop() also ends `flink run` or the local gateway JVM
            )

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"auditlog ingest did not finish within {timeout:.0f} s:\n{self.tail()}")

    def stop(self) -> None:
        """Ends the command and everything it started (a no-op once it has exited by itself)."""
        if not self.running():
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(30)
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def tail(self, chars: int = 6000) -> str:
        return self.text()[-chars:]

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


def archived_blocks(settings: Settings) -> int:
    """How many block objects the archive holds now (0 while S3 does not answer)."""
    try:
        pages = s3_client(settings).get_paginator("list_objects_v2").paginate(Bucket=settings.bucket, Prefix="logs/")
        return sum(1 for page in pages for item in page.get("Contents", []) if item["Key"].endswith(".block"))
    except Exception:  # noqa: BLE001 - S3 restarting: nothing to count yet
        return 0


def wait_until(what: str, condition: Callable[[], bool], run: IngestRun, timeout: float = JOB_TIMEOUT_S) -> None:
    """Polls `condition` while the job runs; fails with the job's output if it ends or times out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if not run.running():
            pytest.fail(f"auditlog ingest ended (exit {run.proc.returncode}) before {what}:\n{run.tail()}")
        if time.monotonic() > deadline:
            run.stop()
            pytest.fail(f"timed out after {timeout:.0f} s waiting until {what}:\n{run.tail()}")
        time.sleep(POLL_S)


def rest(settings: Settings, path: str) -> Any:
    with urllib.request.urlopen(f"{settings.flink_rest}{path}", timeout=10) as response:
        return json.load(response)


def find_job(settings: Settings, run: IngestRun) -> str:
    """The id of the cluster job this run submitted (named after its topic)."""
    name = f"auditlog ingest {settings.topic}"
    found: list[str] = []

    def submitted() -> bool:
        found[:] = [job["jid"] for job in rest(settings, "/jobs/overview")["jobs"] if job["name"] == name]
        return bool(found)

    wait_until(f"job {name!r} shows in /jobs/overview", submitted, run, timeout=600)
    assert len(found) == 1, f"more than one job named {name!r}: {found}"
    return found[0]


def leave_cluster_whole(stack: Stack, job_id: str) -> None:
    """After a failed test: cancels the job if it still runs and restarts a killed TaskManager."""
    with contextlib.suppress(OSError):  # the JobManager itself may be what broke
        if job_id and rest(stack.settings, f"/jobs/{job_id}")["state"] not in ("FINISHED", "FAILED", "CANCELED"):
            cancel = f"{stack.settings.flink_rest}/jobs/{job_id}?mode=cancel"
            urllib.request.urlopen(urllib.request.Request(cancel, method="PATCH"), timeout=10).close()
    stack.up(["flink"])


def restarted_since(settings: Settings, job_id: str, since_ms: int) -> bool:
    """True if the job entered RESTARTING after `since_ms` (epoch ms) and is RUNNING now."""
    try:
        job = rest(settings, f"/jobs/{job_id}")
    except OSError:  # the JobManager is busy restarting the job; ask again
        return False
    return job["state"] == "RUNNING" and int(job["timestamps"].get("RESTARTING", 0)) >= since_ms


class FetchGate:
    """Holds back what every Kafka consumer of the stack reads (the ingest job's source among them).

    Closed, the broker enforces a fetch quota (`consumer_byte_rate`) of a few bytes a second on
    every client, so fetches come back empty and the job soon has nothing to process: what it
    holds in flight drains and its checkpoints complete, but it does not get further through the
    input. Producers are not held back (the job's dead-letter writes, the test's own produce).

    A consumer that was throttled stays throttled for the (long) time the broker told it, even
    after the gate opens: open it before the job restarts, whose new consumers then read freely.
    """

    CLOSED_RATE = 16  # bytes/s: less than one record a second

    def __init__(self, settings: Settings) -> None:
        from infra.jars import jar_dirs
        from infra.service import java

        self.command = [java(), "-cp", jar_dirs(settings).kafka_classpath, "kafka.admin.ConfigCommand"]
        self.command += ["--bootstrap-server", settings.kafka_bootstrap, "--alter"]
        self.command += ["--entity-type", "clients", "--entity-default"]
        self.closed = False

    def _config(self, *change: str) -> None:
        done = subprocess.run([*self.command, *change], capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, f"kafka ConfigCommand {change} failed:\n{done.stdout}{done.stderr}"

    def close(self) -> None:
        self._config("--add-config", f"consumer_byte_rate={self.CLOSED_RATE}")
        self.closed = True

    def open(self) -> None:
        if self.closed:
            self._config("--delete-config", "consumer_byte_rate")
            self.closed = False


def kill_points(rng: random.Random, total: int) -> list[int]:
    """KILLS positions in [0, total): one at random in each of KILLS equal slots of KILL_SPAN of `total`."""
    low, high = KILL_SPAN
    width = (high - low) / KILLS
    return [round(total * rng.uniform(low + k * width, low + (k + 1) * width)) for k in range(KILLS)]


def completed_checkpoints(settings: Settings, job_id: str) -> int:
    try:
        return int(rest(settings, f"/jobs/{job_id}/checkpoints")["counts"]["completed"])
    except OSError:  # the JobManager is busy restarting the job; ask again
        return -1


def failure_cause(entry: dict[str, Any]) -> str:
    """A job failure from /jobs/<id>/exceptions in one short line: the exception and its root cause."""
    lines = [line.strip() for line in (entry.get("stacktrace") or entry["exceptionName"]).splitlines()]
    root = [line.removeprefix("Caused by: ") for line in lines if line.startswith("Caused by: ")]
    return lines[0][:160] + (f" <- {root[-1][:160]}" if root else "")


# --------------------------------------------------------------------------- the checks


def archive_versions(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """Every version and delete marker of every key in the test's bucket, by key."""
    # Through the archive's own listing: SeaweedFS's paged version listing alone skips keys (s3.py).
    archive = open_archive(**archive_spec(settings))
    return {
        key: [
            {"Key": v.key, "VersionId": v.version_id, **({"DeleteMarker": True} if v.is_delete_marker else {})}
            for v in found
        ]
        for key, found in archive.versions_under("logs/").items()
    }


def check_archive(settings: Settings, expected: Reference) -> dict[str, bytes]:
    """The archive equals the reference, each key written once; returns the archived objects."""
    versions = archive_versions(settings)
    rewritten = {key: len(found) for key, found in versions.items() if len(found) != 1 or "DeleteMarker" in found[0]}
    assert rewritten == {}, f"keys with more than one version or a delete marker: {rewritten}"
    # The witness publisher (beside the job) adds cosignatures, timed by the witness: not the job's output.
    versions = {key: found for key, found in versions.items() if parse_key(key) is not None or "/tile/" in key}
    missing = sorted(set(expected.objects) - set(versions))
    extra = sorted(set(versions) - set(expected.objects))
    assert (missing, extra) == ([], []), f"archive keys differ from the reference: missing {missing}, extra {extra}"
    s3 = s3_client(settings)
    archived = {
        key: s3.get_object(Bucket=settings.bucket, Key=key, VersionId=found[0]["VersionId"])["Body"].read()
        for key, found in versions.items()
    }
    differing = sorted(key for key, data in archived.items() if data != expected.objects[key])
    assert differing == [], f"{len(differing)} archived objects differ from the reference, first {differing[:5]}"
    return archived


def check_chains(settings: Settings, archived: dict[str, bytes]) -> dict[str, int]:
    """Each log's blocks chain from genesis and each block's checkpoint verifies; returns tree sizes."""
    verifier = Verifier.from_key(settings.verifier_key_file.read_text())
    logs: dict[str, list[str]] = {}
    for key in archived:
        _, log_id, kind = key.split("/")[:3]
        logs.setdefault(log_id, [])
        if kind == "blocks":
            logs[log_id].append(key)
    sizes = {}
    for log_id, keys in sorted(logs.items()):
        chain = []
        for key in sorted(keys):
            header, entries = block_entries(archived, key)
            chain.append((header, [leaf_hash(entry) for entry in entries]))
        tree = verify_chain(chain)  # raises at a gap, a fork or a wrong root
        checkpoints = {checkpoint_key(log_id, header.tree_size) for header, _ in chain}
        assert {k for k in archived if k.startswith(f"logs/{log_id}/checkpoints/")} == checkpoints
        for header, _ in chain:
            note = archived[checkpoint_key(log_id, header.tree_size)]
            checkpoint = open_checkpoint(note, verifier, origin=f"{settings.origin}/{log_id}")
            assert (checkpoint.size, checkpoint.root) == (header.tree_size, header.tree_root)
        sizes[log_id] = tree.size
    return sizes


def clickhouse_counts(settings: Settings) -> dict[str, int]:
    """Row counts of the test's chDB directory, read in a child process (this file as a script)."""
    child = subprocess.run(
        [sys.executable, __file__, settings.effective_clickhouse_url, f"{settings.topic}.p"],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert child.returncode == 0, f"reading ClickHouse failed:\n{child.stdout}\n{child.stderr}"
    return json.loads(child.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _child_main(url: str, log_prefix: str) -> None:
    from pipelines.io.clickhouse import open_clickhouse

    ch = open_clickhouse(url)
    queries = {
        "rows": "SELECT count() FROM auditlog.audit_logs",
        "distinct_events": "SELECT uniqExact(tenant_id, event_id) FROM auditlog.audit_logs",
        "leaves": "SELECT count() FROM auditlog.audit_leaves",
        "distinct_leaves": "SELECT uniqExact(log_id, leaf_index) FROM auditlog.audit_leaves",
        "blocks": "SELECT count() FROM auditlog.audit_blocks",
    }
    where = " WHERE startsWith(log_id, {prefix:String})"
    counts = {name: ch.query(sql + where, {"prefix": log_prefix})[0][0] for name, sql in queries.items()}
    ch.close()
    print(json.dumps({k: int(v) for k, v in counts.items()}))


def check_dead_letters(settings: Settings, expected: Reference) -> int:
    """The DLQ topic (read_committed) holds each reference dead letter exactly once, and nothing else."""
    letters = sorted(
        record.value for records in read_topic(settings, settings.dlq_topic).values() for record in records
    )
    placed = Counter((letter["source"]["partition"], letter["source"]["offset"]) for letter in map(json.loads, letters))
    assert {where: n for where, n in placed.items() if n > 1} == {}, "malformed records dead-lettered more than once"
    assert len(letters) == len(expected.dead_letters)
    assert letters == expected.dead_letters
    return len(letters)


def check_everything(settings: Settings, partitions: dict[int, list[SourceRecord]], run: IngestRun) -> str:
    """All the checks against the job-keyed reference; returns a one-line summary.

    The reference reads the topic again: `auditlog ingest --bounded` wrote a cut marker into each
    partition before it started, which closed each log's last block (and gave it a resume point).
    """
    partitions = read_topic(settings, settings.topic)
    expected = job_reference(settings, partitions)
    archived = check_archive(settings, expected)
    sizes = check_chains(settings, archived)
    assert sum(sizes.values()) == expected.valid_events
    counts = clickhouse_counts(settings)
    assert counts == {
        "rows": expected.valid_events,
        "distinct_events": expected.valid_events,
        "leaves": expected.valid_events,
        "distinct_leaves": expected.valid_events,
        "blocks": expected.blocks,
    }, f"ClickHouse {counts}; the reference has {expected.valid_events} events in {expected.blocks} blocks"
    assert f"indexed into ClickHouse: {expected.blocks} blocks, {expected.valid_events} events" in run.text()
    dead = check_dead_letters(settings, expected)
    return (
        f"{len(archived)} archive objects identical to the reference, one version each; "
        f"{len(sizes)} logs chain ({sum(sizes.values())} leaves); ClickHouse {counts['rows']} rows; "
        f"DLQ {dead} letters, each once"
    )


# --------------------------------------------------------------------------- the tests


@dataclass(frozen=True)
class Kill:
    at_s: float
    taskmanager: str
    pid: int
    point: int  # the archived blocks the kill waited for
    blocks_archived: int  # when it came
    checkpoints_completed: int


@pytest.mark.timeout(JOB_TIMEOUT_S + 900)
def test_killing_taskmanagers_mid_run_leaves_exactly_the_uninterrupted_result(stack: Stack, tmp_path: Path) -> None:
    settings = deployment(stack, "crash")
    seed = kill_seed()
    rng = random.Random(seed)
    produce(settings, seed=seed % 1000)
    partitions = read_topic(settings, settings.topic)
    assert all(partitions.values()), f"a partition is empty: { {p: len(r) for p, r in partitions.items()} }"
    total_blocks = sizing(settings, partitions).blocks
    points = kill_points(rng, total_blocks)
    print(f"\ncrash test: seed {seed}, {total_blocks} blocks expected, kills after {points} archived blocks")
    gate = FetchGate(settings)

    run = IngestRun(settings, tmp_path / "ingest.out", cluster=True)
    kills: list[Kill] = []
    job_id = ""
    try:
        job_id = find_job(settings, run)
        recovered_at_checkpoints = 0  # completed checkpoints once the job ran again after the last kill
        for point in points:
            # The archive counts the furthest the job ever got: new blocks mean progress past the last kill.
            point = max(point, kills[-1].blocks_archived + 1 if kills else 0)
            wait_until(f"{point} blocks are archived", lambda p=point: archived_blocks(settings) >= p, run)
            gate.close()
            # A checkpoint taken since the last recovery, so the next recovery restores fresh state;
            # it also means every task is running, so the kill interrupts a running job.
            wait_until(
                "a checkpoint completes after the last recovery",
                lambda c=recovered_at_checkpoints: completed_checkpoints(settings, job_id) > c,
                run,
            )
            running = [row for row in stack.status(["flink"]) if row.name.startswith("flink-taskmanager") and row.pid]
            victim = rng.choice(running)
            assert victim.pid is not None
            blocks_now, checkpoints_now = archived_blocks(settings), completed_checkpoints(settings, job_id)
            killed_at_ms = int(time.time() * 1000)
            os.killpg(victim.pid, signal.SIGKILL)  # the TaskManager and anything it started
            gate.open()  # before the job restarts: its new consumers must not start throttled
            kills.append(Kill(run.elapsed, victim.name, victim.pid, point, blocks_now, checkpoints_now))
            print(f"  kill {len(kills)} at {blocks_now / total_blocks:.0%} of the blocks: {kills[-1]}")
            wait_until(
                f"{victim.name} is gone",
                lambda name=victim.name: all(r.pid is None for r in stack.status(["flink"]) if r.name == name),
                run,
                timeout=60,
            )
            stack.up(["flink"])  # starts the missing TaskManager only
            wait_until(
                f"the job failed over after kill {len(kills)} and runs again",
                lambda t=killed_at_ms: restarted_since(settings, job_id, t),
                run,
            )
            recovered_at_checkpoints = completed_checkpoints(settings, job_id)
            print(f"    running again at {run.elapsed:.0f} s")
        rc = run.wait(JOB_TIMEOUT_S)
    finally:
        gate.open()
        run.stop()
        leave_cluster_whole(stack, job_id)
    assert rc == 0, f"auditlog ingest failed (exit {rc}):\n{run.tail()}"
    assert len(kills) == KILLS
    # Each kill came at (or a little past) its point, further on than the last, with input left to read.
    assert all(kill.point <= kill.blocks_archived < total_blocks for kill in kills), kills
    print(f"  kills landed after {[k.blocks_archived for k in kills]} of {total_blocks} blocks (points {points})")

    job = rest(settings, f"/jobs/{job_id}")
    counts = rest(settings, f"/jobs/{job_id}/checkpoints")["counts"]
    # One entry per failover, each followed by a restart since the job finished; the JobManager
    # keeps the last 16 (web.exception-history-size). Each restart after the first checkpoint
    # restores one, so counts["restored"] counts them all. The numRestarts metric is no help:
    # the REST API's copy of the metrics is refreshed every 10 s and is stale once the job ends.
    history = rest(settings, f"/jobs/{job_id}/exceptions?maxExceptions=1000")["exceptionHistory"]["entries"]
    causes = Counter(failure_cause(entry) for entry in history)
    print(
        f"  job {job_id} {job['state']} in {job['duration'] / 1000:.0f} s ({run.elapsed:.0f} s with submission "
        f"and indexing); {counts['restored']} restarts from a checkpoint; checkpoints {counts}; failures:"
    )
    for cause, n in causes.most_common():
        print(f"    {n} x {cause}")
    assert job["state"] == "FINISHED"
    assert counts["restored"] >= KILLS, "each recovery must have restored a checkpoint"

    print("  " + check_everything(settings, partitions, run))


@pytest.mark.timeout(JOB_TIMEOUT_S + 900)
def test_an_s3_outage_mid_run_stalls_the_job_and_loses_nothing(stack: Stack, tmp_path: Path) -> None:
    settings = deployment(stack, "outage")
    produce(settings, seed=202)
    partitions = read_topic(settings, settings.topic)
    total_blocks = sizing(settings, partitions).blocks
    outage_at = max(1, round(OUTAGE_AT * total_blocks))

    # The local mini-cluster's log (JobManager, TaskManager and the job's Python logging) goes here
    # rather than into the shared pyflink/log of the installed package.
    flink_log = tmp_path / "flink-log"
    flink_log.mkdir()
    run = IngestRun(settings, tmp_path / "ingest.out", cluster=False, env={"FLINK_LOG_DIR": str(flink_log)})
    try:
        wait_until(f"{outage_at} blocks are archived", lambda: archived_blocks(settings) >= outage_at, run)
        before = archived_blocks(settings)
        stack.down(["s3"])
        down_at = run.elapsed
        try:
            deadline = time.monotonic() + OUTAGE_S
            while time.monotonic() < deadline:
                assert run.running(), f"the job gave up during the S3 outage:\n{run.tail()}"
                time.sleep(POLL_S)
        finally:
            stack.up(["s3"])
        up_at = run.elapsed
        rc = run.wait(JOB_TIMEOUT_S)
    finally:
        run.stop()
    # The archive writer's own log lines (pipelines/io/archive.py): it waited, it did not fail.
    job_log = "".join(path.read_text(errors="replace") for path in sorted(flink_log.glob("*.log")))
    put_retries = [line for line in job_log.splitlines() if PUT_RETRY.search(line)]
    restarts = [line for line in job_log.splitlines() if "switched from state RUNNING to RESTARTING" in line]
    print(
        f"\noutage test: {total_blocks} blocks expected; S3 down at {down_at:.0f} s with {before} blocks archived, "
        f"up at {up_at:.0f} s; job done at {run.elapsed:.0f} s; {len(put_retries)} PUT retries, the last:"
    )
    print("\n".join(f"    {line.strip()[:240]}" for line in put_retries[-3:]))
    assert rc == 0, f"auditlog ingest failed (exit {rc}):\n{run.tail()}"
    assert before < total_blocks, "the job had finished before the outage began"
    assert put_retries, f"no archive PUT waited out the outage (see {flink_log})"
    assert restarts == [], "the job failed over instead of waiting for S3"

    print("  " + check_everything(settings, partitions, run))


if __name__ == "__main__":
    _child_main(sys.argv[1], sys.argv[2])
