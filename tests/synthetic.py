"""Signed logs built straight from generated events, for the verify tests and `make bench-verify`.

The ingest job's own per-log code (`LogSequencer.step`) turns generated Kafka records into sealed
blocks and signed checkpoints, which go to the archive through `put_block`/`put_checkpoint` and to
ClickHouse through the archive indexer: the stores hold exactly what the job would have written,
without a broker or a Flink cluster in the way.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pipelines.indexer import ArchiveIndexer, wait_quiet
from pipelines.ingest_core import IngestOptions, LogCursor, LogSequencer, MemoryDedupe, SourceRecord
from pipelines.io.archive import ArchiveNotFoundError
from pipelines.io.archive.tiles import bundle_entries
from pipelines.io.keystore import InMemoryKeyStore
from runners.deployment import load_or_create_signer
from schemas.samples import EventGenerator, start_of_today, to_record
from transforms.blocks import BlockHeader, decode_block
from transforms.note import Signer
from transforms.retention import RetentionPolicy

ORIGIN = "auditlog.test"
TOPIC = "audit.events"
EVIDENCE = IngestOptions(TOPIC, ORIGIN).retention.longest()  # how long the job locks checkpoints


@dataclass(frozen=True)
class BuiltLogs:
    signer: Signer
    keys: Any
    events: int
    blocks: int
    log_ids: list[str]


def sealed_blocks(
    events: int,
    logs: int,
    block_size: int,
    signer: Signer,
    keys: Any,
    seed: int = 7,
    tenants: int = 3,
    retention: RetentionPolicy | None = None,
    start: datetime | None = None,
) -> Iterator[tuple[int, object]]:
    """Yields (log number, SealedBlockRecord) for `events` generated events spread over `logs` logs.

    `retention` replaces the shipped policy; `start` is the first event's time (default: midnight
    UTC today, so that no event's retention has ended).
    """
    options = IngestOptions(topic=TOPIC, origin_prefix=ORIGIN, block_size=block_size)
    if retention is not None:
        options = dataclasses.replace(options, retention=retention)
    sequencer = LogSequencer(options, keys, signer)
    cursors = [LogCursor(options.log_id(p)) for p in range(logs)]
    dedupe = MemoryDedupe()
    generator = EventGenerator(seed=seed, tenants=tenants, start=start or start_of_today())
    for offset, event in enumerate(itertools.islice(generator, events)):
        partition = offset % logs
        key, value = to_record(event)
        record = SourceRecord(partition, offset // logs, 0, key, value)
        for kind, out in sequencer.step(cursors[partition], dedupe, record):
            assert kind == "block", out
            yield partition, out
    for partition, cursor in enumerate(cursors):
        block = sequencer.seal(cursor)
        if block:
            yield partition, block


def build_logs(
    archive: object,
    clickhouse: object | None,
    events: int,
    logs: int = 2,
    block_size: int = 50,
    seed: int = 7,
    tenants: int = 3,
    progress: Callable[[int], None] | None = None,
    signer: Signer | None = None,
    keys: Any = None,
    retention: RetentionPolicy | None = None,
    start: datetime | None = None,
) -> BuiltLogs:
    """Writes `events` events as signed logs into the archive and (if given) indexes them into ClickHouse.

    PII is sealed with `keys` (a KeyStore; by default an in-memory one, whose keys die with it).
    """
    signer = signer or Signer.generate(ORIGIN)
    keys = keys or InMemoryKeyStore(key_seed=b"auditlog-synthetic")
    blocks = 0
    evidence = retention.longest() if retention is not None else EVIDENCE
    for _, block in sealed_blocks(events, logs, block_size, signer, keys, seed, tenants, retention, start):
        archive.put_sealed_block(block, evidence)  # type: ignore[attr-defined]
        blocks += 1
        if progress:
            progress(blocks)
    if clickhouse is not None:
        indexer = ArchiveIndexer(archive, clickhouse, signer.verifier(), ORIGIN)
        stats = wait_quiet(indexer)
        assert not stats.halted, stats.halted
    log_ids = [IngestOptions(TOPIC, ORIGIN).log_id(p) for p in range(logs)]
    return BuiltLogs(signer, keys, events, blocks, log_ids)


def open_deployment(settings: Any) -> tuple[Any, Any, Signer]:
    """The archive (bucket created), ClickHouse (schema created) and signer that `settings` name.

    For the benchmarks and tests that build a deployment in a child process of their own.
    """
    from pipelines.ingest_config import archive_spec
    from pipelines.io.archive import ensure_bucket, open_archive
    from pipelines.io.clickhouse import open_clickhouse

    archive = open_archive(**archive_spec(settings))
    ensure_bucket(archive.client, settings.bucket)
    clickhouse = open_clickhouse(settings.effective_clickhouse_url)
    clickhouse.ensure_schema()
    return archive, clickhouse, load_or_create_signer(settings.keys_dir, settings.origin)


def build_once(home: Path, script: str, env: dict[str, str]) -> None:
    """Runs `script --build` in a child process unless `home` already holds its finished build.

    The benchmarks keep their (large) deployments between runs; `home`/built.json marks one done.
    """
    import json
    import subprocess
    import sys
    import time

    from schemas.settings import REPO_ROOT

    marker = home / "built.json"
    if marker.exists():
        print(f"  reusing the deployment in {home}", flush=True)
        return
    started = time.monotonic()
    subprocess.run([sys.executable, script, "--build"], env=env, cwd=REPO_ROOT, check=True)
    marker.write_text(json.dumps({"seconds": time.monotonic() - started}))
    print(f"  built the deployment in {time.monotonic() - started:.0f} s ({home})", flush=True)


class _Objects:
    """Objects read off a bucket (key -> bytes), as `bundle_entries` reads an archive."""

    def __init__(self, objects: Mapping[str, bytes]) -> None:
        self.objects = objects

    def get(self, key: str, version_id: str | None = None) -> bytes:
        if key not in self.objects:
            raise ArchiveNotFoundError(key)
        return self.objects[key]


def block_entries(objects: Mapping[str, bytes], key: str) -> tuple[BlockHeader, list[bytes]]:
    """(header, entries) of the block object at `key` among `objects` (key -> bytes, e.g. a bucket's
    objects), the entries from the log's entry bundles there when the object holds only the header."""
    header, entries = decode_block(objects[key])
    return header, entries if entries is not None else bundle_entries(_Objects(objects), header)
