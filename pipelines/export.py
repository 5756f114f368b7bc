"""Export: one tenant's events for a time range and filters, as CSV, JSON Lines or Parquet, with a signed manifest.

    auditlog export --tenant t_1000 --from 2026-11-01 --to 2026-12-01 --format csv,jsonl,parquet
        [--actor A] [--action A] [--resource-type T] [--resource-id R] [--result R] [--proofs] --out DIR
    auditlog verify-export DIR --key VKEY

A Beam pipeline reads the matching rows from ClickHouse page by page (parameterised SQL, keyset
pagination in the table's own order), presents each event (schemas/present.py: PII opened with
the key store, erased subjects shown as erased), and writes one file per format. The manifest
(MANIFEST.note) is a C2SP signed note, signed with the deployment's checkpoint key like a
checkpoint: its text is the canonical JSON of the files (name, SHA-256, rows, bytes), the query,
and each log's newest checkpoint at export time. With --proofs every exported event also gets a
tlog-proof@v1 bundle under proofs/, checkable offline with `auditlog verify-proof`.

CSV cells that a spreadsheet would run as a formula — those beginning with `=`, `+`, `-`, `@`,
a tab or a carriage return — are written with a single quote in front (OWASP's advice against CSV
injection), and the manifest says so (`csv`): to get such a value back, drop that one quote.
JSON Lines and Parquet hold the values as they are.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import apache_beam as beam

from pipelines.io.clickhouse import LOGS_TABLE, NOT_EXPIRED, open_clickhouse
from schemas.present import FLAT_COLUMNS, KeyLookup, flatten, present_event
from transforms.errors import AuditlogError
from transforms.jcs import canonicalize
from transforms.note import Signer, Verifier, open_note, sign_note

if TYPE_CHECKING:
    from pipelines.prover import Prover

FORMATS = ("csv", "jsonl", "parquet")
MANIFEST_FILE = "MANIFEST.note"
MANIFEST_VERSION = "auditlog-export/v1"
PAGE_ROWS = 5000
CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
CSV_NEUTRALISED = {
    "formula_prefix": "'",
    "applies_to": "cells beginning with = + - @ TAB or CR",
    "why": "a spreadsheet would run such a cell as a formula (OWASP CSV injection); drop the one leading ' "
    "of such a cell to get the value",
}


class ExportKeys(KeyLookup, Protocol):
    """What presenting events needs of a key store: its lookups, and closing it when the step ends."""

    def close(self) -> None: ...


# Openers run inside the pipeline's steps (so they are picklable callables, not open stores):
# one opens the key store, the other a Prover and the function that closes what it holds.
OpenKeys = Callable[[], ExportKeys]
OpenProver = Callable[[], "tuple[Prover, Callable[[], None]]"]

FILTER_COLUMNS = {
    "actor_id": "actor_id",
    "action": "action",
    "resource_type": "resource_type",
    "resource_id": "resource_id",
    "result": "result",
}


@dataclass(frozen=True)
class ExportQuery:
    """What to export: a tenant, a half-open time range [start, end), equality filters."""

    tenant_id: str
    start: str | None = None  # canonical UTC times (…mmmZ)
    end: str | None = None
    filters: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.filters) - set(FILTER_COLUMNS))
        if unknown:
            raise ValueError(f"unknown export filter(s) {unknown}; use {sorted(FILTER_COLUMNS)}")

    def where(self) -> tuple[str, dict[str, Any]]:
        """The WHERE clause with `{name:Type}` placeholders, and its parameters (values never enter the SQL)."""
        clauses = ["tenant_id = {tenant:String}"]
        params: dict[str, Any] = {"tenant": self.tenant_id}
        if self.start:
            clauses.append("occurred_at >= parseDateTime64BestEffort({start:String}, 3, 'UTC')")
            params["start"] = self.start
        if self.end:
            clauses.append("occurred_at < parseDateTime64BestEffort({end:String}, 3, 'UTC')")
            params["end"] = self.end
        for name, value in sorted(self.filters.items()):
            clauses.append(f"toString({FILTER_COLUMNS[name]}) = {{f_{name}:String}}")
            params[f"f_{name}"] = value
        clauses.append(NOT_EXPIRED)
        return " AND ".join(clauses), params

    def to_json(self) -> dict[str, Any]:
        return {"tenant_id": self.tenant_id, "start": self.start, "end": self.end, "filters": dict(self.filters)}


def read_rows(clickhouse: Any, query: ExportQuery, page_rows: int = PAGE_ROWS) -> Iterator[dict[str, Any]]:
    """Yields the query's rows in (occurred_at, event_id, log_id, leaf_index) order, one page at a time."""
    where, params = query.where()
    after: tuple[Any, ...] | None = None
    while True:
        page_where = where
        page_params = dict(params)
        if after is not None:
            page_where += (
                " AND (occurred_at, event_id, log_id, leaf_index) > "
                "(parseDateTime64BestEffort({a_t:String}, 3, 'UTC'), {a_e:String}, {a_l:String}, {a_i:UInt64})"
            )
            page_params.update(a_t=after[0], a_e=after[1], a_l=after[2], a_i=after[3])
        rows = clickhouse.query(
            "SELECT formatDateTime(occurred_at, '%Y-%m-%dT%H:%i:%S.%fZ'), event_id, toString(log_id), leaf_index, "
            f"block_index, hex(leaf_hash), hex(block_hash), canonical FROM {LOGS_TABLE} WHERE {page_where} "
            f"ORDER BY occurred_at, event_id, log_id, leaf_index LIMIT {int(page_rows)}",
            page_params,
        )
        for occurred, event_id, log_id, leaf_index, block_index, leaf_hex, block_hex, canonical in rows:
            yield {
                "occurred_at": occurred,
                "event_id": event_id,
                "log_id": log_id,
                "leaf_index": int(leaf_index),
                "block_index": int(block_index),
                "leaf_hash": leaf_hex.lower(),
                "block_hash": block_hex.lower(),
                "canonical": canonical.encode() if isinstance(canonical, str) else bytes(canonical),
            }
        if len(rows) < page_rows:
            return
        last = rows[-1]
        after = (last[0], last[1], last[2], int(last[3]))


# --------------------------------------------------------------------------- the Beam steps


class ReadExportRows(beam.DoFn):
    """ExportQuery → its rows, paged from ClickHouse."""

    def __init__(self, clickhouse_url: str):
        self.clickhouse_url = clickhouse_url

    def process(self, query: ExportQuery) -> Iterator[dict[str, Any]]:
        clickhouse = open_clickhouse(self.clickhouse_url)
        try:
            yield from read_rows(clickhouse, query)
        finally:
            clickhouse.close()


class PresentEvents(beam.DoFn):
    """row → (sort key, presented record, canonical bytes, place); PII opened with the key store if one is given."""

    def __init__(self, keystore_opener: OpenKeys | None):
        self.keystore_opener = keystore_opener

    def setup(self) -> None:
        self.keys: ExportKeys | None = self.keystore_opener() if self.keystore_opener else None

    def teardown(self) -> None:
        if self.keys is not None:
            self.keys.close()

    def process(self, row: dict[str, Any]) -> Iterator[tuple[tuple[Any, ...], dict[str, Any], bytes]]:
        record = present_event(row["canonical"], row, self.keys)
        key = (row["occurred_at"], row["event_id"], row["log_id"], row["leaf_index"])
        yield key, record, row["canonical"]


class WriteExportFiles(beam.DoFn):
    """All presented records → the export files (sorted), and proof bundles on request."""

    def __init__(self, out_dir: str, formats: tuple[str, ...], prover_opener: OpenProver | None):
        self.out_dir = out_dir
        self.formats = formats
        self.prover_opener = prover_opener

    def process(self, records: list[tuple[tuple[Any, ...], dict[str, Any], bytes]]) -> Iterator[dict[str, Any]]:
        records = sorted(records, key=lambda r: r[0])
        out = Path(self.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        presented = [r[1] for r in records]
        for fmt in self.formats:
            path = out / f"events.{fmt}"
            _WRITERS[fmt](path, presented)
            yield {"name": path.name, "rows": len(presented)}
        if self.prover_opener:
            yield from self._proofs(self.prover_opener, out, records)

    def _proofs(
        self, prover_opener: OpenProver, out: Path, records: list[tuple[tuple[Any, ...], dict[str, Any], bytes]]
    ) -> Iterator[dict[str, Any]]:
        prover, close = prover_opener()
        proofs = out / "proofs"
        proofs.mkdir(exist_ok=True)
        try:
            for _, record, canonical in records:
                proof = prover.proof_at(
                    record["tenant_id"], record["event_id"], record["log_id"], record["leaf_index"], canonical
                )
                stem = f"{record['log_id']}.{record['leaf_index']}"
                (proofs / f"{stem}.json").write_bytes(canonical)
                (proofs / f"{stem}.tlog-proof").write_text(proof.text)
        finally:
            close()
        yield {"proofs": len(records)}


def neutralise_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet cannot run: text beginning with = + - @ TAB or CR gets a leading '."""
    if isinstance(value, str) and value.startswith(CSV_FORMULA_START):
        return "'" + value
    return value


def _write_csv(path: Path, records: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=FLAT_COLUMNS)
        writer.writeheader()
        for record in records:
            writer.writerow({k: neutralise_cell(v) for k, v in flatten(record).items()})


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n")


def _write_parquet(path: Path, records: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {"leaf_index": pa.int64(), "block_index": pa.int64()}
    schema = pa.schema([(c, types.get(c, pa.string())) for c in FLAT_COLUMNS])
    rows = [flatten(r) for r in records]
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table, path)


_WRITERS = {"csv": _write_csv, "jsonl": _write_jsonl, "parquet": _write_parquet}


class Export(beam.PTransform[beam.PCollection[ExportQuery], beam.PCollection[dict[str, Any]]]):
    """ExportQuery → file descriptions: read, present, write."""

    def __init__(
        self,
        clickhouse_url: str,
        out_dir: str,
        formats: tuple[str, ...],
        keystore_opener: OpenKeys | None,
        prover_opener: OpenProver | None,
    ):
        super().__init__()
        self.clickhouse_url = clickhouse_url
        self.out_dir = out_dir
        self.formats = formats
        self.keystore_opener = keystore_opener
        self.prover_opener = prover_opener

    def expand(self, queries: beam.PCollection[ExportQuery]) -> beam.PCollection[dict[str, Any]]:
        files: beam.PCollection[dict[str, Any]] = (
            queries
            | "Read rows" >> beam.ParDo(ReadExportRows(self.clickhouse_url))
            | "Present" >> beam.ParDo(PresentEvents(self.keystore_opener))
            | "Gather" >> beam.combiners.ToList()
            | "Write files" >> beam.ParDo(WriteExportFiles(self.out_dir, self.formats, self.prover_opener))
        )
        return files


# --------------------------------------------------------------------------- the manifest


class ManifestError(AuditlogError, ValueError):
    """An export's manifest does not verify, or a file disagrees with it."""


def build_manifest(
    out_dir: Path, query: ExportQuery, formats: tuple[str, ...], rows: int, proofs: int, heads: Mapping[str, str]
) -> dict[str, Any]:
    files = []
    for fmt in formats:
        path = out_dir / f"events.{fmt}"
        data = path.read_bytes()
        files.append({"name": path.name, "sha256": sha256(data).hexdigest(), "bytes": len(data), "rows": rows})
    manifest = {
        "version": MANIFEST_VERSION,
        "created_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "query": query.to_json(),
        "rows": rows,
        "files": files,
        "proofs": proofs,
        "checkpoints": dict(sorted(heads.items())),
    }
    if "csv" in formats:
        manifest["csv"] = dict(CSV_NEUTRALISED)
    return manifest


def sign_manifest(manifest: Mapping[str, Any], signer: Signer) -> str:
    """The manifest as a signed note: its canonical JSON on one line, then the signature."""
    return sign_note(canonicalize(dict(manifest)).decode() + "\n", signer)


def verify_export(out_dir: Path, verifier: Verifier) -> dict[str, Any]:
    """Checks MANIFEST.note's signature and every listed file's SHA-256; returns the manifest.

    Raises:
        ManifestError: a file is missing or altered, or the manifest is not what it claims.
        VerificationError: the signature does not verify with `verifier`.
    """
    note_path = out_dir / MANIFEST_FILE
    if not note_path.is_file():
        raise ManifestError(f"no {MANIFEST_FILE} in {out_dir}")
    text = open_note(note_path.read_text(), verifier).text
    manifest: dict[str, Any] = json.loads(text)
    if manifest.get("version") != MANIFEST_VERSION:
        raise ManifestError(f"{note_path}: not an {MANIFEST_VERSION} manifest")
    for entry in manifest["files"]:
        path = out_dir / entry["name"]
        if not path.is_file():
            raise ManifestError(f"{entry['name']} is listed in the manifest but missing")
        digest = sha256(path.read_bytes()).hexdigest()
        if digest != entry["sha256"]:
            raise ManifestError(f"{entry['name']} was altered: SHA-256 {digest}, the manifest says {entry['sha256']}")
    return manifest


def archive_heads(archive: Any) -> dict[str, str]:
    """{log id: newest signed checkpoint} of every log in the archive, for an export's manifest."""
    heads = {}
    for log_id in archive.list_logs():
        latest = archive.latest_checkpoint(log_id)
        if latest:
            heads[log_id] = latest[1]
    return heads


def run_export(
    query: ExportQuery,
    out_dir: Path,
    formats: tuple[str, ...],
    clickhouse_url: str,
    signer: Signer,
    heads: Mapping[str, str],
    keystore_opener: OpenKeys | None = None,
    prover_opener: OpenProver | None = None,
    beam_args: list[str] | None = None,
) -> dict[str, Any]:
    """Runs the export pipeline, then writes and returns the signed manifest."""
    from apache_beam.options.pipeline_options import PipelineOptions

    bad = sorted(set(formats) - set(FORMATS))
    if bad:
        raise ValueError(f"unknown export format(s) {bad}; use {list(FORMATS)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / MANIFEST_FILE).exists():
        raise FileExistsError(f"{out_dir} already holds an export ({MANIFEST_FILE}); choose an empty --out")
    with beam.Pipeline(options=PipelineOptions(beam_args or [])) as p:
        _ = (
            p
            | "Query" >> beam.Create([query])
            # An absolute path: the steps may run in a worker process with another working directory.
            | "Export" >> Export(clickhouse_url, str(out_dir.resolve()), formats, keystore_opener, prover_opener)
        )
    rows = _count_rows(out_dir, formats)
    proofs_dir = out_dir / "proofs"
    proofs = len(list(proofs_dir.glob("*.tlog-proof"))) if proofs_dir.is_dir() else 0
    manifest = build_manifest(out_dir, query, formats, rows, proofs, heads)
    (out_dir / MANIFEST_FILE).write_text(sign_manifest(manifest, signer))
    return manifest


def _count_rows(out_dir: Path, formats: tuple[str, ...]) -> int:
    if "jsonl" in formats:
        return sum(1 for _ in (out_dir / "events.jsonl").open("rb"))
    if "csv" in formats:
        with (out_dir / "events.csv").open(newline="", encoding="utf-8") as f:
            return sum(1 for _ in csv.reader(f)) - 1
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(out_dir / "events.parquet").metadata.num_rows)
