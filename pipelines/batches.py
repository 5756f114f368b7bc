"""The frames in which the ingest job's JVM batcher hands the sequencer a partition's records.

`auditlog.flink.RecordBatcher` (pipelines/jvm/) gathers each partition's records in the JVM and
calls Python once per batch with (partition, frame). A frame is the records in arrival order,
each as::

    offset     int64, big-endian
    timestamp  int64, big-endian (ms)
    key        int32 length (-1: null), then that many bytes
    value      the same
    signature  the same: the record's SERVICE_SIG_HEADER (schemas/reserved.py)

`read_batch` is what the job runs; `write_batch` is the same format written in Python, for tests.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from pipelines.ingest_core import SourceRecord

# One batch is cut at whichever comes first: BATCH_RECORDS records, BATCH_BYTES bytes of frame,
# or BATCH_LINGER_MS after its first record (the latency it adds at low rates). Every open batch
# also goes to Python before each checkpoint barrier, watermark and the end of input.
BATCH_RECORDS = 500
BATCH_BYTES = 1 << 20
BATCH_LINGER_MS = 50

_HEAD = struct.Struct(">qqi")
_LENGTH = struct.Struct(">i")


class FrameError(ValueError):
    """A frame that is not in the format above: a fault of the job's own plumbing, never of a record."""


def read_batch(partition: int, frame: bytes) -> list[SourceRecord]:
    """The records of one frame, in order."""
    records = []
    end = len(frame)
    pos = 0
    head, length = _HEAD.unpack_from, _LENGTH.unpack_from
    try:
        while pos < end:
            offset, timestamp_ms, n = head(frame, pos)
            pos += 20
            key = None if n < 0 else frame[pos : pos + n]
            pos += max(n, 0)
            (n,) = length(frame, pos)
            pos += 4
            value = None if n < 0 else frame[pos : pos + n]
            pos += max(n, 0)
            (n,) = length(frame, pos)
            pos += 4
            signature = None if n < 0 else frame[pos : pos + n]
            pos += max(n, 0)
            records.append(SourceRecord(partition, offset, timestamp_ms, key, value, signature))
    except struct.error as exc:
        raise FrameError(f"batch frame of partition {partition} is cut short at byte {pos} of {end}: {exc}") from exc
    if pos != end:
        raise FrameError(f"batch frame of partition {partition} is cut short: a field runs to byte {pos} of {end}")
    return records


def write_batch(records: Iterable[SourceRecord]) -> bytes:
    """The frame of `records` (what RecordBatcher writes)."""
    out = bytearray()
    for record in records:
        out += _HEAD.pack(record.offset, record.timestamp_ms, -1 if record.key is None else len(record.key))
        out += record.key or b""
        for part in (record.value, record.service_sig):
            out += _LENGTH.pack(-1 if part is None else len(part))
            out += part or b""
    return bytes(out)
