"""ClickHouse, the search index: one writer and reader for embedded chDB and a ClickHouse server.

`open_clickhouse(url)` picks the connection from the URL and everything above it (schema, rows,
SQL, readers) is shared:

    chdb:///abs/path                      embedded chDB through clickhouse-connect (in-process)
    clickhouse://[user:pw@]host:9000[/auditlog]   a server over the native protocol (clickhouse-driver)
    clickhouses://...                     the same over TLS

chDB hosts one engine per process, on one data directory, and locks that directory against other
processes: `open_clickhouse` hands out one shared instance per path (reference-counted by
`close()`), and refuses a second path or a directory another process holds with an error that
says so.

Exactly-once (docs/design.md §8): `write_block` inserts a sealed block's rows into the four
tables, each insert with `insert_deduplication_token = "{log_id}/{block_index}/{table}"`; the
tables keep the last `non_replicated_deduplication_window` tokens, so a replayed block is
dropped instead of inserted twice. Readers bind every value server-side (`{name:Type}`)::

    ch = open_clickhouse(Settings.from_env().effective_clickhouse_url)
    ch.ensure_schema()
    ch.write_block(header, entries, signed_checkpoint)
    ch.find_event("t_1000", "evt_...")

The package, one module a part (each re-exported here, so `from pipelines.io.clickhouse import X`
is the way in):

    errors        ClickHouseError and its kinds
    schema        the database and table names, schemas/clickhouse.sql's statements, migrations
    connections   the two drivers: embedded chDB and a server over the native protocol
    digest        the SQL of the per-block digests the verifier compares with the archive
    compare       the comparison itself: the index's digests and rows held against the archive
                  (pure; imported from pipelines.io.clickhouse.compare, not re-exported here)
    index         ClickHouse, the one facade every caller holds
    registry      open_clickhouse: one shared chDB instance per path and process
    cluster       cluster_ddl: schemas/clickhouse.sql for a replicated, sharded cluster
"""

from pipelines.io.clickhouse.cluster import CLUSTER_SHARDING_KEYS, REPLICATED_DEDUPLICATION_WINDOW_SECONDS, cluster_ddl
from pipelines.io.clickhouse.digest import retained_rows_filter
from pipelines.io.clickhouse.errors import ChdbHeldError, ClickHouseError, IndexIntegrityError
from pipelines.io.clickhouse.index import ClickHouse
from pipelines.io.clickhouse.registry import open_clickhouse, open_clickhouse_unless_held
from pipelines.io.clickhouse.schema import (
    BLOCKS_TABLE,
    CHECKPOINTS_TABLE,
    COMPACT_PARTS_MIGRATIONS,
    DATABASE,
    LEAVES_TABLE,
    LOGS_TABLE,
    MIGRATIONS,
    NOT_EXPIRED,
    dedup_token,
    schema_statements,
)

__all__ = [
    "BLOCKS_TABLE",
    "CHECKPOINTS_TABLE",
    "CLUSTER_SHARDING_KEYS",
    "COMPACT_PARTS_MIGRATIONS",
    "DATABASE",
    "LEAVES_TABLE",
    "LOGS_TABLE",
    "MIGRATIONS",
    "NOT_EXPIRED",
    "REPLICATED_DEDUPLICATION_WINDOW_SECONDS",
    "ChdbHeldError",
    "ClickHouse",
    "ClickHouseError",
    "IndexIntegrityError",
    "cluster_ddl",
    "dedup_token",
    "open_clickhouse",
    "open_clickhouse_unless_held",
    "retained_rows_filter",
    "schema_statements",
]
