"""Every Beam step of verify, rebuild and export, each run by Beam's TestPipeline and checked with assert_that.

The stores are an in-memory archive and embedded chDB in a temporary folder, holding two signed
logs built by the ingest job's own per-log code (tests/synthetic.py). The steps are the DoFns and
composites of pipelines/verify.py, pipelines/export.py and pipelines/results.py; what the steps
hand the caller goes through files (WriteResults), never through this process.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.archive_history import archive_from_spec, check_archive_log, register_memory_archive
from pipelines.export import ExportQuery, PresentEvents, ReadExportRows, WriteExportFiles
from pipelines.io.archive.testing import InMemoryArchive
from pipelines.io.clickhouse import LOGS_TABLE, open_clickhouse
from pipelines.io.keystore import InMemoryKeyStore
from pipelines.prover import Prover
from pipelines.results import WriteResults, new_results_dir, read_results, remove_results, result_path
from pipelines.verify import CheckArchiveLogs, CompareWithIndex, ReadIndexSnapshots, RebuildLogs, VerifyLogs
from pipelines.verify_report import LogReport
from schemas.present import SEALED
from tests.synthetic import ORIGIN, build_logs
from transforms.note import Signer
from transforms.verify import Finding, Kind, Store

EVENTS = 240
BLOCK_SIZE = 20
KEY_SEED = b"auditlog-beam-steps"
TENANT = "t_1000"


@dataclass
class Deployment:
    spec: dict[str, Any]
    archive: InMemoryArchive
    clickhouse_url: str
    signer: Signer
    log_ids: list[str]

    @property
    def verifier_key(self) -> str:
        return self.signer.verifier().encode()

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        clickhouse = open_clickhouse(self.clickhouse_url)
        try:
            if statement.startswith(("ALTER", "INSERT")):
                clickhouse._conn.command(statement + (" SETTINGS mutations_sync = 2" if "ALTER" in statement else ""))
                return []
            return clickhouse.query(statement)
        finally:
            clickhouse.close()


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    archive = InMemoryArchive()
    url = f"chdb://{tmp_path / 'chdb'}"
    clickhouse = open_clickhouse(url)
    clickhouse.ensure_schema()
    signer = Signer.generate(ORIGIN)
    built = build_logs(
        archive, clickhouse, EVENTS, logs=2, block_size=BLOCK_SIZE, signer=signer, keys=InMemoryKeyStore(KEY_SEED)
    )
    clickhouse.close()  # each step opens it itself, as it would in a worker
    spec = register_memory_archive(f"beam-steps-{uuid.uuid4().hex}", archive)
    yield Deployment(spec, archive, url, signer, built.log_ids)


def pipeline() -> TestPipeline:
    return TestPipeline(options=beam.options.pipeline_options.PipelineOptions(["--runner=DirectRunner"]))


def kinds(report: LogReport) -> set[tuple[str, str]]:
    return {(f.store.value, f.kind.value) for f in report.findings}


# --------------------------------------------------------------------------- verify


def test_check_archive_logs_replays_each_log(deployment: Deployment) -> None:
    with pipeline() as p:
        checked = (
            p
            | beam.Create(deployment.log_ids)
            | beam.ParDo(CheckArchiveLogs(deployment.spec, deployment.verifier_key, ORIGIN, {}))
            | beam.MapTuple(
                lambda log_id, archived: (log_id, archived.events, len(archived.headers), archived.findings)
            )
        )
        assert_that(
            checked, equal_to([(log_id, EVENTS // 2, EVENTS // 2 // BLOCK_SIZE, []) for log_id in deployment.log_ids])
        )


def test_check_archive_logs_names_an_overwritten_block(deployment: Deployment) -> None:
    from pipelines.io.archive import block_key

    log_id = deployment.log_ids[0]
    deployment.archive.overwrite_unconditionally(block_key(log_id, 2), b"auditlog-block/v1\nnot the original\n")
    with pipeline() as p:
        found = (
            p
            | beam.Create([log_id])
            | beam.ParDo(CheckArchiveLogs(deployment.spec, deployment.verifier_key, ORIGIN, {}))
            | beam.FlatMapTuple(lambda _, archived: sorted({(f.store.value, f.kind.value) for f in archived.findings}))
        )
        assert_that(found, equal_to([("archive", "archive object overwritten")]))


def test_read_index_snapshots_digests_every_indexed_log_or_the_ones_asked_for(deployment: Deployment) -> None:
    with pipeline() as p:
        every = (
            p
            | "all" >> beam.Impulse()
            | "digest all" >> beam.ParDo(ReadIndexSnapshots(deployment.clickhouse_url, None))
            | "blocks" >> beam.MapTuple(lambda log_id, snapshot: (log_id, len(snapshot.headers)))
        )
        blocks = EVENTS // 2 // BLOCK_SIZE
        assert_that(every, equal_to([(log_id, blocks) for log_id in deployment.log_ids]), label="every log")
        one = (
            p
            | "one" >> beam.Impulse()
            | "digest one" >> beam.ParDo(ReadIndexSnapshots(deployment.clickhouse_url, deployment.log_ids[1:]))
            | "ids" >> beam.Keys()
        )
        assert_that(one, equal_to(deployment.log_ids[1:]), label="one log")


def _joined(deployment: Deployment, log_id: str) -> tuple[str, dict[str, list[Any]]]:
    from transforms.note import Verifier

    archived = check_archive_log(
        archive_from_spec(deployment.spec), log_id, Verifier.from_key(deployment.verifier_key), f"{ORIGIN}/{log_id}"
    )
    clickhouse = open_clickhouse(deployment.clickhouse_url)
    try:
        snapshot = clickhouse.index_snapshots()[log_id]
    finally:
        clickhouse.close()
    return log_id, {"archive": [archived], "index": [snapshot]}


def test_compare_with_index_drills_down_to_the_row_that_differs(deployment: Deployment) -> None:
    log_id = deployment.log_ids[0]
    clean = _joined(deployment, log_id)  # ClickHouse as built: its digests agree with the archive
    deployment.sql(
        f"ALTER TABLE {LOGS_TABLE} UPDATE action = 'user.impersonate' WHERE log_id = '{log_id}' AND leaf_index = 7"
    )
    tampered = _joined(deployment, log_id)
    with pipeline() as p:
        reports = (
            p
            | beam.Create([clean, tampered])
            | beam.ParDo(CompareWithIndex(deployment.spec, deployment.clickhouse_url, deployment.verifier_key, ORIGIN))
            | beam.Map(
                lambda r: (r.log_id, r.events, sorted((f.store.value, f.kind.value, f.leaf_index) for f in r.findings))
            )
        )
        assert_that(
            reports,
            equal_to([(log_id, EVENTS // 2, []), (log_id, EVENTS // 2, [("clickhouse", "modified", 7)])]),
        )


def test_compare_with_index_names_a_deleted_row(deployment: Deployment) -> None:
    log_id = deployment.log_ids[1]
    deployment.sql(f"ALTER TABLE {LOGS_TABLE} DELETE WHERE log_id = '{log_id}' AND leaf_index = 11")
    joined = _joined(deployment, log_id)
    with pipeline() as p:
        reports = (
            p
            | beam.Create([joined])
            | beam.ParDo(CompareWithIndex(deployment.spec, deployment.clickhouse_url, deployment.verifier_key, ORIGIN))
            | beam.Map(lambda r: (r.log_id, sorted((f.store.value, f.kind.value, f.leaf_index) for f in r.findings)))
        )
        assert_that(reports, equal_to([(log_id, [("clickhouse", "deleted", 11)])]))


def test_verify_logs_finds_each_store_tampered_with(deployment: Deployment) -> None:
    first, second = deployment.log_ids
    deployment.sql(f"ALTER TABLE {LOGS_TABLE} DELETE WHERE log_id = '{second}' AND leaf_index = 11")
    with pipeline() as p:
        reports = (
            p
            | beam.Create(deployment.log_ids)
            | VerifyLogs(deployment.spec, deployment.clickhouse_url, deployment.verifier_key, ORIGIN)
            | beam.Map(lambda r: (r.log_id, r.events, sorted(kinds(r))))
        )
        assert_that(reports, equal_to([(first, EVENTS // 2, []), (second, EVENTS // 2, [("clickhouse", "deleted")])]))


def test_rebuild_logs_reindexes_from_the_archive_alone(deployment: Deployment) -> None:
    clickhouse = open_clickhouse(deployment.clickhouse_url)
    clickhouse.drop_tables()
    clickhouse.ensure_schema()
    clickhouse.close()
    with pipeline() as p:
        reports = (
            p
            | beam.Create(deployment.log_ids)
            | beam.ParDo(
                RebuildLogs(deployment.spec, deployment.clickhouse_url, deployment.verifier_key, ORIGIN, fresh=True)
            )
            | beam.Map(lambda r: (r.log_id, r.events, r.blocks, r.findings))
        )
        assert_that(
            reports, equal_to([(log_id, EVENTS // 2, EVENTS // 2 // BLOCK_SIZE, []) for log_id in deployment.log_ids])
        )
    assert deployment.sql(f"SELECT count(), uniqExact(log_id, leaf_index) FROM {LOGS_TABLE}") == [(EVENTS, EVENTS)]


# --------------------------------------------------------------------------- results through files


def test_write_results_leaves_one_file_per_result_and_the_caller_reads_them_back(tmp_path: Path) -> None:
    finding = Finding(Store.CLICKHOUSE, Kind.MODIFIED, "audit.events/p0", "action differs", leaf_index=7)
    report = LogReport("audit.events/p0", events=3, blocks=1, checkpoint_size=3, findings=[finding])
    results = new_results_dir(str(tmp_path / "results"))
    with pipeline() as p:
        paths = (
            p
            | beam.Create([(report.log_id, report.to_json()), ("other", {"n": 1})])
            | beam.ParDo(WriteResults(results))
        )
        assert_that(paths, equal_to([result_path(results, "audit.events/p0"), result_path(results, "other")]))
    read = read_results(results)
    assert [LogReport.from_json(read[0])] == [report]  # the name is quoted: "/" does not make a folder
    assert read[1] == {"n": 1}
    remove_results(results)
    assert not Path(results).exists()


def test_new_results_dirs_are_fresh_and_default_to_a_temporary_folder(tmp_path: Path) -> None:
    a, b = new_results_dir(str(tmp_path)), new_results_dir(str(tmp_path))
    assert a != b and Path(a).is_dir() and not list(Path(a).iterdir())
    local = new_results_dir()
    assert Path(local).is_dir() and read_results(local) == []
    remove_results(local)


# --------------------------------------------------------------------------- export


class OpenKeys:
    """The key store the logs were sealed with (derived from the seed), opened inside the step."""

    def __call__(self) -> Any:
        return SeededKeys()


class SeededKeys(InMemoryKeyStore):
    """Keys derived from the seed, as build_logs made them: a lookup finds every subject's keys."""

    def __init__(self) -> None:
        super().__init__(KEY_SEED)

    def get(self, tenant_id: str, subject_id: str) -> Any:
        return self.get_or_create(tenant_id, subject_id)


@dataclass
class OpenProver:
    spec: dict[str, Any]
    clickhouse_url: str
    verifier_key: str

    def __call__(self) -> tuple[Prover, Any]:
        from transforms.note import Verifier

        clickhouse = open_clickhouse(self.clickhouse_url)
        prover = Prover(archive_from_spec(self.spec), clickhouse, Verifier.from_key(self.verifier_key), ORIGIN)
        return prover, clickhouse.close


def _tenant_rows(deployment: Deployment) -> int:
    ((n,),) = deployment.sql(f"SELECT count() FROM {LOGS_TABLE} WHERE tenant_id = '{TENANT}'")
    return int(n)


def test_read_export_rows_reads_a_tenants_rows_in_time_order(deployment: Deployment) -> None:
    expected = _tenant_rows(deployment)
    with pipeline() as p:
        rows = (
            p
            | beam.Create([ExportQuery(TENANT)])
            | beam.ParDo(ReadExportRows(deployment.clickhouse_url))
            | beam.combiners.ToList()
            | beam.Map(lambda rows: (len(rows), len({(r["log_id"], r["leaf_index"]) for r in rows}), _sorted(rows)))
        )
        assert_that(rows, equal_to([(expected, expected, True)]))


def _sorted(rows: list[dict[str, Any]]) -> bool:
    keys = [(r["occurred_at"], r["event_id"], r["log_id"], r["leaf_index"]) for r in rows]
    return keys == sorted(keys)


def _first_row(deployment: Deployment) -> dict[str, Any]:
    from pipelines.export import read_rows

    clickhouse = open_clickhouse(deployment.clickhouse_url)
    try:
        return next(read_rows(clickhouse, ExportQuery(TENANT)))
    finally:
        clickhouse.close()


def test_present_events_opens_pii_with_the_key_store_or_leaves_it_sealed(deployment: Deployment) -> None:
    row = _first_row(deployment)
    place = (row["occurred_at"], row["event_id"], row["log_id"], row["leaf_index"])
    with pipeline() as p:
        rows = p | beam.Create([row])
        opened = rows | "open" >> beam.ParDo(PresentEvents(OpenKeys())) | "o" >> beam.Map(_pii_shape)
        sealed = rows | "sealed" >> beam.ParDo(PresentEvents(None)) | "s" >> beam.Map(_pii_shape)
        assert_that(opened, equal_to([(place, "plain", row["canonical"])]), label="opened")
        assert_that(sealed, equal_to([(place, "sealed", row["canonical"])]), label="sealed")


def _pii_shape(presented: tuple[Any, dict[str, Any], bytes]) -> tuple[Any, str, bytes]:
    key, record, canonical = presented
    email = record["actor"]["email"]
    return key, "sealed" if email == SEALED else "plain" if "@" in email else email, canonical


def test_write_export_files_writes_each_format_in_order_and_a_proof_per_event(
    deployment: Deployment, tmp_path: Path
) -> None:
    from pipelines.export import read_rows
    from schemas.present import present_event

    clickhouse = open_clickhouse(deployment.clickhouse_url)
    try:
        rows = list(read_rows(clickhouse, ExportQuery(TENANT)))[:5]
    finally:
        clickhouse.close()
    records = [
        (
            (r["occurred_at"], r["event_id"], r["log_id"], r["leaf_index"]),
            present_event(r["canonical"], r, None),
            r["canonical"],
        )
        for r in rows
    ]
    out = tmp_path / "export"
    prover = OpenProver(deployment.spec, deployment.clickhouse_url, deployment.verifier_key)
    with pipeline() as p:
        files = (
            p
            | beam.Create([list(reversed(records))])  # the step sorts them
            | beam.ParDo(WriteExportFiles(str(out), ("csv", "jsonl", "parquet"), prover))
        )
        assert_that(
            files,
            equal_to(
                [
                    {"name": "events.csv", "rows": 5},
                    {"name": "events.jsonl", "rows": 5},
                    {"name": "events.parquet", "rows": 5},
                    {"proofs": 5},
                ]
            ),
        )
    lines = (out / "events.jsonl").read_text().splitlines()
    assert [json.loads(line)["event_id"] for line in lines] == [r["event_id"] for r in rows]
    assert len(list((out / "proofs").glob("*.tlog-proof"))) == 5
