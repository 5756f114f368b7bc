"""Verify and rebuild: the Beam pipelines behind `auditlog verify` and `auditlog rebuild`.

    auditlog verify [--tenant T] [--log L] [--since TIME] [--json]    # exit 0 only when all agrees
    auditlog rebuild [--log L]                                       # ClickHouse from the archive alone

The WORM archive is the source of truth. Per log, in parallel: read every key's original version
(and its history: overwrites, delete markers), recompute leaves, block roots, tree roots, the
chain, checkpoint signatures and consistency (`transforms.verify.ArchiveLogCheck`). Beside it,
ClickHouse digests each block of its tables in one pass (`ClickHouse.index_snapshots`); the two
meet per log, and only blocks whose digests disagree are compared row by row, so every finding
names the store, the kind, the log, the leaf and the event.

Runs on Beam's DirectRunner in this process by default; Beam flags pass through (`--runner`,
`--direct_num_workers`, ...), and `auditlog verify --runner prism` runs it on Beam's Prism runner
with SDK workers in processes of their own. Every step reads what it needs from the archive and
ClickHouse itself, and each log's report reaches the caller as a file the pipeline writes into a
results directory (pipelines/results.py), so the pipelines run on any runner whose workers can
reach the stores and that directory. Embedded chDB is opened by one process at a time: the caller
holds it closed while the pipeline runs, and the steps that touch it open and close it themselves
(one SDK worker process on Prism; with several workers, or several hosts, use a ClickHouse server).
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apache_beam as beam

from pipelines.io.archive import (
    COSIGNED_DIR,
    REFUSALS_DIR,
    Archive,
    block_key,
    log_prefix,
    open_archive,
    parse_key,
)
from pipelines.io.clickhouse import open_clickhouse
from pipelines.io.clickhouse.compare import IndexSnapshot, check_leftover_rows, compare_index, compare_rows
from pipelines.results import WriteResults, new_results_dir, read_results, remove_results
from transforms.blocks import BlockHeader, decode_block_object
from transforms.checkpoint import Checkpoint, open_checkpoint
from transforms.errors import VerificationError
from transforms.note import Verifier
from transforms.retention import LegalHold, RetentionClock
from transforms.verify import ArchivedObject, ArchiveLog, ArchiveLogCheck, Finding, Kind, Store

log = logging.getLogger(__name__)

FETCH_THREADS = 8
"""Archive GETs in flight per log: S3 latency, not CPU, bounds a sequential read."""
READ_AHEAD = 32
"""Blocks read ahead of the one being checked (bounds memory: ~1 MB per block of 1,000 events)."""

_MEMORY_ARCHIVES: dict[str, Archive] = {}


def register_memory_archive(name: str, archive: Archive) -> dict[str, Any]:
    """Makes an in-memory archive reachable from DoFns in this process (tests); returns its spec.

    Only steps that run in this process find it (DirectRunner, TestPipeline): the stores of a
    pipeline on another runner are S3 (`archive_spec`).
    """
    _MEMORY_ARCHIVES[name] = archive
    return {"memory": name}


def archive_from_spec(spec: dict[str, Any]) -> Archive:
    """Opens the archive a pipeline step names: S3 settings (`archive_spec`) or a registered in-memory one."""
    if "memory" in spec:
        if spec["memory"] not in _MEMORY_ARCHIVES:
            raise LookupError(
                f"in-memory archive {spec['memory']!r} lives in the process that registered it, not in this "
                "worker; run the pipeline on the DirectRunner or give it an S3 archive"
            )
        return _MEMORY_ARCHIVES[spec["memory"]]
    return open_archive(**spec)


# --------------------------------------------------------------------------- reading the archive


def _original(archive: Archive, key: str, versions: list[Any]) -> ArchivedObject:
    data_versions = [v for v in versions if not v.is_delete_marker]
    deleted = bool(versions) and versions[0].is_delete_marker
    if not data_versions:
        return ArchivedObject(key, None, 0, deleted)
    if len(data_versions) == 1 and not deleted:
        return ArchivedObject(key, archive.get(key))
    data = archive.get(key, version_id=data_versions[-1].version_id)  # the first write is the original
    current = archive.get(key, version_id=data_versions[0].version_id) if len(data_versions) > 1 else None
    return ArchivedObject(key, data, len(data_versions), deleted, current)


def log_history(
    archive: Archive, log_id: str, pool: ThreadPoolExecutor
) -> tuple[Iterator[tuple[int, ArchivedObject, bool]], Iterator[tuple[int, ArchivedObject]]]:
    """Returns (blocks in index order, read ahead in parallel; checkpoints by size, read meanwhile) of one log.

    Each block comes as (index, object, expired): `expired` when the object is what `auditlog
    expire` left in the block's place.

    One version listing covers the whole log, so overwrites and delete markers are seen for every
    key without a request per key.
    """
    found: dict[str, list[tuple[int, str, list[Any]]]] = {"block": [], "checkpoint": [], "expired": [], "resume": []}
    for key, versions in archive.versions_under(log_prefix(log_id)).items():
        parsed = parse_key(key)
        if parsed is None and key[len(log_prefix(log_id)) :].split("/", 1)[0] in (COSIGNED_DIR, REFUSALS_DIR):
            continue  # cosignatures and refusals: checked by verify_witnessing
        if parsed is None or parsed[0] != log_id:
            log.warning("verify: ignoring unexpected object %s (not written by auditlog)", key)
            continue
        found[parsed[1]].append((parsed[2], key, versions))
    checkpoints = sorted(found["checkpoint"])
    # A block that expired is read from what `auditlog expire` left in its place; while both
    # exist (an expiry cut short) the block object wins.
    present = {number for number, _, _ in found["block"]}
    blocks = sorted(
        [(number, key, versions, False) for number, key, versions in found["block"]]
        + [(number, key, versions, True) for number, key, versions in found["expired"] if number not in present]
    )
    checkpoint_reads = [pool.submit(_original, archive, key, versions) for _, key, versions in checkpoints]

    def read_ahead() -> Iterator[tuple[int, ArchivedObject, bool]]:
        pending: deque[tuple[int, bool, Future[ArchivedObject]]] = deque()
        for number, key, versions, expired in blocks:
            pending.append((number, expired, pool.submit(_original, archive, key, versions)))
            if len(pending) >= READ_AHEAD:
                number_done, was_expired, future = pending.popleft()
                yield number_done, future.result(), was_expired
        while pending:
            number_done, was_expired, future = pending.popleft()
            yield number_done, future.result(), was_expired

    def checkpoint_objects() -> Iterator[tuple[int, ArchivedObject]]:
        for (number, _, _), future in zip(checkpoints, checkpoint_reads, strict=True):
            yield number, future.result()

    return read_ahead(), checkpoint_objects()


def check_archive_log(
    archive: Archive,
    log_id: str,
    verifier: Verifier,
    origin: str,
    witness: Checkpoint | None = None,
    on_block: Callable[[BlockHeader, list[bytes]], None] | None = None,
    pool: ThreadPoolExecutor | None = None,
    progress: Callable[[int], object] | None = None,
    clock: RetentionClock | None = None,
    on_expired: Callable[[BlockHeader, list[bytes]], None] | None = None,
) -> ArchiveLog:
    """Replays one log's archive (see transforms.verify.ArchiveLogCheck).

    `on_block` sees each verified block with its entries, `on_expired` each verified expired block
    with its leaf hashes; `clock` judges retention (see ArchiveLogCheck).
    """
    own = pool is None
    pool = pool or ThreadPoolExecutor(FETCH_THREADS)
    try:
        check = ArchiveLogCheck(log_id, verifier, origin, clock)
        blocks, checkpoints = log_history(archive, log_id, pool)
        for index, obj, expired in blocks:
            if expired:
                verified = check.add_expired_block(index, obj)
                if verified is not None and on_expired:
                    on_expired(*verified)
            else:
                verified = check.add_block(index, obj)
                if verified is not None and on_block:
                    on_block(*verified)
            if verified is None:
                continue
            if progress:
                progress(verified[0].leaf_count)
        for size, obj in checkpoints:
            check.add_checkpoint(size, obj)
        return check.finish(witness)
    finally:
        if own:
            pool.shutdown()


# --------------------------------------------------------------------------- reports


@dataclass
class LogReport:
    log_id: str
    events: int = 0
    blocks: int = 0
    expired_events: int = 0
    expired_blocks: int = 0
    checkpoint_size: int = 0
    checkpoint_root: str = ""
    checkpoint_note: str = ""
    findings: list[Finding] = field(default_factory=list)

    @classmethod
    def of(cls, archived: ArchiveLog, findings: list[Finding], blocks: int | None = None) -> LogReport:
        """The report of one log: what the archive proved, and the findings about it."""
        committed = archived.committed
        return cls(
            archived.log_id,
            events=archived.events,
            blocks=len(archived.headers) if blocks is None else blocks,
            expired_events=archived.expired_events,
            expired_blocks=archived.expired_blocks,
            checkpoint_size=committed.size if committed else 0,
            checkpoint_root=committed.root.hex() if committed else "",
            checkpoint_note=archived.committed_note,
            findings=findings,
        )

    def to_json(self) -> dict[str, Any]:
        """Everything in the report, as the pipeline writes it for the caller (`from_json` reads it)."""
        return {
            "log_id": self.log_id,
            "events": self.events,
            "blocks": self.blocks,
            "expired_events": self.expired_events,
            "expired_blocks": self.expired_blocks,
            "checkpoint_size": self.checkpoint_size,
            "checkpoint_root": self.checkpoint_root,
            "checkpoint_note": self.checkpoint_note,
            "findings": [f.to_json() for f in self.findings],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LogReport:
        fields = {k: v for k, v in data.items() if k != "findings"}
        return cls(**fields, findings=[Finding.from_json(f) for f in data["findings"]])


@dataclass
class VerifyReport:
    logs: list[LogReport]

    @property
    def findings(self) -> list[Finding]:
        return [f for report in self.logs for f in report.findings]

    @property
    def events(self) -> int:
        return sum(r.events for r in self.logs)

    @property
    def expired_events(self) -> int:
        return sum(r.expired_events for r in self.logs)

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events": self.events,
            "expired_by_policy": self.expired_events,
            "logs": [
                {
                    "log_id": r.log_id,
                    "events": r.events,
                    "blocks": r.blocks,
                    "expired_by_policy": {"events": r.expired_events, "blocks": r.expired_blocks},
                    "checkpoint": {"size": r.checkpoint_size, "root": r.checkpoint_root},
                    "findings": [f.to_json() for f in r.findings],
                }
                for r in self.logs
            ],
            "findings_by_kind": _count_by(self.findings, lambda f: f"{f.store.value}: {f.kind.value}"),
        }


def _count_by(findings: Iterable[Finding], key: Callable[[Finding], str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for f in findings:
        counts[key(f)] = counts.get(key(f), 0) + 1
    return dict(sorted(counts.items()))


# --------------------------------------------------------------------------- the Beam steps


class CheckArchiveLogs(beam.DoFn):
    """log id → (log id, ArchiveLog): the archive side of verify, one log per element."""

    def __init__(
        self,
        archive_spec: dict[str, Any],
        verifier_key: str,
        origin_prefix: str,
        witnesses: dict[str, str],
        progress: bool = False,
        clock: RetentionClock | None = None,
    ):
        self.archive_spec = archive_spec
        self.verifier_key = verifier_key
        self.origin_prefix = origin_prefix
        self.witnesses = witnesses
        self.progress = progress
        self.clock = clock

    def setup(self) -> None:
        from tqdm import tqdm

        self.archive = archive_from_spec(self.archive_spec)
        self.verifier = Verifier.from_key(self.verifier_key)
        self.pool = ThreadPoolExecutor(FETCH_THREADS)
        self.bar = tqdm(unit="ev", unit_scale=True, desc="archive", disable=not self.progress, mininterval=0.5)

    def teardown(self) -> None:
        self.pool.shutdown()
        self.bar.close()

    def process(self, log_id: str) -> Iterator[tuple[str, ArchiveLog]]:
        origin = f"{self.origin_prefix}/{log_id}"
        witness = None
        if log_id in self.witnesses:
            witness = open_checkpoint(self.witnesses[log_id], self.verifier, origin=origin)
        yield (
            log_id,
            check_archive_log(
                self.archive,
                log_id,
                self.verifier,
                origin,
                witness,
                pool=self.pool,
                progress=self.bar.update,
                clock=self.clock,
            ),
        )


class ReadIndexSnapshots(beam.DoFn):
    """(any one element) → (log id, IndexSnapshot) for every log ClickHouse mentions, from one pass per table."""

    def __init__(self, clickhouse_url: str, log_ids: list[str] | None, clock: RetentionClock | None = None):
        self.clickhouse_url = clickhouse_url
        self.log_ids = log_ids
        self.clock = clock

    def process(self, _: Any) -> Iterator[tuple[str, IndexSnapshot]]:
        clickhouse = open_clickhouse(self.clickhouse_url)
        try:
            snapshots = clickhouse.index_snapshots(self.clock)
        finally:
            clickhouse.close()
        for log_id, snapshot in snapshots.items():
            if self.log_ids is None or log_id in self.log_ids:
                yield log_id, snapshot


class CompareWithIndex(beam.DoFn):
    """(log id, {archive, index}) → LogReport: ClickHouse held against the archive, drilled down where they differ."""

    def __init__(
        self,
        archive_spec: dict[str, Any],
        clickhouse_url: str,
        verifier_key: str,
        origin_prefix: str,
        clock: RetentionClock | None = None,
    ):
        self.archive_spec = archive_spec
        self.clickhouse_url = clickhouse_url
        self.verifier_key = verifier_key
        self.origin_prefix = origin_prefix
        self.clock = clock

    def setup(self) -> None:
        self.archive = archive_from_spec(self.archive_spec)
        self.verifier = Verifier.from_key(self.verifier_key)

    def process(self, element: tuple[str, dict[str, list[Any]]]) -> Iterator[LogReport]:
        log_id, joined = element
        archived: ArchiveLog = joined["archive"][0] if joined["archive"] else ArchiveLog(log_id)
        snapshot: IndexSnapshot = joined["index"][0] if joined["index"] else IndexSnapshot()
        origin = f"{self.origin_prefix}/{log_id}"
        findings = list(archived.findings)
        index_findings, suspects, extra = compare_index(archived, snapshot, self.verifier, origin)
        findings.extend(index_findings)
        if suspects or extra:
            findings.extend(self._drill_down(archived, suspects, extra))
        yield LogReport.of(archived, findings)

    def _drill_down(self, archived: ArchiveLog, suspects: set[int], extra: list[tuple[int, int]]) -> list[Finding]:
        entries: dict[int, bytes] = {}
        ranges = list(extra)
        expired: list[tuple[int, int]] = []  # blocks replaced by their leaf hashes: rows checked against those
        for block_index in sorted(suspects):
            header = archived.headers.get(block_index)
            if header is None:
                continue
            key = block_key(archived.log_id, block_index)
            original = _original(self.archive, key, self.archive.object_versions(key)).original
            if original is None:
                expired.append((header.first_leaf_index, header.tree_size - 1))
                ranges.append(expired[-1])
                continue
            _, block_entries = decode_block_object(original)
            for i, entry in enumerate(block_entries):
                entries[header.first_leaf_index + i] = entry
            ranges.append((header.first_leaf_index, header.tree_size - 1))
        clickhouse = open_clickhouse(self.clickhouse_url)
        try:
            rows = clickhouse.indexed_rows(archived.log_id, ranges, sorted(suspects))
        finally:
            clickhouse.close()
        in_expired = [r for r in rows if any(lo <= r.leaf_index <= hi for lo, hi in expired)]
        rows = [r for r in rows if not any(lo <= r.leaf_index <= hi for lo, hi in expired)]
        leaf_index_of = {archived.tree.leaf(i): i for i in range(archived.size)}
        return check_leftover_rows(archived, in_expired) + compare_rows(
            archived, entries, rows, leaf_index_of, self.clock
        )


LOG_KEYED = beam.typehints.KV[str, Any]
"""(log id, value): keyed by a string, so every runner can group by it (Prism has no pickled keys)."""


class VerifyLogs(beam.PTransform[beam.PCollection[str], beam.PCollection[LogReport]]):
    """log ids → LogReport per log: the whole verification, archive and ClickHouse."""

    def __init__(
        self,
        archive_spec: dict[str, Any],
        clickhouse_url: str,
        verifier_key: str,
        origin_prefix: str,
        witnesses: dict[str, str] | None = None,
        only_logs: list[str] | None = None,
        progress: bool = False,
        clock: RetentionClock | None = None,
    ):
        super().__init__()
        self.progress = progress
        self.clock = clock
        self.archive_spec = archive_spec
        self.clickhouse_url = clickhouse_url
        self.verifier_key = verifier_key
        self.origin_prefix = origin_prefix
        self.witnesses = witnesses or {}
        self.only_logs = only_logs

    def expand(self, log_ids: beam.PCollection[str]) -> beam.PCollection[LogReport]:
        archive = (
            log_ids
            | "Spread logs" >> beam.Reshuffle()
            | "Check archive"
            >> beam.ParDo(
                CheckArchiveLogs(
                    self.archive_spec, self.verifier_key, self.origin_prefix, self.witnesses, self.progress, self.clock
                )
            ).with_output_types(LOG_KEYED)
        )
        # A branch of its own: a runner that runs stages side by side (Prism, Flink, Dataflow)
        # digests ClickHouse while the archive is replayed.
        index = (
            log_ids.pipeline
            | "Start digests" >> beam.Impulse()
            | "Digest ClickHouse"
            >> beam.ParDo(ReadIndexSnapshots(self.clickhouse_url, self.only_logs, self.clock)).with_output_types(
                LOG_KEYED
            )
        )
        reports: beam.PCollection[LogReport] = (
            {"archive": archive, "index": index}
            | "Join by log" >> beam.CoGroupByKey()
            | "Compare"
            >> beam.ParDo(
                CompareWithIndex(
                    self.archive_spec, self.clickhouse_url, self.verifier_key, self.origin_prefix, self.clock
                )
            )
        )
        return reports


class RebuildLogs(beam.DoFn):
    """log id → LogReport: re-indexes one log into ClickHouse from its verified archive originals.

    Only blocks that verify are written, in order, each with its checkpoint; the first block that
    does not verify stops that log (its findings say why) so the index never holds what the archive
    cannot prove.
    """

    def __init__(
        self,
        archive_spec: dict[str, Any],
        clickhouse_url: str,
        verifier_key: str,
        origin_prefix: str,
        fresh: bool,
        holds: tuple[LegalHold, ...] = (),
    ):
        self.archive_spec = archive_spec
        self.clickhouse_url = clickhouse_url
        self.verifier_key = verifier_key
        self.origin_prefix = origin_prefix
        self.fresh = fresh
        self.holds = holds

    def setup(self) -> None:
        self.archive = archive_from_spec(self.archive_spec)
        self.verifier = Verifier.from_key(self.verifier_key)

    def process(self, log_id: str) -> Iterator[LogReport]:
        clickhouse = open_clickhouse(self.clickhouse_url)
        written: list[BlockHeader] = []
        try:
            if not self.fresh:
                clickhouse.delete_log(log_id)

            def write(header: BlockHeader, entries: list[bytes]) -> None:
                clickhouse.write_block(header, entries, deduplicate=self.fresh, holds=self.holds)
                written.append(header)

            def write_expired(header: BlockHeader, leaf_hashes: list[bytes]) -> None:
                clickhouse.write_expired_block(header, leaf_hashes, deduplicate=self.fresh)
                written.append(header)

            origin = f"{self.origin_prefix}/{log_id}"
            archived = check_archive_log(
                self.archive, log_id, self.verifier, origin, on_block=write, on_expired=write_expired
            )
            # Checkpoints are verified after the blocks; the replay kept each verified note.
            for header in written:
                note = archived.notes.get(header.tree_size)
                if note is not None:
                    clickhouse.write_checkpoint(header, note, deduplicate=self.fresh)
        finally:
            clickhouse.close()
        yield LogReport.of(archived, archived.findings, blocks=len(written))


# --------------------------------------------------------------------------- running it


def _report_result(report: LogReport) -> tuple[str, dict[str, Any]]:
    return report.log_id, report.to_json()


def _run_per_log(
    log_ids: list[str], step: Any, beam_args: list[str] | None, results_base: str | None = None
) -> VerifyReport:
    """Runs `step` (log ids → LogReport) over `log_ids` and reads the reports back, in log order.

    Each report is a file the pipeline writes under `results_base` (a folder or URL every worker
    reaches; default a temporary local folder), read once the run has finished.
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    options = PipelineOptions(beam_args or [])
    results = new_results_dir(results_base)
    try:
        with beam.Pipeline(options=options) as p:
            _ = (
                p
                | "Logs" >> beam.Create(sorted(log_ids))
                | "Per log" >> step
                | "As results" >> beam.Map(_report_result)
                | "Write results" >> beam.ParDo(WriteResults(results))
            )
        reports = [LogReport.from_json(data) for data in read_results(results)]
    finally:
        remove_results(results)
    missing = sorted(set(log_ids) - {r.log_id for r in reports})
    if missing:
        raise RuntimeError(f"the pipeline finished without a report for logs {missing} (in {results})")
    return VerifyReport(sorted(reports, key=lambda r: r.log_id))


def run_verify(
    log_ids: list[str],
    archive_spec: dict[str, Any],
    clickhouse_url: str,
    verifier_key: str,
    origin_prefix: str,
    witnesses: dict[str, str] | None = None,
    only_logs: list[str] | None = None,
    beam_args: list[str] | None = None,
    progress: bool = False,
    clock: RetentionClock | None = None,
    results_base: str | None = None,
) -> VerifyReport:
    """Runs VerifyLogs on `log_ids` and reads the reports back (in log order).

    `clock` (the time and the legal holds of the run) tells expired by policy from deleted;
    `results_base` is where the pipeline leaves the reports (see `_run_per_log`).
    """
    step = VerifyLogs(archive_spec, clickhouse_url, verifier_key, origin_prefix, witnesses, only_logs, progress, clock)
    return _run_per_log(log_ids, step, beam_args, results_base)


def run_rebuild(
    log_ids: list[str],
    archive_spec: dict[str, Any],
    clickhouse_url: str,
    verifier_key: str,
    origin_prefix: str,
    fresh: bool,
    beam_args: list[str] | None = None,
    holds: tuple[LegalHold, ...] = (),
    results_base: str | None = None,
) -> VerifyReport:
    """Re-indexes `log_ids` from the archive (`fresh`: the tables were just recreated).

    Rows the active legal `holds` cover are written exempt from TTL expiry. The caller must not
    hold embedded chDB open meanwhile: the steps may run in another process.
    """
    step = beam.ParDo(RebuildLogs(archive_spec, clickhouse_url, verifier_key, origin_prefix, fresh, holds))
    return _run_per_log(log_ids, step, beam_args, results_base)


# --------------------------------------------------------------------------- the witness


def load_witnesses(path: Path) -> dict[str, str]:
    """Returns {log id: signed checkpoint} a previous clean verify saw (empty if none yet)."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        return {str(k): str(v) for k, v in data.get("logs", {}).items()}
    except (ValueError, AttributeError) as exc:
        raise VerificationError(
            f"witness file {path} is not valid JSON ({exc}); move it aside to start afresh"
        ) from exc


def save_witnesses(path: Path, report: VerifyReport, previous: dict[str, str]) -> None:
    """Records each cleanly verified log's newest checkpoint, so a later rollback or fork is caught."""
    logs = dict(previous)
    for r in report.logs:
        if r.checkpoint_note and not r.findings:
            logs[r.log_id] = r.checkpoint_note
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"logs": logs}, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


__all__ = [
    "CheckArchiveLogs",
    "CompareWithIndex",
    "Finding",
    "Kind",
    "LogReport",
    "ReadIndexSnapshots",
    "RebuildLogs",
    "Store",
    "VerifyLogs",
    "VerifyReport",
    "check_archive_log",
    "load_witnesses",
    "run_rebuild",
    "run_verify",
    "save_witnesses",
]
