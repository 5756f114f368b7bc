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
"""

from __future__ import annotations

import importlib.resources
import logging
import os
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from schemas.rows import (
    AUDIT_LOG_COLUMNS,
    BLOCK_COLUMNS,
    CHECKPOINT_COLUMNS,
    LEAF_COLUMNS,
    block_rows,
    expired_block_rows,
)
from transforms.blocks import BlockHeader
from transforms.checkpoint import parse_checkpoint
from transforms.errors import VerificationError
from transforms.retention import LegalHold, RetentionClock
from transforms.verify import IndexDigest, IndexedRow, IndexSnapshot

__all__ = [
    "DATABASE",
    "ClickHouse",
    "ClickHouseError",
    "IndexIntegrityError",
    "dedup_token",
    "open_clickhouse",
    "schema_statements",
]

log = logging.getLogger(__name__)

DATABASE = "auditlog"
"""The database schemas/clickhouse.sql creates; every statement here names it explicitly."""

LOGS_TABLE = f"{DATABASE}.audit_logs"
LEAVES_TABLE = f"{DATABASE}.audit_leaves"
BLOCKS_TABLE = f"{DATABASE}.audit_blocks"
CHECKPOINTS_TABLE = f"{DATABASE}.audit_checkpoints"

_PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*:[^}]+\}")
_COMMENT = re.compile(r"--[^\n]*")


class ClickHouseError(RuntimeError):
    """ClickHouse could not be opened or refused a statement."""


class ChdbHeldError(ClickHouseError):
    """Another process holds the embedded chDB directory (chDB serves one process per directory)."""


class IndexIntegrityError(ClickHouseError, VerificationError):
    """The index disagrees with itself (a missing or conflicting leaf); rebuild it from the archive.

    A VerificationError too, so a proof command reports it as evidence that did not check out.
    """


def dedup_token(log_id: str, block_index: int, table: str) -> str:
    """The insert_deduplication_token of one block's insert into `table` (a bare table name)."""
    return f"{log_id}/{block_index}/{table}"


def schema_statements(sql: str | None = None) -> list[str]:
    """Returns the statements of schemas/clickhouse.sql (or `sql`), comments removed.

    Requires that no string literal in the file contains `--` or `;` (the file has none).
    """
    if sql is None:
        sql = importlib.resources.files("schemas").joinpath("clickhouse.sql").read_text()
    text = _COMMENT.sub("", sql)
    return [stmt.strip() for stmt in text.split(";") if stmt.strip()]


# --------------------------------------------------------------------------- connections


class _Connection(Protocol):
    """What the shared code needs from a connection: statements, selects and row inserts."""

    kind: str

    def command(self, sql: str) -> None: ...

    def select(self, sql: str, params: Mapping[str, Any] | None) -> list[tuple[Any, ...]]: ...

    def insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], settings: Mapping[str, Any]
    ) -> None: ...

    def close(self) -> None: ...


class _ChdbConnection:
    """Embedded chDB through clickhouse-connect's `chdb://` client."""

    kind = "chdb"

    def __init__(self, path: str) -> None:
        import clickhouse_connect

        self.path = path
        self.client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
        self._types: dict[str, dict[str, str]] = {}
        # One engine per process, but any number of handles to it: each reading thread gets its
        # own, so concurrent queries (the query API's) run in parallel instead of queueing on
        # the one handle's lock.
        self._local = threading.local()
        self._readers: list[Any] = []
        self._readers_lock = threading.Lock()

    def _reader(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            import clickhouse_connect

            client = self._local.client = clickhouse_connect.get_client(dsn=f"chdb://{self.path}")
            with self._readers_lock:
                self._readers.append(client)
        return client

    def command(self, sql: str) -> None:
        self.client.command(sql)
        self._types.clear()  # DDL may have changed a table

    def select(self, sql: str, params: Mapping[str, Any] | None) -> list[tuple[Any, ...]]:
        result = self._reader().query(sql, parameters=dict(params) if params else None)
        return [tuple(row) for row in result.result_rows]

    def insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], settings: Mapping[str, Any]
    ) -> None:
        # clickhouse-connect would DESCRIBE the table before every insert; its types are fixed.
        types = self._types.get(table)
        if types is None:
            described = self.client.query(f"DESCRIBE TABLE {table}").result_rows
            types = self._types[table] = {str(row[0]): str(row[1]) for row in described}
        try:
            self.client.insert(
                table,
                rows,
                column_names=list(columns),
                column_type_names=[types[c] for c in columns],
                settings=dict(settings),
            )
        except Exception:
            self._types.pop(table, None)
            raise

    def close(self) -> None:
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for reader in readers:
            reader.close()
        self.client.close()


class _NativeConnection:
    """A ClickHouse server over the native TCP protocol (clickhouse-driver), parameters bound server-side."""

    kind = "native"

    def __init__(self, url: str) -> None:
        from clickhouse_driver import Client
        from clickhouse_driver.client import parse_url

        host, kwargs = parse_url(url)
        database = kwargs.pop("database", "") or ""
        if database not in ("", "default", DATABASE):
            raise ClickHouseError(
                f"{url}: the schema lives in database {DATABASE!r}; leave the path empty or use /{DATABASE}"
            )
        # Connect to `default`: `auditlog` may not exist before ensure_schema, and all SQL names it.
        settings = dict(kwargs.pop("settings", {}) or {})
        settings["server_side_params"] = True
        self.client = Client(host, database="default", settings=settings, **kwargs)

    def command(self, sql: str) -> None:
        self.client.execute(sql)

    def select(self, sql: str, params: Mapping[str, Any] | None) -> list[tuple[Any, ...]]:
        rows = self.client.execute(sql, dict(params) if params else None)
        return [tuple(row) for row in rows]

    def insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], settings: Mapping[str, Any]
    ) -> None:
        self.client.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES", list(rows), settings=dict(settings))

    def close(self) -> None:
        self.client.disconnect()


# --------------------------------------------------------------------------- the index


class ClickHouse:
    """The auditlog tables in one ClickHouse (embedded or server). Get one from `open_clickhouse`.

    Thread-safe as far as the underlying client is (clickhouse-connect's chDB client serialises
    calls; use one instance per thread for a server).
    """

    def __init__(self, url: str, connection: _Connection) -> None:
        self.url = url
        self._conn = connection
        self._refs = 1
        self._closed = False

    @property
    def kind(self) -> str:
        """`chdb` or `native`."""
        return self._conn.kind

    # ---- lifecycle

    def close(self) -> None:
        """Releases this reference; the connection closes when the last user of a chDB path closes."""
        with _REGISTRY_LOCK:
            if self._closed:
                return
            self._refs -= 1
            if self._refs > 0:
                return
            self._closed = True
            for path, instance in list(_CHDB_OPEN.items()):
                if instance is self:
                    del _CHDB_OPEN[path]
        self._conn.close()

    def __enter__(self) -> ClickHouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- schema

    def ensure_schema(self, sql: str | None = None) -> None:
        """Creates the database and tables of schemas/clickhouse.sql (or `sql`) if missing.

        Tables made by an older auditlog get the columns and TTL added since (`MIGRATIONS`).
        """
        for statement in schema_statements(sql):
            self._conn.command(statement)
        if (
            sql is None
            and not self.query(
                "SELECT count() FROM system.columns WHERE database = 'auditlog' AND table = 'audit_logs' "
                "AND name = 'hold_until'"
            )[0][0]
        ):
            for statement in MIGRATIONS:
                self._conn.command(statement)

    # ---- writing

    def write_block(
        self,
        header: BlockHeader,
        entries: Sequence[bytes],
        signed_checkpoint: str | None = None,
        deduplicate: bool = True,
        holds: Sequence[LegalHold] = (),
    ) -> None:
        """Indexes one sealed block: its events, leaves, header and (optionally) its checkpoint.

        Idempotent: each insert carries a per-block deduplication token, so writing the same
        block again (after a replay) changes nothing. Leaves go in before the block row, and the
        checkpoint last, so a reader that sees a block or checkpoint also sees its leaves.

        Args:
            header: the sealed block's header.
            entries: its canonical entries, in leaf order (header.leaf_count of them).
            signed_checkpoint: the signed note of the tree head the block ends at, if any; its
                size and root must be the header's tree size and root.
            deduplicate: False only when rewriting a log whose rows were deleted (rebuild), so
                the tokens the tables still remember do not swallow the new inserts.
            holds: the legal holds active now; rows they cover are exempt from TTL expiry.

        Raises:
            ValueError: the entries or checkpoint do not belong to this header.
            ClickHouseError: an insert failed (retry the whole block: completed inserts dedupe).
        """
        if len(entries) != header.leaf_count:
            raise ValueError(
                f"log {header.log_id} block {header.block_index}: header has {header.leaf_count} leaves, "
                f"got {len(entries)} entries"
            )
        checkpoint_row: tuple[Any, ...] | None = None
        if signed_checkpoint is not None:
            body = parse_checkpoint(_note_text(signed_checkpoint))
            if body.size != header.tree_size or body.root != header.tree_root:
                raise ValueError(
                    f"log {header.log_id} block {header.block_index}: checkpoint is for size {body.size} "
                    f"root {body.root.hex()}, but the block ends at size {header.tree_size} root "
                    f"{header.tree_root.hex()}"
                )
            checkpoint_row = (
                header.log_id,
                header.tree_size,
                header.tree_root,
                header.block_index,
                signed_checkpoint,
            )
        logs, leaves, block = block_rows(header, list(entries), holds)
        self._insert(LOGS_TABLE, AUDIT_LOG_COLUMNS, logs, header, deduplicate)
        self._insert(LEAVES_TABLE, LEAF_COLUMNS, leaves, header, deduplicate)
        self._insert(BLOCKS_TABLE, BLOCK_COLUMNS, [block], header, deduplicate)
        if checkpoint_row is not None:
            self._insert(CHECKPOINTS_TABLE, CHECKPOINT_COLUMNS, [checkpoint_row], header, deduplicate)

    def write_expired_block(self, header: BlockHeader, leaf_hashes: Sequence[bytes], deduplicate: bool = True) -> None:
        """Indexes what is left of a block whose events expired: its leaf hashes and header, no events."""
        leaves, block = expired_block_rows(header, list(leaf_hashes))
        self._insert(LEAVES_TABLE, LEAF_COLUMNS, leaves, header, deduplicate)
        self._insert(BLOCKS_TABLE, BLOCK_COLUMNS, [block], header, deduplicate)

    def write_checkpoint(self, header: BlockHeader, signed_checkpoint: str, deduplicate: bool = True) -> None:
        """Indexes the signed checkpoint a block ends at (when the block was written without it)."""
        body = parse_checkpoint(_note_text(signed_checkpoint))
        if (body.size, body.root) != (header.tree_size, header.tree_root):
            raise ValueError(
                f"log {header.log_id}: checkpoint at size {body.size} does not end block {header.block_index}"
            )
        row = (header.log_id, header.tree_size, header.tree_root, header.block_index, signed_checkpoint)
        self._insert(CHECKPOINTS_TABLE, CHECKPOINT_COLUMNS, [row], header, deduplicate)

    def _insert(
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        header: BlockHeader,
        deduplicate: bool = True,
    ) -> None:
        token = dedup_token(header.log_id, header.block_index, table.split(".", 1)[1])
        settings: dict[str, Any] = {"insert_deduplicate": 1, "insert_deduplication_token": token}
        if not deduplicate:
            settings = {"insert_deduplicate": 0}
        try:
            self._conn.insert(table, columns, rows, settings)
        except Exception as exc:
            raise ClickHouseError(f"insert of {len(rows)} rows into {table} (token {token}) failed: {exc}") from exc

    # ---- reading

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Runs a SELECT; values are bound by the server from `{name:Type}` placeholders.

        Raises:
            ValueError: `params` given but the SQL has no `{name:Type}` placeholder (never format
                values into SQL).
            ClickHouseError: the server refused the query.
        """
        if params and not _PLACEHOLDER.search(sql):
            raise ValueError("query parameters need {name:Type} placeholders in the SQL; values are never formatted in")
        try:
            return self._conn.select(sql, params)
        except Exception as exc:
            raise ClickHouseError(f"query failed: {exc}\n{sql}") from exc

    def find_events(self, tenant_id: str, event_id: str) -> list[dict[str, Any]]:
        """Returns every indexed occurrence of an event (normally one), in log order."""
        rows = self.query(
            f"SELECT log_id, leaf_index, block_index, hex(leaf_hash), hex(block_hash), canonical "
            f"FROM {LOGS_TABLE} WHERE tenant_id = {{tenant:String}} AND event_id = {{event:String}} "
            f"ORDER BY log_id, leaf_index",
            {"tenant": tenant_id, "event": event_id},
        )
        return [
            {
                "tenant_id": tenant_id,
                "event_id": event_id,
                "log_id": log_id,
                "leaf_index": int(leaf_index),
                "block_index": int(block_index),
                "leaf_hash": bytes.fromhex(leaf_hex),
                "block_hash": bytes.fromhex(block_hex),
                "canonical": _to_bytes(canonical),
            }
            for log_id, leaf_index, block_index, leaf_hex, block_hex, canonical in rows
        ]

    def find_event(self, tenant_id: str, event_id: str) -> dict[str, Any] | None:
        """Returns the event's place in its log and its canonical bytes, or None if it is not indexed.

        Keys: tenant_id, event_id, log_id, leaf_index, block_index, leaf_hash, block_hash (bytes),
        canonical (bytes). With several occurrences (see find_events) the first in log order wins.
        """
        found = self.find_events(tenant_id, event_id)
        return found[0] if found else None

    def leaf_hashes(self, log_id: str, upto: int) -> list[bytes]:
        """Returns the leaf hashes 0 .. upto-1 of a log, in order.

        Raises:
            IndexIntegrityError: a leaf in that range is missing, or two rows give one index
                different hashes.
        """
        rows = self.query(
            f"SELECT leaf_index, hex(leaf_hash) FROM {LEAVES_TABLE} "
            f"WHERE log_id = {{log:String}} AND leaf_index < {{upto:UInt64}} ORDER BY leaf_index",
            {"log": log_id, "upto": upto},
        )
        hashes: list[bytes] = []
        for index, leaf_hex in rows:
            leaf = bytes.fromhex(leaf_hex)
            if index < len(hashes):  # a duplicate row: harmless only if identical
                if hashes[index] != leaf:
                    raise IndexIntegrityError(
                        f"log {log_id} leaf {index} has two different hashes in {LEAVES_TABLE}: "
                        f"{hashes[index].hex()} and {leaf_hex.lower()}"
                    )
                continue
            if index != len(hashes):
                break
            hashes.append(leaf)
        if len(hashes) != upto:
            raise IndexIntegrityError(
                f"log {log_id}: leaf {len(hashes)} is missing from {LEAVES_TABLE} (wanted {upto} leaves); "
                "rebuild the index from the archive"
            )
        return hashes

    def latest_checkpoint(self, log_id: str) -> tuple[int, str] | None:
        """Returns (tree size, signed note) of the log's largest indexed checkpoint, or None."""
        rows = self.query(
            f"SELECT tree_size, note FROM {CHECKPOINTS_TABLE} WHERE log_id = {{log:String}} "
            f"ORDER BY tree_size DESC LIMIT 1",
            {"log": log_id},
        )
        return (int(rows[0][0]), _to_str(rows[0][1])) if rows else None

    def checkpoint_at_least(self, log_id: str, size: int) -> tuple[int, str] | None:
        """Returns the smallest checkpoint with tree size >= `size` (so a leaf's proof is stable), or None."""
        rows = self.query(
            f"SELECT tree_size, note FROM {CHECKPOINTS_TABLE} "
            f"WHERE log_id = {{log:String}} AND tree_size >= {{size:UInt64}} ORDER BY tree_size LIMIT 1",
            {"log": log_id, "size": size},
        )
        return (int(rows[0][0]), _to_str(rows[0][1])) if rows else None

    def count_events(self, tenant_id: str | None = None) -> int:
        """Returns the number of indexed events, of one tenant or of all."""
        if tenant_id is None:
            rows = self.query(f"SELECT count() FROM {LOGS_TABLE}")
        else:
            rows = self.query(f"SELECT count() FROM {LOGS_TABLE} WHERE tenant_id = {{t:String}}", {"t": tenant_id})
        return int(rows[0][0])

    def log_heads(self) -> dict[str, tuple[int, bytes]]:
        """Returns {log_id: (tree size, tree root)} after each log's last indexed block."""
        rows = self.query(
            f"SELECT log_id, max(tree_size), hex(argMax(tree_root, tree_size)) FROM {BLOCKS_TABLE} GROUP BY log_id"
        )
        return {str(log_id): (int(size), bytes.fromhex(root_hex)) for log_id, size, root_hex in rows}

    def block_headers(self, log_id: str) -> list[BlockHeader]:
        """Returns the log's indexed block headers in block order (for chain checks against the archive)."""
        rows = self.query(
            f"SELECT header FROM {BLOCKS_TABLE} WHERE log_id = {{log:String}} ORDER BY block_index",
            {"log": log_id},
        )
        return [BlockHeader.from_json(_to_str(header)) for (header,) in rows]

    # ---- verification (see transforms/verify.py for what each digest must equal)

    def indexed_logs(self) -> set[str]:
        """Returns every log id any auditlog table mentions (a forged log shows up here too)."""
        rows = self.query(
            " UNION DISTINCT ".join(
                f"SELECT DISTINCT toString(log_id) FROM {t}"
                for t in (LOGS_TABLE, LEAVES_TABLE, BLOCKS_TABLE, CHECKPOINTS_TABLE)
            )
        )
        return {str(r[0]) for r in rows}

    def index_snapshots(self, clock: RetentionClock | None = None) -> dict[str, IndexSnapshot]:
        """Returns, per log, the per-block digests of audit_logs and audit_leaves, the headers and checkpoints.

        The database does the per-row work (SHA-256 of every canonical entry, the check that each
        search column says what the canonical bytes say) in one pass per table. With a `clock`,
        audit_logs rows whose retention ended (and that no active hold keeps) are left out: they
        may or may not have been expired yet, and the verifier leaves them out likewise.
        """
        snapshots: dict[str, IndexSnapshot] = {}

        def snap(log_id: Any) -> IndexSnapshot:
            return snapshots.setdefault(str(log_id), IndexSnapshot())

        retained, params = retained_rows_filter(clock)
        if retained:
            # Rows whose retention ended are not expected, but while ClickHouse still holds them
            # each must be a true copy of its archived event: they are checked one by one.
            for log_id, row in self._rows(f"WHERE NOT ({retained})", params):
                snap(log_id).leftover.append(row)
        for table, sql, args in (
            (LOGS_TABLE, _logs_digest_sql(f"WHERE {retained}" if retained else ""), params),
            (LEAVES_TABLE, _LEAVES_DIGEST_SQL, None),
        ):
            for log_id, block_index, rows, distinct, lo, hi, digest_hex, mismatches, bad, block_hex in self.query(
                sql, args
            ):
                d = IndexDigest(
                    str(log_id),
                    int(block_index),
                    int(rows),
                    int(distinct),
                    int(lo),
                    int(hi),
                    bytes.fromhex(digest_hex),
                    int(mismatches),
                    int(bad),
                    bytes.fromhex(block_hex) if block_hex else None,
                )
                target = snap(log_id).log_digests if table == LOGS_TABLE else snap(log_id).leaf_digests
                target.append(d)
        for log_id, block_index, header in self.query(f"SELECT log_id, block_index, header FROM {BLOCKS_TABLE}"):
            snap(log_id).headers.setdefault(int(block_index), []).append(_to_str(header))
        for log_id, size, note in self.query(f"SELECT log_id, tree_size, note FROM {CHECKPOINTS_TABLE}"):
            snap(log_id).checkpoints.setdefault(int(size), []).append(_to_str(note))
        return snapshots

    def indexed_rows(
        self, log_id: str, leaf_ranges: Sequence[tuple[int, int]], block_indexes: Sequence[int]
    ) -> list[IndexedRow]:
        """Returns the audit_logs rows of a log in the given inclusive leaf ranges or blocks, for a drill-down."""
        if not leaf_ranges and not block_indexes:
            return []
        conditions = [f"leaf_index BETWEEN {int(lo)} AND {int(hi)}" for lo, hi in leaf_ranges]
        if block_indexes:
            conditions.append(f"block_index IN ({', '.join(str(int(b)) for b in block_indexes)})")
        where = f"WHERE log_id = {{log:String}} AND ({' OR '.join(conditions)})"
        return [row for _, row in self._rows(where, {"log": log_id})]

    def _rows(self, where: str, params: Mapping[str, Any]) -> list[tuple[str, IndexedRow]]:
        """(log id, row) of the audit_logs rows `where` selects, in log and leaf order, for a row-level look."""
        rows = self.query(
            f"SELECT toString(log_id), leaf_index, tenant_id, event_id, hex(leaf_hash), "
            f"hex(SHA256(concat(char(0), canonical))), block_index, hex(block_hash), {_BAD_COLUMNS_SQL}, canonical, "
            f"formatDateTime(occurred_at, '%Y-%m-%dT%H:%i:%S.%fZ') FROM {_with_fields(where)} "
            f"ORDER BY log_id, leaf_index",
            params,
        )
        return [
            (
                str(log_id),
                IndexedRow(
                    int(index),
                    str(tenant),
                    str(event),
                    bytes.fromhex(leaf_hex),
                    bytes.fromhex(canonical_hex),
                    int(block),
                    bytes.fromhex(block_hex),
                    tuple(str(c) for c in bad),
                    _to_bytes(canonical),
                    str(occurred),
                ),
            )
            for log_id, index, tenant, event, leaf_hex, canonical_hex, block, block_hex, bad, canonical, occurred in (
                rows
            )
        ]

    def delete_log(self, log_id: str) -> None:
        """Deletes every row of one log from every table (synchronously), for a rebuild of that log."""
        for table in (LOGS_TABLE, LEAVES_TABLE, BLOCKS_TABLE, CHECKPOINTS_TABLE):
            self._conn.command(
                f"ALTER TABLE {table} DELETE WHERE log_id = '{_sql_string(log_id)}' SETTINGS mutations_sync = 2"
            )

    def blocks_of(self, tenant_id: str, subject_id: str = "") -> list[tuple[str, int]]:
        """(log id, block index) of every block with an indexed event of the tenant (and subject), sorted."""
        rows = self.query(
            f"SELECT DISTINCT toString(log_id), block_index FROM {LOGS_TABLE} WHERE tenant_id = {{t:String}} "
            "AND ({s:String} = '' OR actor_id = {s:String}) ORDER BY 1, 2",
            {"t": tenant_id, "s": subject_id},
        )
        return [(str(log_id), int(index)) for log_id, index in rows]

    def set_holds(self, tenant_id: str, holds: Sequence[LegalHold]) -> None:
        """Makes the tenant's rows' `hold_until` what `holds` (the tenant's active holds) say, synchronously.

        A row is held until the latest end of the holds that cover it and were placed before its
        retention ended; every other row of the tenant gets no hold, so TTL may expire it.
        """
        tenant = _sql_string(tenant_id)
        ends = ["toDateTime64(0, 3, 'UTC')"]
        for hold in holds:
            if hold.tenant_id != tenant_id:
                raise ValueError(f"hold {hold.hold_id} is for tenant {hold.tenant_id}, not {tenant_id}")
            covers = f"retain_until > parseDateTime64BestEffort('{_sql_string(hold.placed_at)}', 3, 'UTC')"
            if hold.subject_id:
                covers += f" AND actor_id = '{_sql_string(hold.subject_id)}'"
            until = f"parseDateTime64BestEffort('{_sql_string(hold.until)}', 3, 'UTC')"
            ends.append(f"if({covers}, {until}, toDateTime64(0, 3, 'UTC'))")
        value = ends[0] if len(ends) == 1 else f"greatest({', '.join(ends)})"
        self._conn.command(
            f"ALTER TABLE {LOGS_TABLE} UPDATE hold_until = {value} WHERE tenant_id = '{tenant}' "
            "SETTINGS mutations_sync = 2"
        )

    def expire_now(self) -> None:
        """Applies the TTL now (ClickHouse otherwise expires rows in its background merges)."""
        self._conn.command(f"ALTER TABLE {LOGS_TABLE} MATERIALIZE TTL SETTINGS mutations_sync = 2")

    def drop_tables(self) -> None:
        """Drops the auditlog tables (their deduplication windows with them), for a rebuild from the archive."""
        for table in (LOGS_TABLE, LEAVES_TABLE, BLOCKS_TABLE, CHECKPOINTS_TABLE):
            self._conn.command(f"DROP TABLE IF EXISTS {table} SYNC")


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


def _sql_string(value: str) -> str:
    """Escapes a string literal for the few DDL statements that cannot take bound parameters."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _note_text(signed: str) -> str:
    """The text part of a signed note (everything before the blank line that starts the signatures)."""
    text, sep, _ = signed.partition("\n\n")
    if not sep:
        raise ValueError("signed checkpoint has no blank line before its signatures")
    return text + "\n"


def _to_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def _to_str(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# --------------------------------------------------------------------------- opening


_REGISTRY_LOCK = threading.RLock()
_CHDB_OPEN: dict[str, ClickHouse] = {}


def _held_elsewhere(path: str) -> bool:
    """True if another process holds the chDB directory: ClickHouse flocks its `status` file while open."""
    import fcntl

    try:
        with open(os.path.join(path, "status"), "rb") as status:
            try:
                fcntl.flock(status, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(status, fcntl.LOCK_UN)
    except FileNotFoundError:
        return False
    return False


def open_clickhouse_unless_held(url: str) -> ClickHouse | None:
    """Opens the index at `url`, or returns None when another process holds its chDB directory.

    For commands whose work on ClickHouse that process (normally `auditlog serve`) does itself.
    """
    try:
        return open_clickhouse(url)
    except ChdbHeldError:
        return None


def open_clickhouse(url: str) -> ClickHouse:
    """Opens the index at `url` (`chdb:///abs/path`, `clickhouse://host:port[/auditlog]`, `clickhouses://...`).

    For chDB the instance is shared per path within the process: a second call returns it again
    (call `close()` once per call).

    Raises:
        ValueError: the URL has another scheme or a relative chDB path.
        ClickHouseError: chDB is already open at another path in this process, or another
            process holds the directory.
    """
    parts = urlsplit(url)
    if parts.scheme in ("clickhouse", "clickhouses"):
        return ClickHouse(url, _NativeConnection(url))
    if parts.scheme != "chdb":
        raise ValueError(f"ClickHouse URL {url!r}: expected chdb:///abs/path or clickhouse://host:port")
    if parts.netloc or not parts.path.startswith("/"):
        raise ValueError(f"chDB URL {url!r} must name an absolute directory: chdb:///abs/path")
    path = os.path.realpath(parts.path)
    with _REGISTRY_LOCK:
        existing = _CHDB_OPEN.get(path)
        if existing is not None:
            existing._refs += 1
            return existing
        if _CHDB_OPEN:
            other = next(iter(_CHDB_OPEN))
            raise ClickHouseError(
                f"chDB is already open at {other} in this process and hosts one data directory per process; "
                f"close it before opening {path}"
            )
        Path(path).mkdir(parents=True, exist_ok=True)
        try:
            connection = _ChdbConnection(path)
        except Exception as exc:
            kind = ChdbHeldError if _held_elsewhere(path) else ClickHouseError
            raise kind(
                f"cannot open chDB at {path}: {exc}. A chDB directory is locked by one process at a time: "
                "is another auditlog process (ingest job, query API, a shell) using it? Stop it, or point "
                "AUDITLOG_CLICKHOUSE_URL at another directory."
            ) from exc
        instance = ClickHouse(f"chdb://{path}", connection)
        _CHDB_OPEN[path] = instance
        return instance


# --------------------------------------------------------------------------- cluster DDL


CLUSTER_SHARDING_KEYS: dict[str, tuple[str, str]] = {
    "audit_logs": (
        "cityHash64(tenant_id)",
        "one tenant's events on one shard, so a tenant search (the common query) reads one shard "
        "with optimize_skip_unused_shards = 1 (a block's rows spread over shards; each shard dedupes its part)",
    ),
    "audit_leaves": (
        "cityHash64(log_id)",
        "one log's leaves on one shard: proofs and the indexer read a log's leaves in leaf order",
    ),
    "audit_blocks": (
        "cityHash64(log_id)",
        "one log's hash chain on one shard, beside its leaves",
    ),
    "audit_checkpoints": (
        "cityHash64(log_id)",
        "one log's signed tree heads on one shard, beside its leaves",
    ),
}
"""Sharding key of each table's Distributed table, and why (`cluster_ddl` writes the reason in)."""

REPLICATED_DEDUPLICATION_WINDOW_SECONDS = 7 * 24 * 3600
"""How long replicated tables remember insert_deduplication_tokens.

ClickHouse 26 defaults to one hour, shorter than an indexer outage can last. The indexer only ever
re-inserts the block it was writing when it stopped, so a week covers a restart after any outage
shorter than that.
"""

_CREATE_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS (?P<db>\w+)\.(?P<table>\w+)\s*\n(?P<body>.*)", re.S)
_MERGE_TREE_ENGINE = re.compile(r"^ENGINE = (?P<family>\w*)MergeTree(?:\((?P<args>[^)]*)\))?$", re.M)
_NON_REPLICATED_WINDOW = re.compile(r"\bnon_replicated_deduplication_window\b")
_SETTINGS_CLAUSE = re.compile(r"^SETTINGS [^\n]*", re.M)

_CLUSTER_HEADER = """\
-- auditlog ClickHouse schema for a ClickHouse *cluster* (shards x replicas, Keeper or ZooKeeper).
-- GENERATED from schemas/clickhouse.sql by pipelines.io.clickhouse.cluster_ddl(): do not edit.
-- Regenerate after changing schemas/clickhouse.sql (tests/unit/test_cluster_manifests.py checks it):
--
--   .venv/bin/python -c "from pipelines.io.clickhouse import cluster_ddl; print(cluster_ddl(), end='')" \\
--       > infra/clickhouse/cluster.sql
--
-- Apply it once, before the indexer first starts, on any one node:
--
--   clickhouse-client --host HOST --multiquery < infra/clickhouse/cluster.sql
--
-- Every server needs the macros {cluster}, {shard} and {replica} (config.d/macros.xml) and a
-- remote_servers entry named like {cluster} with internal_replication = true.
--
-- Each table of schemas/clickhouse.sql becomes
--   <name>_local  ReplicatedMergeTree on every node: the same columns, indexes, PARTITION BY and
--                 ORDER BY; inserts carrying an insert_deduplication_token are deduplicated in
--                 Keeper across replicas (replicated_deduplication_window blocks, for at most
--                 replicated_deduplication_window_seconds), so a re-indexed block is a no-op.
--   <name>        a Distributed table over <name>_local, named like the embedded table, so the
--                 indexer, the query API and `auditlog search` work unchanged against the cluster
--                 (their CREATE ... IF NOT EXISTS finds these tables and does nothing).
-- The indexer must insert with distributed_foreground_insert = 1 (see infra/k8s/indexer-deployment.yaml):
-- it writes a block's leaves before its block row and reads them back, which background
-- Distributed inserts would reorder."""


def cluster_ddl(cluster: str = "{cluster}") -> str:
    """Returns schemas/clickhouse.sql translated for a ClickHouse cluster (infra/clickhouse/cluster.sql).

    Every table becomes a `<name>_local` ReplicatedMergeTree table (Keeper path
    `/clickhouse/tables/{shard}/<db>/<name>`, replica `{replica}`) and a Distributed table named
    like the original over it, sharded by `CLUSTER_SHARDING_KEYS`; every statement runs
    `ON CLUSTER`. `{shard}` and `{replica}` stay server macros.

    Args:
        cluster: the cluster name of `ON CLUSTER` and of the Distributed tables; by default the
            `{cluster}` macro, so one file serves every cluster.

    Raises:
        ValueError: schemas/clickhouse.sql has a statement this translation does not know (a
            table without a sharding key in CLUSTER_SHARDING_KEYS, or an engine that is not a
            MergeTree): extend the translation rather than edit the generated file.
    """
    import textwrap

    on_cluster = f"ON CLUSTER '{cluster}'"
    parts = [_CLUSTER_HEADER]
    for raw in schema_statements():
        statement = "\n".join(line.rstrip() for line in raw.splitlines())
        if statement.startswith("CREATE DATABASE ") and "\n" not in statement:
            parts.append(f"{statement} {on_cluster};")
            continue
        create = _CREATE_TABLE.fullmatch(statement)
        if create is None:
            raise ValueError(
                f"cluster_ddl: no cluster translation for this statement of schemas/clickhouse.sql: {raw[:80]!r}"
            )
        db, table, body = create["db"], create["table"], create["body"]
        if table not in CLUSTER_SHARDING_KEYS:
            raise ValueError(
                f"cluster_ddl: table {db}.{table} has no sharding key; add it to CLUSTER_SHARDING_KEYS "
                "in pipelines/io/clickhouse.py"
            )
        engine = _MERGE_TREE_ENGINE.search(body)
        if engine is None:
            raise ValueError(f"cluster_ddl: table {db}.{table} is not a MergeTree table; cannot replicate it")
        replicated_args = [f"'/clickhouse/tables/{{shard}}/{db}/{table}'", "'{replica}'"]
        if engine["args"]:
            replicated_args.append(engine["args"])
        body = (
            body[: engine.start()]
            + f"ENGINE = Replicated{engine['family']}MergeTree({', '.join(replicated_args)})"
            + body[engine.end() :]
        )
        body = _NON_REPLICATED_WINDOW.sub("replicated_deduplication_window", body)
        window = f"replicated_deduplication_window_seconds = {REPLICATED_DEDUPLICATION_WINDOW_SECONDS}"
        settings = _SETTINGS_CLAUSE.search(body)
        if settings is None:
            body = f"{body}\nSETTINGS {window}"
        else:
            body = f"{body[: settings.end()]}, {window}{body[settings.end() :]}"
        key, why = CLUSTER_SHARDING_KEYS[table]
        reason = textwrap.wrap(f"{table}: sharded by {key}: {why}.", width=96)
        parts.append(f"CREATE TABLE IF NOT EXISTS {db}.{table}_local {on_cluster}\n{body};")
        parts.append(
            "".join(f"-- {line}\n" for line in reason)
            + f"CREATE TABLE IF NOT EXISTS {db}.{table} {on_cluster} AS {db}.{table}_local\n"
            + f"ENGINE = Distributed('{cluster}', {db}, {table}_local, {key});"
        )
    return "\n\n".join(parts) + "\n"
