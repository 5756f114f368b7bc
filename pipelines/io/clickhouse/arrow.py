"""Sealed blocks' ClickHouse rows as Arrow tables, built column by column: no Python object per row.

The compiled core (`schemas.native.index_columns`) reads each entry's fields straight into Arrow
buffers; the columns a block gives all its rows (log, block index and hash) are repeats, the leaf
indexes a range, and the leaf hashes the ones the indexer already computed, joined. The rows come
from `schemas.rows.block_rows`, the reference, instead when the core is not used, when an entry
is not in the exact shape the core reads, or when a legal hold is active (holds are rare, and
which rows they cover is decided per row). tests/unit/test_index_arrow.py holds the two paths
equal, value for value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from schemas.rows import AUDIT_LOG_COLUMNS, LEAF_COLUMNS, block_rows
from transforms.blocks import BlockHeader
from transforms.retention import LegalHold

TIMESTAMP = pa.timestamp("ms", tz="UTC")
HASH = pa.binary(32)

ARROW_TYPES: dict[str, pa.DataType] = {
    "occurred_at": TIMESTAMP,
    "retain_until": TIMESTAMP,
    "hold_until": TIMESTAMP,
    "leaf_index": pa.uint64(),
    "block_index": pa.uint64(),
    "leaf_hash": HASH,
    "block_hash": HASH,
}
"""Every audit_logs column not listed is a string (Enum8 and LowCardinality columns take strings)."""

SCHEMA = pa.schema([(name, ARROW_TYPES.get(name, pa.string())) for name in AUDIT_LOG_COLUMNS])

ColumnsFn = Callable[[list[bytes]], "dict[str, Any] | None"]


@dataclass(frozen=True)
class SealedBlock:
    """One verified block as the indexer holds it: header, entries and their leaf hashes, in leaf order."""

    header: BlockHeader
    entries: Sequence[bytes]
    leaf_hashes: Sequence[bytes]


def logs_table(
    blocks: Sequence[SealedBlock], holds: Sequence[LegalHold] = (), columns: ColumnsFn | None = None
) -> pa.Table:
    """The audit_logs rows of `blocks` (consecutive blocks of one log) as one Arrow table.

    `columns` is the compiled core's `index_columns`, or None for the reference.
    """
    if columns is not None and not holds:
        entries = [e for block in blocks for e in block.entries]
        found = columns(entries)
        if found is not None:
            return _native_table(blocks, found, len(entries))
    rows = [row for block in blocks for row in block_rows(block.header, list(block.entries), holds)[0]]
    return rows_table(rows)


def leaves_table(logs: pa.Table) -> pa.Table:
    """The audit_leaves rows of an audit_logs table (the same arrays, no copy)."""
    return logs.select(list(LEAF_COLUMNS))


def rows_table(rows: Sequence[Sequence[Any]]) -> pa.Table:
    """audit_logs rows (schemas.rows.audit_log_row tuples) as an Arrow table: the reference path."""
    arrays = [pa.array([row[i] for row in rows], type=field.type) for i, field in enumerate(SCHEMA)]
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def _native_table(blocks: Sequence[SealedBlock], found: dict[str, Any], count: int) -> pa.Table:
    headers = [block.header for block in blocks]
    sizes = np.fromiter((h.leaf_count for h in headers), dtype=np.int64, count=len(headers))
    first = headers[0].first_leaf_index
    arrays: dict[str, pa.Array] = {}
    for name, value in found.items():
        if name in ARROW_TYPES:  # int64 milliseconds
            arrays[name] = pa.Array.from_buffers(TIMESTAMP, count, [None, pa.py_buffer(value)])
        else:
            offsets, data = value
            arrays[name] = pa.Array.from_buffers(pa.string(), count, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    arrays["log_id"] = pa.repeat(headers[0].log_id, count)
    arrays["leaf_index"] = pa.array(np.arange(first, first + count, dtype=np.uint64))
    arrays["block_index"] = pa.array(np.repeat(np.array([h.block_index for h in headers], dtype=np.uint64), sizes))
    arrays["leaf_hash"] = _hashes(b"".join(h for block in blocks for h in block.leaf_hashes), count)
    arrays["block_hash"] = _hashes(b"".join(h.hash() * h.leaf_count for h in headers), count)
    arrays["hold_until"] = pa.Array.from_buffers(TIMESTAMP, count, [None, pa.py_buffer(bytes(8 * count))])
    return pa.Table.from_arrays([arrays[name] for name in AUDIT_LOG_COLUMNS], schema=SCHEMA)


def _hashes(joined: bytes, count: int) -> pa.Array:
    if len(joined) != 32 * count:
        raise ValueError(f"{len(joined)} bytes of hashes for {count} rows")
    return pa.Array.from_buffers(HASH, count, [None, pa.py_buffer(joined)])
