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

Beside it: pipelines/archive_history.py reads a log's history from the archive,
pipelines/verify_report.py holds the reports and the witness file, and
pipelines/io/clickhouse/compare.py compares the index with the archive.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import apache_beam as beam

from pipelines.archive_history import FETCH_THREADS, archive_from_spec, archived_block, check_archive_log
from pipelines.io.archive import (
    block_key,
)
from pipelines.io.clickhouse import open_clickhouse
from pipelines.io.clickhouse.compare import IndexSnapshot, check_leftover_rows, compare_index, compare_rows
from pipelines.results import WriteResults, new_results_dir, read_results, remove_results
from pipelines.verify_report import LogReport, VerifyReport
from transforms.blocks import BlockHeader, decode_block
from transforms.checkpoint import open_checkpoint
from transforms.note import Verifier
from transforms.retention import LegalHold, RetentionClock
from transforms.verify import ArchiveLog, Finding

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
            obj = archived_block(self.archive, key, self.archive.object_versions(key))
            if obj.original is None:
                expired.append((header.first_leaf_index, header.tree_size - 1))
                ranges.append(expired[-1])
                continue
            block_entries = decode_block(obj.original)[1] or list(obj.entries or ())
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


__all__ = [
    "CheckArchiveLogs",
    "CompareWithIndex",
    "ReadIndexSnapshots",
    "RebuildLogs",
    "VerifyLogs",
    "run_rebuild",
    "run_verify",
]
