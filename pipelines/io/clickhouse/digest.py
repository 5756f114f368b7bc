"""The SQL of the per-block digests and row checks the verifier compares with the archive.

`ClickHouse.index_snapshots` and its drill-down run these; transforms/verify.py says what each
digest must equal.
"""

from __future__ import annotations

from typing import Any

from pipelines.io.clickhouse.schema import LEAVES_TABLE, LOGS_TABLE
from transforms.retention import RetentionClock

__all__ = ["retained_rows_filter"]


# The search columns an audit_logs row derives from its canonical bytes (schemas/rows.py), each
# recomputed by the database from `j` (the parsed canonical fields, bound in a subquery); the
# array names the columns that disagree.
_CANONICAL_FIELDS = (
    "JSONExtract(canonical, 'Tuple(tenant_id String, event_id String, actor Tuple(id String, type String), "
    "action String, resource Tuple(id String, type String), result String, request_id String, occurred_at String, "
    "retention Tuple(class String, until String))')"
)
_BAD_COLUMNS_SQL = """arrayFilter(x -> x != '', [
    if(tenant_id != j.1, 'tenant_id', ''),
    if(event_id != j.2, 'event_id', ''),
    if(actor_id != j.3.1, 'actor_id', ''),
    if(toString(actor_type) != j.3.2, 'actor_type', ''),
    if(action != j.4, 'action', ''),
    if(resource_id != j.5.1, 'resource_id', ''),
    if(resource_type != j.5.2, 'resource_type', ''),
    if(toString(result) != j.6, 'result', ''),
    if(request_id != j.7, 'request_id', ''),
    if(toUnixTimestamp64Milli(occurred_at)
       != toUnixTimestamp64Milli(parseDateTime64BestEffortOrZero(j.8, 3, 'UTC')), 'occurred_at', ''),
    if(metadata != if(JSONHas(canonical, 'metadata'), JSONExtractRaw(canonical, 'metadata'), '{}'), 'metadata', ''),
    if(actor_email_hash != JSONExtractString(canonical, 'pii', 'actor.email', 'kh'), 'actor_email_hash', ''),
    if(retention_class != j.9.1, 'retention_class', ''),
    if(toUnixTimestamp64Milli(retain_until) != toUnixTimestamp64Milli(
       if(j.9.2 = '' OR j.9.2 > '2299-12-31T23:59:59.999Z', toDateTime64('2299-12-31 23:59:59.999', 3, 'UTC'),
          parseDateTime64BestEffortOrZero(j.9.2, 3, 'UTC'))),
       'retain_until', '')
  ])"""


def _with_fields(where: str = "") -> str:
    """audit_logs rows (optionally filtered) with their parsed canonical fields as `j`."""
    return f"(SELECT *, {_CANONICAL_FIELDS} AS j FROM {LOGS_TABLE} {where})"


def _digest_sql(table_sql: str, item: str, mismatches: str, bad: str, block_hash: str) -> str:
    """Per (log, block_index column): rows, distinct leaves, leaf range, SHA-256 of `item` in leaf order, counts.

    `concat(item, '')` turns FixedString hashes into String first: arrayStringConcat would drop a
    hash's trailing zero bytes.
    """
    return (
        f"SELECT log_id, block_index, count(), uniqExact(leaf_index), min(leaf_index), max(leaf_index), "
        "hex(SHA256(arrayStringConcat(arrayMap(t -> t.2, arraySort(t -> t.1, "
        f"groupArray((leaf_index, concat({item}, '')))))))), "
        f"{mismatches}, {bad}, {block_hash} FROM {table_sql} GROUP BY log_id, block_index"
    )


def retained_rows_filter(clock: RetentionClock | None) -> tuple[str, dict[str, Any]]:
    """A condition (and its parameters) true for the audit_logs rows `clock` says must still exist ("" without one).

    The SQL twin of `transforms.retention.retained`: the retention has not ended, or an active hold
    covers the row's tenant (and subject) and was placed before the retention ended.
    """
    if clock is None:
        return "", {}
    params: dict[str, Any] = {"now": clock.now}
    terms = ["retain_until > parseDateTime64BestEffort({now:String}, 3, 'UTC')"]
    for i, hold in enumerate(clock.holds):
        params.update({f"ht{i}": hold.tenant_id, f"hs{i}": hold.subject_id, f"hp{i}": hold.placed_at})
        terms.append(
            f"(tenant_id = {{ht{i}:String}} AND ({{hs{i}:String}} = '' OR actor_id = {{hs{i}:String}}) "
            f"AND retain_until > parseDateTime64BestEffort({{hp{i}:String}}, 3, 'UTC'))"
        )
    return "(" + " OR ".join(terms) + ")", params


def _logs_digest_sql(where: str = "") -> str:
    """The audit_logs digest (rows filtered by `where`); must agree with transforms.verify.block_digest."""
    return _digest_sql(
        f"(SELECT *, SHA256(concat(char(0), canonical)) AS entry_hash, {_CANONICAL_FIELDS} AS j "
        f"FROM {LOGS_TABLE} {where})",
        "entry_hash",
        "countIf(leaf_hash != entry_hash)",
        f"countIf(NOT empty({_BAD_COLUMNS_SQL}))",
        "if(uniqExact(block_hash) = 1, hex(any(block_hash)), '')",
    )


_LEAVES_DIGEST_SQL = _digest_sql(LEAVES_TABLE, "leaf_hash", "0", "0", "''")
