"""Recordings of Kafka topics: every record of a topic, kept in one versioned Parquet file.

`auditlog record` writes them, `auditlog replay` writes them back into a topic, and
`auditlog ingest --from-recording` runs the ingest job on one with no broker. CI replays the
recording committed under `tests/testdata/recording/` and compares the tree heads with golden
ones (docs/design.md §6)::

    auditlog record --topic audit.events --out audit-events.parquet          # to the end offsets seen at start
    auditlog record --topic audit.events --out first-1000.parquet --max 1000
    auditlog replay audit-events.parquet --topic audit.copy --preserve-partitions
    AUDITLOG_KEY_SEED=ci auditlog ingest --from-recording audit-events.parquet

The format's description, its writer and its reader stay in this one module (about 470 lines, on
purpose): a change to the format is then one reviewable change to all three.

Format, version 1
-----------------
One Parquet file, zstd-compressed, one row per Kafka record:

==============  =========================================  ==========================================
column          Arrow type                                 meaning
==============  =========================================  ==========================================
partition       int32, not null                            the record's partition
offset          int64, not null                            its offset in that partition
timestamp_ms    int64, not null                            its timestamp, ms since the Unix epoch
                                                           (-1 when the record has none)
timestamp_type  string, not null                           ``CreateTime``, ``LogAppendTime`` or
                                                           ``NoTimestampType`` (Kafka's names)
key             binary, nullable                           the key bytes; null = no key
value           binary, nullable                           the value bytes; null = a tombstone
headers         list<struct<key: string not null,          the headers in record order, repeated
                value: binary nullable>>, not null         keys kept; an empty list when none
==============  =========================================  ==========================================

Rows of one partition appear in ascending offset order, which is the order a consumer saw them;
rows of different partitions may interleave. Offsets can have gaps (compaction, transaction
markers, aborted transactions): a consumer in `read_committed` mode never saw those.

File-level key-value metadata (UTF-8 strings; readers refuse a file without the version key, or
with a version they do not know):

=================================  ===========================================================
key                                value
=================================  ===========================================================
auditlog.recording.version         ``1``
auditlog.recording.topic           the topic recorded
auditlog.recording.partitions      its partition count when recording began
auditlog.recording.recorded_at     when recording began, ISO-8601 UTC (``2026-05-01T12:00:00Z``)
auditlog.recording.start_offsets   JSON ``{"partition": first offset read}`` (the low watermarks)
auditlog.recording.end_offsets     JSON ``{"partition": end offset}``: the end (exclusive) seen
                                   when recording began; recording stops there
auditlog.recording.records         the number of rows
auditlog.recording.complete        ``true`` if every partition was read to its end offset,
                                   ``false`` if ``--max`` (or Ctrl-C) stopped the recording first
auditlog.recording.source          where the records came from, e.g. ``kafka 127.0.0.1:9092``
=================================  ===========================================================

This module only reads and writes the format (pyarrow, no Kafka and no Flink).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from transforms.errors import AuditlogError

__all__ = [
    "FORMAT_VERSION",
    "RECORDING_SCHEMA",
    "TIMESTAMP_TYPES",
    "RecordedRecord",
    "RecordingFormatError",
    "RecordingInfo",
    "RecordingWriter",
    "iter_records",
    "oldest_timestamp_ms",
    "read_info",
    "write_recording",
]

FORMAT_VERSION = 1
META_PREFIX = "auditlog.recording."
VERSION_KEY = META_PREFIX + "version"

CREATE_TIME = "CreateTime"
LOG_APPEND_TIME = "LogAppendTime"
NO_TIMESTAMP = "NoTimestampType"
TIMESTAMP_TYPES = (NO_TIMESTAMP, CREATE_TIME, LOG_APPEND_TIME)
"""Kafka's timestamp types by their Java names; index = librdkafka's TIMESTAMP_* code."""

HEADER_TYPE = pa.struct([pa.field("key", pa.string(), nullable=False), pa.field("value", pa.binary())])
RECORDING_SCHEMA = pa.schema(
    [
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("timestamp_ms", pa.int64(), nullable=False),
        pa.field("timestamp_type", pa.string(), nullable=False),
        pa.field("key", pa.binary(), nullable=True),
        pa.field("value", pa.binary(), nullable=True),
        pa.field("headers", pa.list_(pa.field("item", HEADER_TYPE, nullable=False)), nullable=False),
    ]
)

COMPRESSION = "zstd"
COMPRESSION_LEVEL = 9
BATCH_ROWS = 10_000
ROW_GROUP_ROWS = 100_000
_DICTIONARY_COLUMNS = ["partition", "timestamp_type", "key", "headers.list.item.key"]
_STATISTICS_COLUMNS = ["partition", "offset", "timestamp_ms"]


class RecordingFormatError(AuditlogError, ValueError):
    """A file is not a recording this version of auditlog can read (or it is damaged)."""


class RecordedRecord(NamedTuple):
    """One Kafka record as recorded."""

    partition: int
    offset: int
    timestamp_ms: int
    timestamp_type: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()


@dataclass(frozen=True)
class RecordingInfo:
    """The file-level metadata of a recording (see the module docstring for each key)."""

    topic: str
    partitions: int
    recorded_at: str
    start_offsets: dict[int, int] = field(default_factory=dict)
    end_offsets: dict[int, int] = field(default_factory=dict)
    records: int = 0
    complete: bool = True
    source: str = ""
    version: int = FORMAT_VERSION

    def to_metadata(self) -> dict[str, str]:
        """The Parquet key-value metadata that stores this info."""
        return {
            VERSION_KEY: str(self.version),
            META_PREFIX + "topic": self.topic,
            META_PREFIX + "partitions": str(self.partitions),
            META_PREFIX + "recorded_at": self.recorded_at,
            META_PREFIX + "start_offsets": _offsets_json(self.start_offsets),
            META_PREFIX + "end_offsets": _offsets_json(self.end_offsets),
            META_PREFIX + "records": str(self.records),
            META_PREFIX + "complete": "true" if self.complete else "false",
            META_PREFIX + "source": self.source,
        }

    @classmethod
    def from_metadata(cls, metadata: Mapping[bytes, bytes] | None, where: str) -> RecordingInfo:
        """Reads and checks the metadata of the file `where`.

        Raises:
            RecordingFormatError: the file is not a recording, has another format version, or a
                metadata value is missing or malformed.
        """
        meta = {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in (metadata or {}).items()}
        version = meta.get(VERSION_KEY)
        if version is None:
            raise RecordingFormatError(
                f"{where} is not an auditlog recording: its Parquet metadata has no {VERSION_KEY!r} "
                "(make recordings with `auditlog record`)"
            )
        if version != str(FORMAT_VERSION):
            raise RecordingFormatError(
                f"{where} is a recording in format version {version!r}, and this auditlog reads only "
                f"version {FORMAT_VERSION}; use the auditlog release that wrote it, or record the topic again"
            )

        def get(name: str) -> str:
            try:
                return meta[META_PREFIX + name]
            except KeyError:
                raise RecordingFormatError(f"{where}: recording metadata lacks {META_PREFIX + name!r}") from None

        try:
            return cls(
                topic=get("topic"),
                partitions=int(get("partitions")),
                recorded_at=get("recorded_at"),
                start_offsets=_offsets_from_json(get("start_offsets")),
                end_offsets=_offsets_from_json(get("end_offsets")),
                records=int(get("records")),
                complete={"true": True, "false": False}[get("complete")],
                source=meta.get(META_PREFIX + "source", ""),
                version=FORMAT_VERSION,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RecordingFormatError(f"{where}: recording metadata is malformed ({exc!r})") from None


def _offsets_json(offsets: Mapping[int, int]) -> str:
    return json.dumps({str(p): int(o) for p, o in sorted(offsets.items())}, separators=(",", ":"))


def _offsets_from_json(text: str) -> dict[int, int]:
    obj = json.loads(text)
    if not isinstance(obj, dict):
        raise ValueError(f"offsets {text!r} are not a JSON object")
    return {int(p): int(o) for p, o in obj.items()}


def utc_now() -> str:
    """The current time as the `recorded_at` value: ISO-8601 UTC, whole seconds."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- writing


class RecordingWriter:
    """Writes a recording record by record, in bounded memory; the file appears only on `close`.

    Records are spooled to an Arrow stream beside the target and turned into the Parquet file,
    with its final metadata, by `close` (pyarrow 16 cannot add metadata to an open Parquet file).
    The target is replaced atomically, so an interrupted recording never leaves half a file.

        with RecordingWriter(path, topic, partitions, start, end, source="kafka ...") as out:
            for record in records:
                out.write(record)
            out.complete = False   # if stopped early
        out.info                   # what was written
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        topic: str,
        partitions: int,
        start_offsets: Mapping[int, int] | None = None,
        end_offsets: Mapping[int, int] | None = None,
        recorded_at: str | None = None,
        source: str = "",
    ) -> None:
        self.path = Path(path)
        self.topic = topic
        self.partitions = partitions
        self.start_offsets = dict(start_offsets or {})
        self.end_offsets = dict(end_offsets or {})
        self.recorded_at = recorded_at or utc_now()
        self.source = source
        self.complete = True
        self.info: RecordingInfo | None = None
        self.records = 0
        self._rows: list[RecordedRecord] = []
        self._last_offsets: dict[int, int] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._spool_path = self.path.with_name(f".{self.path.name}.spool")
        self._spool_file = pa.OSFile(str(self._spool_path), "wb")
        self._spool = pa.ipc.new_stream(self._spool_file, RECORDING_SCHEMA)

    def write(self, record: RecordedRecord) -> None:
        """Adds one record; requires offsets of a partition to arrive in ascending order."""
        if record.timestamp_type not in TIMESTAMP_TYPES:
            raise ValueError(
                f"timestamp type {record.timestamp_type!r} of {record.partition}/{record.offset} "
                f"is not one of {', '.join(TIMESTAMP_TYPES)}"
            )
        last = self._last_offsets.get(record.partition, -1)
        if record.offset <= last:
            raise ValueError(
                f"partition {record.partition}: offset {record.offset} comes after offset {last}; "
                "a recording keeps each partition in ascending offset order"
            )
        self._last_offsets[record.partition] = record.offset
        self._rows.append(record)
        self.records += 1
        if len(self._rows) >= BATCH_ROWS:
            self._flush_rows()

    def _flush_rows(self) -> None:
        if self._rows:
            self._spool.write_batch(_to_batch(self._rows))
            self._rows = []

    def close(self) -> RecordingInfo:
        """Writes the Parquet file with its metadata; returns the info written."""
        if self.info is not None:
            return self.info
        self._flush_rows()
        self._spool.close()
        self._spool_file.close()
        info = RecordingInfo(
            topic=self.topic,
            partitions=self.partitions,
            recorded_at=self.recorded_at,
            start_offsets=self.start_offsets,
            end_offsets=self.end_offsets,
            records=self.records,
            complete=self.complete,
            source=self.source,
        )
        partial = self.path.with_name(f".{self.path.name}.partial")
        try:
            schema = RECORDING_SCHEMA.with_metadata(info.to_metadata())
            with (
                pq.ParquetWriter(
                    str(partial),
                    schema,
                    compression=COMPRESSION,
                    compression_level=COMPRESSION_LEVEL,
                    use_dictionary=_DICTIONARY_COLUMNS,
                    write_statistics=_STATISTICS_COLUMNS,
                ) as parquet,
                pa.memory_map(str(self._spool_path)) as source,
            ):
                pending: list[pa.RecordBatch] = []
                rows = 0
                for batch in pa.ipc.open_stream(source):
                    pending.append(batch)
                    rows += batch.num_rows
                    if rows >= ROW_GROUP_ROWS:
                        parquet.write_table(pa.Table.from_batches(pending, schema=schema))
                        pending, rows = [], 0
                if pending or self.records == 0:
                    parquet.write_table(pa.Table.from_batches(pending, schema=schema))
            os.replace(partial, self.path)
        finally:
            partial.unlink(missing_ok=True)
            self._spool_path.unlink(missing_ok=True)
        self.info = info
        return info

    def abort(self) -> None:
        """Drops everything written so far; no file is made."""
        if self.info is None:
            self._spool.close()
            self._spool_file.close()
            self._spool_path.unlink(missing_ok=True)

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None or exc_type is KeyboardInterrupt:
            if exc_type is KeyboardInterrupt:
                self.complete = False
            self.close()
        else:
            self.abort()


def _to_batch(rows: list[RecordedRecord]) -> pa.RecordBatch:
    columns = list(zip(*rows, strict=True))
    headers = [[{"key": k, "value": v} for k, v in hs] for hs in columns[6]]
    return pa.RecordBatch.from_arrays(
        [
            pa.array(columns[0], pa.int32()),
            pa.array(columns[1], pa.int64()),
            pa.array(columns[2], pa.int64()),
            pa.array(columns[3], pa.string()),
            pa.array(columns[4], pa.binary()),
            pa.array(columns[5], pa.binary()),
            pa.array(headers, RECORDING_SCHEMA.field("headers").type),
        ],
        schema=RECORDING_SCHEMA,
    )


def write_recording(
    path: str | os.PathLike[str],
    records: Iterable[RecordedRecord],
    topic: str,
    partitions: int,
    start_offsets: Mapping[int, int] | None = None,
    end_offsets: Mapping[int, int] | None = None,
    recorded_at: str | None = None,
    source: str = "",
    complete: bool = True,
) -> RecordingInfo:
    """Writes a whole recording at once (what `RecordingWriter` does record by record)."""
    writer = RecordingWriter(path, topic, partitions, start_offsets, end_offsets, recorded_at, source)
    try:
        for record in records:
            writer.write(record)
    except BaseException:
        writer.abort()
        raise
    writer.complete = complete
    return writer.close()


# --------------------------------------------------------------------------- reading


def _open(path: str | os.PathLike[str]) -> tuple[pq.ParquetFile, RecordingInfo]:
    where = str(path)
    try:
        parquet = pq.ParquetFile(where)
    except FileNotFoundError:
        raise FileNotFoundError(f"recording {where} does not exist") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise RecordingFormatError(f"{where} is not a Parquet file ({exc})") from None
    info = RecordingInfo.from_metadata(parquet.schema_arrow.metadata, where)
    schema = parquet.schema_arrow.remove_metadata()
    if not schema.equals(RECORDING_SCHEMA):
        raise RecordingFormatError(
            f"{where}: the columns do not match recording format version {FORMAT_VERSION}: "
            f"expected {RECORDING_SCHEMA}, found {schema}"
        )
    rows = parquet.metadata.num_rows
    if rows != info.records:
        raise RecordingFormatError(
            f"{where}: metadata says {info.records} records but the file holds {rows}; the file is damaged"
        )
    return parquet, info


def read_info(path: str | os.PathLike[str]) -> RecordingInfo:
    """The metadata of a recording, checked (format version, columns, row count).

    Raises:
        FileNotFoundError: no file at `path`.
        RecordingFormatError: not a recording, or a format version this auditlog does not read.
    """
    return _open(path)[1]


def iter_records(path: str | os.PathLike[str]) -> Iterator[RecordedRecord]:
    """Yields the records of a recording in file order (offset order within each partition).

    Raises:
        FileNotFoundError, RecordingFormatError: as `read_info`, before the first record.
    """
    parquet, _ = _open(path)
    return _records(parquet)


def _records(parquet: pq.ParquetFile) -> Iterator[RecordedRecord]:
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS):
        columns = [batch.column(i).to_pylist() for i in range(6)]
        headers = batch.column(6).to_pylist()
        for partition, offset, timestamp_ms, timestamp_type, key, value, record_headers in zip(
            *columns, headers, strict=True
        ):
            yield RecordedRecord(
                partition,
                offset,
                timestamp_ms,
                timestamp_type,
                key,
                value,
                tuple((h["key"], h["value"]) for h in record_headers),
            )


def oldest_timestamp_ms(path: str | os.PathLike[str]) -> int | None:
    """The smallest record timestamp in a recording (records without one ignored), or None."""
    import pyarrow.compute as pc

    parquet, _ = _open(path)
    column = parquet.read(columns=["timestamp_ms"]).column("timestamp_ms")
    stamped = pc.filter(column, pc.greater_equal(column, 0))
    oldest = pc.min(stamped).as_py()
    return None if oldest is None else int(oldest)
