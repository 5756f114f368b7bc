"""CI's replay of the committed recording: golden tree heads, both ways in, and idempotence.

    AUDITLOG_TEST_PORT_OFFSET=30000 .venv/bin/python -m pytest -m integration tests/integration/test_replay.py

Against the session's real stack (Kafka, SeaweedFS S3), with the ingest job on the local
mini-cluster, run through the real CLI:

1. `auditlog ingest --from-recording` (no broker) into a fresh home and bucket gives the golden
   heads — in the WORM archive and in ClickHouse — and the golden number of dead letters;
2. `auditlog replay` into a fresh topic named like the recorded one, then the Kafka path
   (`auditlog ingest --bounded`) into another fresh home and bucket, gives the same, and
   archives byte-identical blocks and checkpoints (same signing key);
3. replaying the recording a second time into that topic and ingesting again changes nothing:
   no archive object is added or re-versioned, ClickHouse holds the same heads and rows;
4. `auditlog record` and `auditlog replay` round-trip a topic exactly, `--max` stops early, and
   replays that would lose records (too few partitions, retention) are refused up front.

A mismatch fails naming the log and the first block whose root differs (tests/golden.py).
AUDITLOG_KEY_SEED is set from golden.json: every fresh key store derives the same PII keys.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from infra.stack import Stack
from pipelines.ingest_config import archive_spec
from pipelines.io.archive import ensure_bucket, open_archive
from pipelines.io.s3 import s3_client
from pipelines.recording import iter_records, read_info
from runners.commands.record import record_topic
from runners.commands.replay import replay_file, replay_records
from schemas.settings import REPO_ROOT, Settings
from tests.golden import (
    Golden,
    LogHead,
    assert_heads_match,
    clickhouse_heads,
    count_lines,
    create_topic,
    golden_env,
    heads_from_archive,
    run_cli,
)
from transforms.note import Verifier

pytestmark = pytest.mark.integration

INGEST_TIMEOUT_S = 1200  # the machine has two cores and other Flink jobs may share them


@dataclass
class Run:
    """One scenario: its own home (keys, key store, chDB) and bucket on the session stack."""

    settings: Settings
    env: dict[str, str]
    heads: dict[str, LogHead]
    dead_letters: int

    @property
    def archive(self) -> Any:
        return open_archive(**archive_spec(self.settings))

    def read_heads(self, golden: Golden) -> dict[str, LogHead]:
        verifier = Verifier.from_key(self.settings.verifier_key_file.read_text())
        return heads_from_archive(self.archive, golden.topic, verifier, self.settings.origin)


def _scenario(stack: Stack, golden: Golden, home: Path, name: str) -> tuple[Settings, dict[str, str]]:
    tag = uuid.uuid4().hex[:8]
    settings = stack.settings.replace(
        home=home,
        bucket=f"auditlog-it-{name}-{tag}",
        dlq_topic=f"it.replay.dlq.{name}.{tag}",
        key_seed=golden.key_seed,
        block_size=golden.block_size,
    )
    ensure_bucket(s3_client(settings), settings.bucket)
    return settings, golden_env(settings, AUDITLOG_KEY_SEED=golden.key_seed, AUDITLOG_BLOCK_SIZE=str(golden.block_size))


def _check_clickhouse(run: Run, golden: Golden, where: str) -> None:
    heads, events = clickhouse_heads(run.env, golden.topic)
    assert_heads_match(golden.logs, heads, f"{where} (ClickHouse)")
    assert events == sum(head.tree_size for head in golden.logs.values())


def _dead_letters_in_topic(settings: Settings, tmp_path: Path) -> int:
    """Counts the DLQ topic's committed records by recording it (transaction markers skipped)."""
    return record_topic(settings, settings.dlq_topic, tmp_path / "dlq.parquet", progress=False).info.records


def _archive_objects(archive: Any) -> dict[str, tuple[int, bytes]]:
    """Every block and checkpoint object: key → (number of versions, bytes)."""
    from pipelines.io.archive import block_key, checkpoint_key

    objects: dict[str, tuple[int, bytes]] = {}
    for log_id in archive.list_logs():
        keys = [block_key(log_id, i) for i in archive.list_blocks(log_id)]
        keys += [checkpoint_key(log_id, size) for size in archive.list_checkpoints(log_id)]
        for key in keys:
            objects[key] = (len(archive.object_versions(key)), archive.get(key))
    return objects


@pytest.fixture(scope="module")
def golden() -> Golden:
    loaded = Golden.load()
    loaded.check_recording()
    return loaded


@pytest.fixture(scope="module")
def from_recording(stack: Stack, golden: Golden, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """`auditlog ingest --from-recording` into a fresh home and bucket."""
    home = tmp_path_factory.mktemp("replay-from-recording")
    settings, env = _scenario(stack, golden, home, "file")
    dlq_file = home / "dead-letters.jsonl"
    run_cli(
        env,
        "ingest",
        "--from-recording",
        str(golden.recording_path),
        "--dlq-file",
        str(dlq_file),
        timeout=INGEST_TIMEOUT_S,
    )
    run = Run(settings, env, {}, count_lines(dlq_file))
    run.heads = run.read_heads(golden)
    return run


@pytest.fixture(scope="module")
def kafka_path(stack: Stack, golden: Golden, from_recording: Run, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """`auditlog replay` into a fresh topic, then `auditlog ingest --bounded` into a fresh home and bucket.

    The home starts with the recording run's signing key (nothing else), so its checkpoints can be
    compared byte for byte; its key store is new, with the same seed.
    """
    home = tmp_path_factory.mktemp("replay-kafka")
    shutil.copytree(from_recording.settings.keys_dir, home / "keys")
    (home / "keys" / "master.key").unlink()
    settings, env = _scenario(stack, golden, home, "kafka")
    create_topic(settings, golden.topic)  # logs are named after the topic: it must be the recorded one
    print(replay_file(settings, golden.recording_path, golden.topic, progress=False).line())
    run_cli(env, "ingest", "--bounded", "--topic", golden.topic, timeout=INGEST_TIMEOUT_S)
    tmp = tmp_path_factory.mktemp("replay-kafka-dlq")
    run = Run(settings, env, {}, _dead_letters_in_topic(settings, tmp))
    run.heads = run.read_heads(golden)
    return run


@pytest.mark.timeout(INGEST_TIMEOUT_S)
def test_ingest_from_recording_gives_the_golden_heads(from_recording: Run, golden: Golden) -> None:
    assert_heads_match(golden.logs, from_recording.heads, "ingest --from-recording (archive)")
    assert from_recording.dead_letters == golden.dead_letters
    _check_clickhouse(from_recording, golden, "ingest --from-recording")


@pytest.mark.timeout(2 * INGEST_TIMEOUT_S)
def test_replayed_topic_through_kafka_gives_the_golden_heads(kafka_path: Run, golden: Golden) -> None:
    assert_heads_match(golden.logs, kafka_path.heads, "replay + ingest from Kafka (archive)")
    assert kafka_path.dead_letters == golden.dead_letters
    _check_clickhouse(kafka_path, golden, "replay + ingest from Kafka")


@pytest.mark.timeout(2 * INGEST_TIMEOUT_S)
def test_the_kafka_path_and_the_recording_path_archive_identical_bytes(from_recording: Run, kafka_path: Run) -> None:
    from_file = _archive_objects(from_recording.archive)
    from_kafka = _archive_objects(kafka_path.archive)

    assert sorted(from_file) == sorted(from_kafka)
    different = [key for key in from_file if from_file[key][1] != from_kafka[key][1]]
    assert different == [], f"{len(different)} archive objects differ between the two paths, first {different[:3]}"
    assert any(key.endswith(".checkpoint") for key in from_file)


@pytest.mark.timeout(2 * INGEST_TIMEOUT_S)
def test_replaying_twice_into_the_same_stack_changes_nothing(kafka_path: Run, golden: Golden, tmp_path: Path) -> None:
    before = _archive_objects(kafka_path.archive)
    assert {versions for versions, _ in before.values()} == {1}

    # The topic now holds the recording twice (this time each record in its recorded partition);
    # the job reads it all again from the start, and every event of the second copy is a duplicate.
    print(replay_file(kafka_path.settings, golden.recording_path, golden.topic, preserve_partitions=True).line())
    run_cli(kafka_path.env, "ingest", "--bounded", "--topic", golden.topic, timeout=INGEST_TIMEOUT_S)

    after = _archive_objects(kafka_path.archive)
    assert sorted(after) == sorted(before), "the second replay added or removed archive objects"
    changed = [key for key in before if after[key] != before[key]]
    assert changed == [], f"re-written or re-versioned archive objects: {changed[:5]}"
    assert_heads_match(golden.logs, kafka_path.read_heads(golden), "the second replay (archive)")
    _check_clickhouse(kafka_path, golden, "the second replay")
    # Dead letters are records, not log state: the first run sent the recording's, the second
    # run read both copies of the topic and sent each copy's.
    assert _dead_letters_in_topic(kafka_path.settings, tmp_path) == 3 * golden.dead_letters


# --------------------------------------------------------------------------- record and replay themselves


def _auditlog(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runners.cli", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **settings.to_env()},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_record_and_replay_round_trip_a_topic_exactly(stack: Stack, golden: Golden, tmp_path: Path) -> None:
    settings = stack.settings
    tag = uuid.uuid4().hex[:8]
    source, copy = f"it.record.{tag}", f"it.record.copy.{tag}"
    create_topic(settings, source)
    create_topic(settings, copy)
    # The recording's first 3000 rows hold a prefix of every partition, so replayed into their
    # recorded partitions of a fresh topic they get their recorded offsets back.
    head = list(itertools.islice(iter_records(golden.recording_path), 3000))
    replay_records(settings, head, source, preserve_partitions=True, min_partitions=4, progress=False)

    recorded = tmp_path / "source.parquet"
    proc = _auditlog(settings, "record", "--topic", source, "--out", str(recorded), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert f"recorded 3000 records of {source} (4 partitions), to the end offsets seen at start" in proc.stdout
    info = read_info(recorded)
    assert (info.topic, info.partitions, info.records, info.complete) == (source, 4, 3000, True)
    per_partition = {p: sum(1 for r in head if r.partition == p) for p in range(4)}
    assert info.end_offsets == per_partition and info.start_offsets == dict.fromkeys(range(4), 0)
    by_position = sorted(head, key=lambda r: (r.partition, r.offset))
    assert sorted(iter_records(recorded), key=lambda r: (r.partition, r.offset)) == by_position

    proc = _auditlog(settings, "replay", str(recorded), "--topic", copy, "--quiet")
    assert proc.returncode == 0, proc.stderr
    again = tmp_path / "copy.parquet"
    assert _auditlog(settings, "record", "--topic", copy, "--out", str(again), "--quiet").returncode == 0
    assert sorted(iter_records(again), key=lambda r: (r.partition, r.offset)) == by_position

    first = tmp_path / "first.parquet"
    proc = _auditlog(settings, "record", "--topic", source, "--out", str(first), "--max", "500", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert (read_info(first).records, read_info(first).complete) == (500, False)
    for p in range(4):  # each partition's records are a gap-free prefix
        offsets = [r.offset for r in iter_records(first) if r.partition == p]
        assert offsets == list(range(len(offsets)))


def test_replays_that_would_lose_records_are_refused_before_writing(
    stack: Stack, golden: Golden, tmp_path: Path
) -> None:
    settings = stack.settings
    tag = uuid.uuid4().hex[:8]
    small, short_lived = f"it.replay.small.{tag}", f"it.replay.retention.{tag}"
    create_topic(settings, small, partitions=2)
    create_topic(settings, short_lived, keep_forever=False)  # the broker's default: 7 days

    proc = _auditlog(settings, "replay", str(golden.recording_path), "--topic", small, "--preserve-partitions")
    assert proc.returncode == 2
    assert f"topic {small!r} has 2 partitions and the recording 4" in proc.stderr

    proc = _auditlog(settings, "replay", str(golden.recording_path), "--topic", short_lived)
    assert proc.returncode == 2
    assert "deletes records older than retention.ms=604800000" in proc.stderr and "--timestamps now" in proc.stderr

    for topic in (small, short_lived):  # the refused replays wrote nothing
        copy = tmp_path / f"{topic}.parquet"
        assert _auditlog(settings, "record", "--topic", topic, "--out", str(copy), "--quiet").returncode == 0
        assert read_info(copy).records == 0
