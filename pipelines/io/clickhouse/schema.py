"""The auditlog tables: their names, schemas/clickhouse.sql's statements, the migrations, dedup tokens.

Every statement of the package names the database explicitly (`DATABASE`), so a connection to
`default` works before `ensure_schema` has created it.
"""

from __future__ import annotations

import importlib.resources
import re

__all__ = [
    "BLOCKS_TABLE",
    "CHECKPOINTS_TABLE",
    "DATABASE",
    "COMPACT_PARTS_MIGRATIONS",
    "EVENT_PLACES_MIGRATIONS",
    "LEAVES_TABLE",
    "LOGS_TABLE",
    "MIGRATIONS",
    "NOT_EXPIRED",
    "dedup_token",
    "schema_statements",
]

DATABASE = "auditlog"
"""The database schemas/clickhouse.sql creates; every statement here names it explicitly."""

LOGS_TABLE = f"{DATABASE}.audit_logs"
LEAVES_TABLE = f"{DATABASE}.audit_leaves"
BLOCKS_TABLE = f"{DATABASE}.audit_blocks"
CHECKPOINTS_TABLE = f"{DATABASE}.audit_checkpoints"

_COMMENT = re.compile(r"--[^\n]*")


def dedup_token(log_id: str, block_index: int, table: str, last_block: int | None = None) -> str:
    """The insert_deduplication_token of an insert into `table` (a bare table name).

    The insert holds blocks `block_index` .. `last_block`: one block when that is None or the same.
    """
    if last_block is None or last_block == block_index:
        return f"{log_id}/{block_index}/{table}"
    return f"{log_id}/{block_index}-{last_block}/{table}"


def schema_statements(sql: str | None = None) -> list[str]:
    """Returns the statements of schemas/clickhouse.sql (or `sql`), comments removed.

    Requires that no string literal in the file contains `--` or `;` (the file has none).
    """
    if sql is None:
        sql = importlib.resources.files("schemas").joinpath("clickhouse.sql").read_text()
    text = _COMMENT.sub("", sql)
    return [stmt.strip() for stmt in text.split(";") if stmt.strip()]


# Rows whose retention ended wait for ClickHouse's next merge to be deleted (TTL); searches and
# exports no longer show them meanwhile. A legal hold keeps them.
NOT_EXPIRED = "(retain_until > now64(3) OR hold_until > now64(3))"

# Brings tables created before retention classes up to schemas/clickhouse.sql (no-ops on new ones).
# A cluster runs the same with ON CLUSTER.
MIGRATIONS = (
    f"ALTER TABLE {LOGS_TABLE} ADD COLUMN IF NOT EXISTS retention_class LowCardinality(String)",
    f"ALTER TABLE {LOGS_TABLE} ADD COLUMN IF NOT EXISTS retain_until DateTime64(3, 'UTC') "
    "DEFAULT toDateTime64('2299-12-31 23:59:59.999', 3, 'UTC')",
    f"ALTER TABLE {LOGS_TABLE} ADD COLUMN IF NOT EXISTS hold_until DateTime64(3, 'UTC') DEFAULT 0",
    f"ALTER TABLE {LOGS_TABLE} MODIFY TTL retain_until DELETE WHERE hold_until <= now()",
)

# Gives tables made before it the compact-part threshold of schemas/clickhouse.sql (which says
# why). Only the tables' settings change; parts already written stay as they are.
COMPACT_PARTS_MIGRATIONS = tuple(
    f"ALTER TABLE {table} MODIFY SETTING min_bytes_for_wide_part = 134217728" for table in (LOGS_TABLE, LEAVES_TABLE)
)

# Brings an audit_leaves made before the by-event projection up to schemas/clickhouse.sql: adds
# it, and builds it for the rows already there (once: only when it was missing).
EVENT_PLACES_MIGRATIONS = (
    f"ALTER TABLE {LEAVES_TABLE} ADD PROJECTION IF NOT EXISTS by_event "
    "(SELECT tenant_id, event_id, log_id, leaf_index ORDER BY tenant_id, event_id)",
    f"ALTER TABLE {LEAVES_TABLE} MATERIALIZE PROJECTION by_event SETTINGS mutations_sync = 2",
)
