"""The committed recording and its golden tree heads: how they are made, read and compared.

CI replays `tests/testdata/recording/audit-events.parquet` (a recording of a real topic, made
by `auditlog record`) through the ingest job and compares every log's heads with `golden.json`:
per log the final tree size and root, and for every block its root, the tree after it and its
header hash; plus the number of dead letters. Any change that alters a tree head fails with the
log and the first block that differs (docs/design.md §6).

    .venv/bin/python -m tests.golden show          # what the recording and the goldens hold
    .venv/bin/python -m tests.golden regenerate    # remake both (a temporary Kafka + S3 stack)

`regenerate` starts Kafka and S3 in a temporary AUDITLOG_HOME on the test ports
(AUDITLOG_TEST_PORT_OFFSET, default 10000), writes `source_records()` into a fresh topic with
`auditlog replay`'s producer, records the topic with `auditlog record`, runs the real job on it
(`auditlog ingest --from-recording`, AUDITLOG_KEY_SEED = KEY_SEED), reads the heads back from the
WORM archive, checks them against the pure core, and writes golden.json. Regenerate only when a
change is *meant* to alter the logs, and say why in the commit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from pipelines.ingest_core import (  # noqa: E402
    CUT_MARKER,
    IngestOptions,
    LogCursor,
    LogSequencer,
    MemoryDedupe,
    SourceRecord,
    service_sig,
)
from pipelines.recording import CREATE_TIME, RecordedRecord, iter_records, read_info  # noqa: E402
from transforms.blocks import BlockHeader, decode_block_object  # noqa: E402

TESTDATA = REPO_ROOT / "tests" / "testdata" / "recording"
RECORDING = TESTDATA / "audit-events.parquet"
GOLDEN = TESTDATA / "golden.json"
RETENTION_POLICY = TESTDATA / "retention.toml"  # the golden runs' policy, part of the heads' definition

TOPIC = "ci.audit.events"
"""The recorded topic; logs are named `ci.audit.events.p<partition>`. Not the default topic, so a
replay into a shared test stack touches nobody else's logs."""
PARTITIONS = 4
KEY_SEED = "auditlog-ci-recording-v1"
"""AUDITLOG_KEY_SEED of every golden run: PII keys derived from it, so sealed bytes replay exactly.
A test value, public on purpose; production never sets AUDITLOG_KEY_SEED."""
BLOCK_SIZE = 1000

SEED = 20260501
RECORDS = 24_000
TENANTS = 8  # murmur2 spreads t_1000 .. t_1007 over all four partitions
DUPLICATES = 0.03
MALFORMED = 0.015
TOMBSTONES = 5
CUT_ROUNDS = (5_000, 11_000, 11_001, 17_000)
"""Before these generated records, a cut marker goes into every partition (as the cut ticker
writes them). Rounds 11_000 and 11_001 are one record apart: on the second, three partitions find
no open block, and the one that got that record seals a block of one leaf."""
WINDOW = 50
SHUFFLE_WINDOWS = 0.3
LATE_EVENTS = 0.004
HEADER_RECORDS = 0.2
PRODUCED_FROM_MS = 1_777_593_600_000  # 2026-05-01T00:00:00Z

GOLDEN_FORMAT = 1


# --------------------------------------------------------------------------- the source records


def source_records() -> list[RecordedRecord]:
    """The records the committed recording was made from, in produce order.

    `generate_records` events of TENANTS tenants (PII: names, e-mails, IPs, user agents) with
    duplicates and every kind of malformed record, plus: event times out of order (shuffled
    within some windows of WINDOW records, and a few events hours late; a duplicate repeats its
    original's bytes exactly), headers on some records (one with a null value, some repeated
    keys), tombstones (null values), and rounds of cut markers (null keys). Keyed records carry
    partition -1: the producer's murmur2 partitioner places them; markers name their partition.
    """
    from runners.commands.produce import DUPLICATE, EVENT, generate_records

    rng = random.Random(f"auditlog.golden/{SEED}")
    generated = list(generate_records(RECORDS, TENANTS, DUPLICATES, MALFORMED, SEED))
    values: list[bytes] = []
    rewritten: dict[bytes, bytes] = {}
    for start in range(0, len(generated), WINDOW):
        window = generated[start : start + WINDOW]
        events = {i: json.loads(r.value) for i, r in enumerate(window) if r.kind == EVENT}
        if len(events) > 1 and rng.random() < SHUFFLE_WINDOWS:
            times = [e["occurred_at"] for e in events.values()]
            rng.shuffle(times)
            for event, when in zip(events.values(), times, strict=True):
                event["occurred_at"] = when
        for event in events.values():
            if rng.random() < LATE_EVENTS:
                event["occurred_at"] = _hours_earlier(event["occurred_at"], rng.randint(1, 72))
        for i, record in enumerate(window):
            if record.kind == EVENT:
                value = json.dumps(events[i], separators=(",", ":")).encode()
                rewritten[record.value] = value
            elif record.kind == DUPLICATE:
                value = rewritten[record.value]
            else:
                value = record.value
            values.append(value)

    tombstone_at = set(rng.sample(range(RECORDS), TOMBSTONES))
    out: list[RecordedRecord] = []

    def add(partition: int, key: bytes | None, value: bytes | None, headers: tuple[Any, ...] = ()) -> None:
        timestamp = PRODUCED_FROM_MS + len(out) * 37 + rng.randrange(30)
        out.append(RecordedRecord(partition, len(out), timestamp, CREATE_TIME, key, value, headers))

    for n, (record, value) in enumerate(zip(generated, values, strict=True)):
        if n in CUT_ROUNDS:
            for partition in range(PARTITIONS):
                add(partition, None, CUT_MARKER)
        add(-1, record.key, None if n in tombstone_at else value, _headers(rng))
    return out


def _hours_earlier(when: str, hours: int) -> str:
    from datetime import datetime, timedelta

    moment = datetime.strptime(when, "%Y-%m-%dT%H:%M:%S.%fZ") - timedelta(hours=hours)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _headers(rng: random.Random) -> tuple[tuple[str, bytes | None], ...]:
    if rng.random() >= HEADER_RECORDS:
        return ()
    trace = f"00-{rng.getrandbits(128):032x}-{rng.getrandbits(64):016x}-01".encode()
    headers: list[tuple[str, bytes | None]] = [("traceparent", trace), ("producer", b"auditlog-sdk-python/0.1")]
    roll = rng.random()
    if roll < 0.05:
        headers.append(("x-empty", None))
    elif roll < 0.1:
        headers.append(("producer", b"outbox-relay/2"))  # a repeated key: Kafka keeps both
    return tuple(headers)


# --------------------------------------------------------------------------- heads


@dataclass(frozen=True)
class BlockSummary:
    """One block as the goldens keep it (hashes in hex)."""

    index: int
    leaves: int
    root: str
    tree_size: int
    tree_root: str
    hash: str

    @classmethod
    def of(cls, header: BlockHeader) -> BlockSummary:
        return cls(
            header.block_index,
            header.leaf_count,
            header.block_root.hex(),
            header.tree_size,
            header.tree_root.hex(),
            header.hash().hex(),
        )


@dataclass(frozen=True)
class LogHead:
    """A log's final tree head and every block that led to it."""

    tree_size: int
    root: str
    blocks: tuple[BlockSummary, ...] = field(default_factory=tuple)

    @classmethod
    def of(cls, headers: Iterable[BlockHeader]) -> LogHead:
        blocks = tuple(BlockSummary.of(h) for h in headers)
        if not blocks:
            return cls(0, hashlib.sha256(b"").hexdigest())
        return cls(blocks[-1].tree_size, blocks[-1].tree_root, blocks)

    def to_json(self) -> dict[str, Any]:
        return {"tree_size": self.tree_size, "root": self.root, "blocks": [asdict(b) for b in self.blocks]}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> LogHead:
        return cls(obj["tree_size"], obj["root"], tuple(BlockSummary(**b) for b in obj["blocks"]))


def heads_from_archive(archive: Any, topic: str = TOPIC, verifier: Any = None, origin: str = "") -> dict[str, LogHead]:
    """The heads of the topic's logs in a WORM archive, read block by block.

    With a `verifier` (and the deployment's `origin` prefix), each log's latest signed checkpoint
    is opened and must name the final tree size and root.
    """
    from transforms.checkpoint import open_checkpoint

    heads: dict[str, LogHead] = {}
    for log_id in archive.list_logs():
        if not log_id.startswith(f"{topic}.p"):
            continue
        headers = [archive.read_block(log_id, i)[0] for i in archive.list_blocks(log_id)]
        head = heads[log_id] = LogHead.of(headers)
        if verifier is not None:
            latest = archive.latest_checkpoint(log_id)
            assert latest is not None, f"log {log_id}: no checkpoint in the archive"
            checkpoint = open_checkpoint(latest[1], verifier, origin=f"{origin}/{log_id}")
            assert (checkpoint.size, checkpoint.root.hex()) == (head.tree_size, head.root), (
                f"log {log_id}: latest signed checkpoint ({checkpoint.size}, {checkpoint.root.hex()}) "
                f"is not the last block's head ({head.tree_size}, {head.root})"
            )
    return heads


def heads_from_clickhouse(clickhouse: Any, topic: str = TOPIC) -> dict[str, LogHead]:
    """The heads of the topic's logs as ClickHouse indexed them."""
    log_ids = sorted(log_id for log_id in clickhouse.log_heads() if log_id.startswith(f"{topic}.p"))
    return {log_id: LogHead.of(clickhouse.block_headers(log_id)) for log_id in log_ids}


def heads_by_sequencer(
    records: Iterable[RecordedRecord],
    topic: str = TOPIC,
    block_size: int = BLOCK_SIZE,
    key_seed: str = KEY_SEED,
    core: str = "auto",
) -> tuple[dict[str, LogHead], int]:
    """The heads the pure core (`LogSequencer`) makes of the records, and the dead-letter count.

    What the Flink job does, without Flink: per partition in offset order, first occurrence of an
    event id wins, the open block sealed at the end of the input.
    """
    from pipelines.io.keystore import InMemoryKeyStore
    from schemas.retention import load_policy
    from transforms.note import Signer

    options = IngestOptions(
        topic=topic,
        origin_prefix="auditlog.golden",
        block_size=block_size,
        retention=load_policy(RETENTION_POLICY),
        core=core,
    )
    sequencer = LogSequencer(options, InMemoryKeyStore(key_seed=key_seed.encode()), Signer.generate("auditlog.golden"))
    cursors: dict[int, LogCursor] = {}
    dedupes: dict[int, MemoryDedupe] = {}
    headers: dict[str, list[BlockHeader]] = defaultdict(list)
    dead = 0

    def collect(outputs: list[tuple[str, Any]]) -> None:
        nonlocal dead
        for kind, item in outputs:
            if kind == "dlq":
                dead += 1
            else:
                headers[item.log_id].append(decode_block_object(item.block_object)[0])

    for r in records:
        cursor = cursors.setdefault(r.partition, LogCursor(options.log_id(r.partition)))
        dedupe = dedupes.setdefault(r.partition, MemoryDedupe())
        record = SourceRecord(r.partition, r.offset, r.timestamp_ms, r.key, r.value, service_sig(r.headers))
        collect(sequencer.step(cursor, dedupe, record))
    for partition in sorted(cursors):
        block = sequencer.seal(cursors[partition])
        collect([("block", block)] if block else [])
    return {log_id: LogHead.of(hs) for log_id, hs in sorted(headers.items())}, dead


# --------------------------------------------------------------------------- golden file


@dataclass(frozen=True)
class Golden:
    """golden.json: what replaying the committed recording must give."""

    recording: str
    recording_sha256: str
    topic: str
    key_seed: str
    block_size: int
    records: int
    dead_letters: int
    logs: dict[str, LogHead]
    generated_by: str = "python -m tests.golden regenerate"
    format: int = GOLDEN_FORMAT

    def to_json(self) -> str:
        obj = {
            "format": self.format,
            "generated_by": self.generated_by,
            "recording": self.recording,
            "recording_sha256": self.recording_sha256,
            "topic": self.topic,
            "key_seed": self.key_seed,
            "block_size": self.block_size,
            "records": self.records,
            "dead_letters": self.dead_letters,
            "logs": {log_id: head.to_json() for log_id, head in sorted(self.logs.items())},
        }
        return json.dumps(obj, indent=1) + "\n"

    @classmethod
    def load(cls, path: Path = GOLDEN) -> Golden:
        obj = json.loads(path.read_text())
        if obj.get("format") != GOLDEN_FORMAT:
            raise ValueError(f"{path}: golden format {obj.get('format')!r}, this helper reads {GOLDEN_FORMAT}")
        logs = {log_id: LogHead.from_json(head) for log_id, head in obj.pop("logs").items()}
        return cls(logs=logs, **obj)

    @property
    def recording_path(self) -> Path:
        return TESTDATA / self.recording

    def check_recording(self) -> None:
        """Fails if the committed recording is not the one these goldens were made from."""
        digest = sha256_file(self.recording_path)
        assert digest == self.recording_sha256, (
            f"{self.recording_path} (sha256 {digest}) is not the recording golden.json was made from "
            f"(sha256 {self.recording_sha256}); run `python -m tests.golden regenerate` if that is intended"
        )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def differences(expected: Mapping[str, LogHead], actual: Mapping[str, LogHead]) -> list[str]:
    """What differs between two sets of log heads, one line per log, naming the first differing block."""
    problems: list[str] = []
    for log_id in sorted(set(expected) | set(actual)):
        want, got = expected.get(log_id), actual.get(log_id)
        if want is None:
            problems.append(f"log {log_id}: not in the goldens, but the run made it ({got and got.tree_size} leaves)")
            continue
        if got is None:
            problems.append(f"log {log_id}: missing (golden tree size {want.tree_size}, root {want.root})")
            continue
        for i in range(max(len(want.blocks), len(got.blocks))):
            w = want.blocks[i] if i < len(want.blocks) else None
            g = got.blocks[i] if i < len(got.blocks) else None
            if w == g:
                continue
            if w is None or g is None:
                problems.append(
                    f"log {log_id}: first differing block {i}: expected "
                    + (f"root {w.root} ({w.leaves} leaves)" if w else "no block")
                    + ", got "
                    + (f"root {g.root} ({g.leaves} leaves)" if g else "no block")
                    + f"; tree size expected {want.tree_size}, got {got.tree_size}"
                )
            else:
                fields = [
                    k for k in ("leaves", "root", "tree_size", "tree_root", "hash") if getattr(w, k) != getattr(g, k)
                ]
                problems.append(
                    f"log {log_id}: first differing block {i}: expected root {w.root}, got {g.root} "
                    f"(differs in {', '.join(fields)}; leaves expected {w.leaves}, got {g.leaves}); "
                    f"final tree expected {want.tree_size} {want.root}, got {got.tree_size} {got.root}"
                )
            break
        else:
            if (want.tree_size, want.root) != (got.tree_size, got.root):
                problems.append(
                    f"log {log_id}: tree head expected {want.tree_size} {want.root}, got {got.tree_size} {got.root}"
                )
    return problems


def assert_heads_match(expected: Mapping[str, LogHead], actual: Mapping[str, LogHead], where: str) -> None:
    """Raises AssertionError naming each log and its first differing block."""
    problems = differences(expected, actual)
    assert not problems, f"{where} differs from the goldens:\n  " + "\n  ".join(problems)


def summary(golden: Golden) -> str:
    lines = [
        f"{golden.recording}: {golden.records} records of {golden.topic}, sha256 {golden.recording_sha256[:16]}…",
        f"key seed {golden.key_seed!r}, block size {golden.block_size}, dead letters {golden.dead_letters}",
    ]
    for log_id, head in sorted(golden.logs.items()):
        sizes = Counter(b.leaves for b in head.blocks)
        lines.append(
            f"  {log_id}: {head.tree_size} leaves in {len(head.blocks)} blocks "
            f"({', '.join(f'{n}×{size}' for size, n in sorted(sizes.items(), reverse=True))}), root {head.root}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- running the CLI


def golden_env(settings: Any, **extra: str) -> dict[str, str]:
    """The environment of a golden run: the settings, the key seed and the block size."""
    return {
        **os.environ,
        **settings.to_env(),
        "AUDITLOG_KEY_SEED": KEY_SEED,
        "AUDITLOG_BLOCK_SIZE": str(BLOCK_SIZE),
        "AUDITLOG_RETENTION_POLICY_FILE": str(RETENTION_POLICY),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def run_cli(env: Mapping[str, str], *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Runs `auditlog ARGS` in a child process; raises with its output if it fails."""
    proc = subprocess.run(
        [sys.executable, "-m", "runners.cli", *args],
        cwd=REPO_ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"`auditlog {' '.join(args)}` exited with {proc.returncode}:\n--- stdout\n{proc.stdout[-4000:]}\n"
            f"--- stderr\n{proc.stderr[-8000:]}"
        )
    return proc


def create_topic(settings: Any, topic: str, partitions: int = PARTITIONS, keep_forever: bool = True) -> None:
    """Creates a topic; by default one that keeps its records forever (recorded timestamps are old)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    from pipelines.io.kafka import kafka_client_config

    admin = AdminClient(kafka_client_config(settings))
    config = {"retention.ms": "-1"} if keep_forever else {}
    new = NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config)
    futures = admin.create_topics([new])
    futures[topic].result(timeout=30)
    deadline = time.monotonic() + 30
    while topic not in admin.list_topics(timeout=10).topics:
        if time.monotonic() > deadline:
            raise RuntimeError(f"topic {topic} did not appear")
        time.sleep(0.2)


def _clickhouse_heads_main(args: argparse.Namespace) -> int:
    """`heads`: print the topic's log heads from ClickHouse (its own process: chDB locks its folder)."""
    from pipelines.io.clickhouse import open_clickhouse
    from schemas.settings import Settings

    settings = Settings.from_env()
    clickhouse = open_clickhouse(settings.effective_clickhouse_url)
    try:
        heads = heads_from_clickhouse(clickhouse, args.topic)
        events = clickhouse.count_events()
    finally:
        clickhouse.close()
    print(json.dumps({"events": events, "logs": {k: v.to_json() for k, v in heads.items()}}))
    return 0


def clickhouse_heads(env: Mapping[str, str], topic: str = TOPIC) -> tuple[dict[str, LogHead], int]:
    """The topic's log heads and the event count in the ClickHouse the environment names."""
    proc = subprocess.run(
        [sys.executable, "-m", "tests.golden", "heads", "--topic", topic],
        cwd=REPO_ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"reading ClickHouse failed:\n{proc.stderr[-4000:]}")
    obj = json.loads(proc.stdout.strip().splitlines()[-1])
    return {k: LogHead.from_json(v) for k, v in obj["logs"].items()}, int(obj["events"])


def count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


# --------------------------------------------------------------------------- regenerate


def regenerate(keep_home: bool = False) -> Golden:
    """Remakes the recording and golden.json with a temporary Kafka + S3 stack (see the module docstring)."""
    from infra.stack import Stack
    from pipelines.ingest_config import archive_spec
    from pipelines.io.archive import open_archive
    from runners.commands.record import record_topic
    from runners.commands.replay import replay_records
    from tests.integration.conftest import _test_settings
    from transforms.note import Verifier

    home = Path(tempfile.mkdtemp(prefix="auditlog-golden-"))
    settings = _test_settings(home).replace(bucket="auditlog-golden")  # stack up makes settings.topic, not TOPIC
    stack = Stack(settings, say=lambda line: print(line, file=sys.stderr))
    stack.up(["kafka", "s3"])
    try:
        create_topic(settings, TOPIC)
        records = source_records()
        print(replay_records(settings, records, TOPIC, total=len(records)).line(), file=sys.stderr)
        TESTDATA.mkdir(parents=True, exist_ok=True)
        print(record_topic(settings, TOPIC, RECORDING).line(), file=sys.stderr)

        env = golden_env(settings)
        dlq_file = home / "golden.dlq.jsonl"
        run_cli(env, "ingest", "--from-recording", str(RECORDING), "--dlq-file", str(dlq_file))
        verifier = Verifier.from_key(settings.verifier_key_file.read_text())
        heads = heads_from_archive(open_archive(**archive_spec(settings)), TOPIC, verifier, settings.origin)
        dead = count_lines(dlq_file)
        pure_heads, pure_dead = heads_by_sequencer(iter_records(RECORDING))
        assert_heads_match(pure_heads, heads, "the job's archive, against the pure core,")
        assert pure_dead == dead, f"the job wrote {dead} dead letters, the pure core {pure_dead}"
        ch_heads, _ = clickhouse_heads(env)
        assert_heads_match(heads, ch_heads, "ClickHouse, against the archive,")
    finally:
        stack.down()
        if not keep_home:
            import shutil

            shutil.rmtree(home, ignore_errors=True)
    info = read_info(RECORDING)
    golden = Golden(
        recording=RECORDING.name,
        recording_sha256=sha256_file(RECORDING),
        topic=TOPIC,
        key_seed=KEY_SEED,
        block_size=BLOCK_SIZE,
        records=info.records,
        dead_letters=dead,
        logs=heads,
    )
    GOLDEN.write_text(golden.to_json())
    return golden


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.golden", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("show", help="summarise the committed recording and golden.json")
    regen = sub.add_parser("regenerate", help="remake the recording and golden.json (starts Kafka + S3)")
    regen.add_argument("--keep-home", action="store_true", help="keep the temporary AUDITLOG_HOME")
    heads = sub.add_parser("heads", help="print a topic's log heads from the ClickHouse of AUDITLOG_*")
    heads.add_argument("--topic", default=TOPIC)
    args = parser.parse_args(argv)
    if args.command == "heads":
        return _clickhouse_heads_main(args)
    if args.command == "regenerate":
        print(summary(regenerate(args.keep_home)))
        return 0
    golden = Golden.load()
    info = read_info(golden.recording_path)
    print(summary(golden))
    print(
        f"recording: {info.records} records, {info.partitions} partitions, recorded {info.recorded_at} "
        f"from {info.source}, {golden.recording_path.stat().st_size:,} bytes"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
