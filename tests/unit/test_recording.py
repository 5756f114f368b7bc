"""The recording format (pipelines/recording.py), the committed recording, and the golden check.

.venv/bin/python -m pytest tests/unit/test_recording.py
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.ingest_core import CUT_MARKER
from pipelines.recording import (
    CREATE_TIME,
    LOG_APPEND_TIME,
    NO_TIMESTAMP,
    RECORDING_SCHEMA,
    RecordedRecord,
    RecordingFormatError,
    RecordingInfo,
    RecordingWriter,
    iter_records,
    oldest_timestamp_ms,
    read_info,
    write_recording,
)
from schemas.events import EventValidationError, parse_event
from tests.golden import (
    GOLDEN,
    RECORDING,
    BlockSummary,
    Golden,
    LogHead,
    differences,
    heads_by_sequencer,
)

RECORDS = [
    RecordedRecord(0, 0, 1_777_593_600_000, CREATE_TIME, b"t_1000", b'{"a":1}', ()),
    RecordedRecord(1, 5, 1_777_593_600_001, LOG_APPEND_TIME, None, b"v", (("traceparent", b"00-ab-cd-01"),)),
    RecordedRecord(0, 1, -1, NO_TIMESTAMP, b"t_1000", None, (("x", None), ("x", b"again"), ("", b""))),
    RecordedRecord(1, 9, 1_777_593_600_002, CREATE_TIME, b"", b"", ()),
    RecordedRecord(2, 0, 0, CREATE_TIME, b"\x00\xff binary", b"\x00" * 3000, (("k", b"\xff\xfe"),)),
]
START = {0: 0, 1: 5, 2: 0, 3: 0}
END = {0: 2, 1: 10, 2: 1, 3: 0}


def _write(path: Path, records: list[RecordedRecord] = RECORDS, **kwargs: object) -> RecordingInfo:
    options: dict[str, object] = {"start_offsets": START, "end_offsets": END, "recorded_at": "2026-05-01T12:00:00Z"}
    options.update(kwargs)
    return write_recording(path, records, "audit.events", 4, **options)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the format


def test_round_trip_keeps_every_field_null_keys_values_and_headers(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    _write(path)

    assert list(iter_records(path)) == RECORDS


def test_metadata_round_trips_and_is_stored_as_documented(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    written = _write(path, source="kafka 127.0.0.1:9092")

    info = read_info(path)
    assert info == written
    assert info == RecordingInfo(
        topic="audit.events",
        partitions=4,
        recorded_at="2026-05-01T12:00:00Z",
        start_offsets=START,
        end_offsets=END,
        records=len(RECORDS),
        complete=True,
        source="kafka 127.0.0.1:9092",
    )
    raw = {k.decode(): v.decode() for k, v in pq.ParquetFile(path).schema_arrow.metadata.items()}
    assert raw["auditlog.recording.version"] == "1"
    assert raw["auditlog.recording.topic"] == "audit.events"
    assert raw["auditlog.recording.partitions"] == "4"
    assert json.loads(raw["auditlog.recording.end_offsets"]) == {"0": 2, "1": 10, "2": 1, "3": 0}
    assert raw["auditlog.recording.complete"] == "true"


def test_the_columns_are_the_documented_schema(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    _write(path)
    parquet = pq.ParquetFile(path)

    assert parquet.schema_arrow.remove_metadata().equals(RECORDING_SCHEMA)
    assert [f.name for f in RECORDING_SCHEMA] == [
        "partition",
        "offset",
        "timestamp_ms",
        "timestamp_type",
        "key",
        "value",
        "headers",
    ]
    assert parquet.metadata.row_group(0).column(5).compression == "ZSTD"


def test_a_stopped_recording_says_it_is_incomplete(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    _write(path, complete=False)

    assert read_info(path).complete is False


def test_an_empty_recording_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    _write(path, records=[], start_offsets={0: 0}, end_offsets={0: 0})

    assert read_info(path).records == 0
    assert list(iter_records(path)) == []
    assert oldest_timestamp_ms(path) is None


def test_many_records_span_several_batches_in_order(tmp_path: Path) -> None:
    records = [RecordedRecord(i % 3, i // 3, i, CREATE_TIME, b"k", str(i).encode(), ()) for i in range(25_000)]
    path = tmp_path / "r.parquet"
    _write(path, records=records)

    assert list(iter_records(path)) == records
    assert read_info(path).records == 25_000


def test_oldest_timestamp_ignores_records_without_one(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    _write(path)

    assert oldest_timestamp_ms(path) == 0


def test_an_unknown_format_version_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "future.parquet"
    _write(path)
    table = pq.read_table(path)
    metadata = dict(table.schema.metadata)
    metadata[b"auditlog.recording.version"] = b"2"
    pq.write_table(table.replace_schema_metadata(metadata), path)

    with pytest.raises(RecordingFormatError, match=r"format version '2'.*reads only version 1"):
        read_info(path)
    with pytest.raises(RecordingFormatError, match="format version '2'"):
        iter_records(path)


def test_a_parquet_file_without_recording_metadata_is_not_a_recording(tmp_path: Path) -> None:
    path = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), path)

    with pytest.raises(RecordingFormatError, match="is not an auditlog recording.*auditlog record"):
        read_info(path)


def test_a_file_that_is_not_parquet_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.parquet"
    path.write_text("hello\n")

    with pytest.raises(RecordingFormatError, match="is not a Parquet file"):
        read_info(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_info(tmp_path / "missing.parquet")


def test_wrong_columns_or_a_wrong_record_count_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    _write(path)
    table = pq.read_table(path)
    pq.write_table(table.drop_columns(["headers"]).replace_schema_metadata(table.schema.metadata), path)
    with pytest.raises(RecordingFormatError, match="columns do not match"):
        read_info(path)

    metadata = dict(table.schema.metadata)
    metadata[b"auditlog.recording.records"] = b"99"
    pq.write_table(table.replace_schema_metadata(metadata), path)
    with pytest.raises(RecordingFormatError, match="says 99 records but the file holds 5"):
        read_info(path)


def test_the_writer_refuses_offsets_out_of_order_and_unknown_timestamp_types(tmp_path: Path) -> None:
    writer = RecordingWriter(tmp_path / "r.parquet", "t", 1)
    writer.write(RecordedRecord(0, 7, 0, CREATE_TIME, None, None))
    with pytest.raises(ValueError, match="offset 7 comes after offset 7"):
        writer.write(RecordedRecord(0, 7, 0, CREATE_TIME, None, None))
    with pytest.raises(ValueError, match="timestamp type 'Now'"):
        writer.write(RecordedRecord(0, 8, 0, "Now", None, None))
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_a_failed_recording_leaves_no_file_and_an_interrupted_one_is_marked_incomplete(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    with pytest.raises(RuntimeError), RecordingWriter(path, "t", 1) as writer:
        writer.write(RECORDS[0])
        raise RuntimeError("Kafka went away")
    assert list(tmp_path.iterdir()) == []

    with pytest.raises(KeyboardInterrupt), RecordingWriter(path, "t", 1) as writer:
        writer.write(RECORDS[0])
        raise KeyboardInterrupt
    assert read_info(path).complete is False
    assert list(iter_records(path)) == [RECORDS[0]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.parquet"]  # no spool or partial file left


# --------------------------------------------------------------------------- the committed recording


@pytest.fixture(scope="module")
def golden() -> Golden:
    return Golden.load()


@pytest.fixture(scope="module")
def committed() -> list[RecordedRecord]:
    return list(iter_records(RECORDING))


def test_the_committed_recording_is_the_one_the_goldens_were_made_from(golden: Golden) -> None:
    golden.check_recording()
    info = read_info(RECORDING)
    assert (info.topic, info.records, info.complete) == (golden.topic, golden.records, True)
    assert RECORDING.stat().st_size < 4_000_000


def test_the_committed_recording_holds_what_the_issue_asks_for(committed: list[RecordedRecord]) -> None:
    partitions = Counter(r.partition for r in committed)
    assert sorted(partitions) == [0, 1, 2, 3]

    events, malformed, ids = [], 0, Counter()
    for r in committed:
        if r.value is None or r.value == CUT_MARKER:
            continue
        try:
            event = parse_event(r.value)
        except EventValidationError:
            malformed += 1
            continue
        events.append((r.partition, event))
        ids[(event["tenant_id"], event["event_id"])] += 1
    assert len(ids) >= 20_000  # distinct events
    assert sum(n - 1 for n in ids.values()) > 300  # duplicates
    assert malformed > 200
    assert len({e["tenant_id"] for _, e in events}) >= 6
    assert sum(1 for r in committed if r.value is None) > 0  # tombstones
    assert sum(1 for r in committed if r.value == CUT_MARKER) >= 12  # cut markers, null keys
    assert sum(1 for r in committed if r.headers) > 1000
    assert any(v is None for r in committed for _, v in r.headers)
    assert any("email" in e["actor"] and "client_ip" in e for _, e in events)  # PII to seal
    backwards = sum(
        1
        for (p1, a), (p2, b) in zip(events, events[1:], strict=False)
        if p1 == p2 and b["occurred_at"] < a["occurred_at"]
    )
    assert backwards > 500  # event times out of order within partitions


def test_the_pure_core_gives_the_golden_heads_from_the_committed_recording(
    golden: Golden, committed: list[RecordedRecord]
) -> None:
    """The Flink job's golden heads, recomputed by LogSequencer alone (seconds, no services)."""
    heads, dead = heads_by_sequencer(committed, golden.topic, golden.block_size, golden.key_seed)

    assert differences(golden.logs, heads) == []
    assert dead == golden.dead_letters


# --------------------------------------------------------------------------- the golden check


def _tampered(logs: dict[str, LogHead], log_id: str, block: int, **changes: object) -> dict[str, LogHead]:
    head = logs[log_id]
    blocks = list(head.blocks)
    blocks[block] = dataclasses.replace(blocks[block], **changes)  # type: ignore[arg-type]
    return {**logs, log_id: dataclasses.replace(head, blocks=tuple(blocks))}


def test_a_changed_block_root_names_the_log_and_the_first_differing_block(golden: Golden) -> None:
    log_id = sorted(golden.logs)[2]
    want = golden.logs[log_id].blocks[3]
    got = _tampered(golden.logs, log_id, 3, root="00" * 32, hash="11" * 32)

    problems = differences(golden.logs, got)

    assert len(problems) == 1
    assert problems[0].startswith(
        f"log {log_id}: first differing block 3: expected root {want.root}, got {'00' * 32} (differs in root, hash"
    )


def test_only_the_first_differing_block_is_reported_per_log(golden: Golden) -> None:
    log_id = sorted(golden.logs)[0]
    got = _tampered(_tampered(golden.logs, log_id, 1, hash="22" * 32), log_id, 4, leaves=1)

    problems = differences(golden.logs, got)

    assert len(problems) == 1
    assert "first differing block 1:" in problems[0] and "(differs in hash;" in problems[0]


def test_missing_extra_and_shorter_logs_are_reported(golden: Golden) -> None:
    first, second = sorted(golden.logs)[:2]
    head = golden.logs[second]
    got = {k: v for k, v in golden.logs.items() if k != first}
    got[second] = LogHead(head.blocks[-2].tree_size, head.blocks[-2].tree_root, head.blocks[:-1])
    got["ci.audit.events.p9"] = LogHead(1, "ab" * 32, (BlockSummary(0, 1, "ab" * 32, 1, "ab" * 32, "cd" * 32),))

    problems = differences(golden.logs, got)

    assert (
        problems[0]
        == f"log {first}: missing (golden tree size {golden.logs[first].tree_size}, root {golden.logs[first].root})"
    )
    last = len(head.blocks) - 1
    assert problems[1].startswith(f"log {second}: first differing block {last}: expected root {head.blocks[-1].root}")
    assert "got no block" in problems[1]
    assert problems[2].startswith("log ci.audit.events.p9: not in the goldens")


def test_golden_json_round_trips(golden: Golden, tmp_path: Path) -> None:
    path = tmp_path / "golden.json"
    path.write_text(golden.to_json())

    assert Golden.load(path) == golden
    assert path.read_text() == GOLDEN.read_text()
