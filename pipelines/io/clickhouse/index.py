"""ClickHouse, the search index's one facade: schema, block writes, readers and verification queries.

Over 400 lines because it is one class every caller holds: its writers, readers and verification
queries share one connection and `query`'s parameter and error rules, and splitting the class
would scatter that. The SQL it runs for digests lives in `digest`, the drivers in `connections`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pipelines.io.clickhouse.compare import IndexDigest, IndexedRow, IndexSnapshot
from pipelines.io.clickhouse.connections import _Connection
from pipelines.io.clickhouse.digest import (
    _BAD_COLUMNS_SQL,
    _LEAVES_DIGEST_SQL,
    _logs_digest_sql,
    _with_fields,
    retained_rows_filter,
)
from pipelines.io.clickhouse.errors import ClickHouseError, IndexIntegrityError
from pipelines.io.clickhouse.schema import (
    BLOCKS_TABLE,
    CHECKPOINTS_TABLE,
    COMPACT_PARTS_MIGRATIONS,
    EVENT_PLACES_MIGRATIONS,
    LEAVES_TABLE,
    LOGS_TABLE,
    MIGRATIONS,
    NOT_EXPIRED,
    dedup_token,
    schema_statements,
)
from schemas.native import index_columns
from schemas.rows import (
    BLOCK_COLUMNS,
    CHECKPOINT_COLUMNS,
    LEAF_COLUMNS,
    block_row,
    expired_block_rows,
)
from transforms.blocks import BlockHeader
from transforms.checkpoint import parse_checkpoint
from transforms.merkle import leaf_hash
from transforms.retention import LegalHold, RetentionClock

if TYPE_CHECKING:  # pyarrow takes ~0.45 s to import: loaded by the first block written, not by readers
    import pyarrow as pa

    from pipelines.io.clickhouse.arrow import SealedBlock

__all__ = ["ClickHouse"]

_PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*:[^}]+\}")


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

        Tables made by an older auditlog get the columns, TTL, projection and settings added
        since (`MIGRATIONS`, `EVENT_PLACES_MIGRATIONS`, `COMPACT_PARTS_MIGRATIONS`).
        """
        for statement in schema_statements(sql):
            self._conn.command(statement)
        if sql is not None:
            return
        # Each set runs once: only when what it adds is missing.
        catalogue = "SELECT count() FROM system.{} WHERE database = 'auditlog' AND {}".format
        for check, statements in (
            (catalogue("columns", "table = 'audit_logs' AND name = 'hold_until'"), MIGRATIONS),
            (catalogue("projections", "table = 'audit_leaves' AND name = 'by_event'"), EVENT_PLACES_MIGRATIONS),
            (
                catalogue(
                    "tables", "name = 'audit_leaves' AND position(create_table_query, 'min_bytes_for_wide_part') > 0"
                ),
                COMPACT_PARTS_MIGRATIONS,
            ),
        ):
            found = self.query(check)[0][0]
            if not found:
                for statement in statements:
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
        from pipelines.io.clickhouse.arrow import SealedBlock

        block = SealedBlock(header, entries, [leaf_hash(e) for e in entries])
        self.write_blocks([block], [signed_checkpoint], deduplicate=deduplicate, holds=holds)

    def write_blocks(
        self,
        blocks: Sequence[SealedBlock],
        signed_checkpoints: Sequence[str | None],
        deduplicate: bool = True,
        holds: Sequence[LegalHold] = (),
        core: str = "auto",
    ) -> None:
        """Indexes consecutive sealed blocks of one log: one Arrow insert per table for all of them.

        A ClickHouse insert costs ~12 ms however few its rows (a part to write, then to merge), so
        the indexer hands over the blocks it has verified together. The deduplication token
        names the first and last block (`dedup_token`): retrying the same blocks changes
        nothing, so after a crash the indexer re-forms the group it was inserting
        (`interrupted_insert`). Leaves go in first, then events, blocks and checkpoints: a
        reader that sees an event, block or checkpoint also sees its leaves.

        Args:
            blocks: verified blocks of one log, consecutive, with their leaf hashes.
            signed_checkpoints: per block, the signed note of the tree head it ends at, or None.
            deduplicate: as for write_block.
            holds: as for write_block.
            core: AUDITLOG_CORE: whether the compiled core builds the columns (schemas/native.py).
        """
        from pipelines.io.clickhouse.arrow import leaves_table, logs_table

        if not blocks:
            return
        headers = [b.header for b in blocks]
        for before, after in zip(headers, headers[1:], strict=False):
            if (after.log_id, after.block_index) != (before.log_id, before.block_index + 1):
                raise ValueError(
                    f"blocks {before.log_id}/{before.block_index} and {after.log_id}/{after.block_index} do not follow"
                )
        checkpoint_rows: list[tuple[Any, ...]] = []
        for header, note in zip(headers, signed_checkpoints, strict=True):
            if note is not None:
                checkpoint_rows.append(_checkpoint_row(header, note))
        logs = logs_table(blocks, holds, index_columns(core))
        span = (headers[0], headers[-1])
        self._insert_arrow(LEAVES_TABLE, leaves_table(logs), span, deduplicate)
        self._insert_arrow(LOGS_TABLE, logs, span, deduplicate)
        self._insert(BLOCKS_TABLE, BLOCK_COLUMNS, [block_row(h) for h in headers], span, deduplicate)
        if checkpoint_rows:
            self._insert(CHECKPOINTS_TABLE, CHECKPOINT_COLUMNS, checkpoint_rows, span, deduplicate)

    def interrupted_insert(self, log_id: str, tree_size: int) -> int | None:
        """The last block of an insert that stopped before its block rows: leaves past `tree_size`, or None.

        `tree_size` is where the log's indexed blocks end. Leaves beyond it are from a
        `write_blocks` that did not finish; retrying exactly those blocks completes it.
        """
        rows = self.query(
            f"SELECT max(block_index), count() FROM {LEAVES_TABLE} "
            f"WHERE log_id = {{log:String}} AND leaf_index >= {{size:UInt64}}",
            {"log": log_id, "size": tree_size},
        )
        return int(rows[0][0]) if rows and rows[0][1] else None

    def write_expired_block(self, header: BlockHeader, leaf_hashes: Sequence[bytes], deduplicate: bool = True) -> None:
        """Indexes what is left of a block whose events expired: its leaf hashes and header, no events."""
        leaves, block = expired_block_rows(header, list(leaf_hashes))
        self._insert(LEAVES_TABLE, LEAF_COLUMNS, leaves, (header, header), deduplicate)
        self._insert(BLOCKS_TABLE, BLOCK_COLUMNS, [block], (header, header), deduplicate)

    def write_checkpoint(self, header: BlockHeader, signed_checkpoint: str, deduplicate: bool = True) -> None:
        """Indexes the signed checkpoint a block ends at (when the block was written without it)."""
        row = _checkpoint_row(header, signed_checkpoint)
        self._insert(CHECKPOINTS_TABLE, CHECKPOINT_COLUMNS, [row], (header, header), deduplicate)

    def _insert(
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        span: tuple[BlockHeader, BlockHeader],
        deduplicate: bool = True,
    ) -> None:
        token, settings = _insert_settings(table, span, deduplicate)
        try:
            self._conn.insert(table, columns, rows, settings)
        except Exception as exc:
            raise ClickHouseError(f"insert of {len(rows)} rows into {table} (token {token}) failed: {exc}") from exc

    def _insert_arrow(
        self, table: str, data: pa.Table, span: tuple[BlockHeader, BlockHeader], deduplicate: bool = True
    ) -> None:
        token, settings = _insert_settings(table, span, deduplicate)
        try:
            self._conn.insert_arrow(table, data, settings)
        except Exception as exc:
            raise ClickHouseError(f"insert of {data.num_rows} rows into {table} (token {token}) failed: {exc}") from exc

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

    def event_place(self, tenant_id: str, event_id: str) -> tuple[str, int] | None:
        """(log id, leaf index) of the event's first occurrence, or None: a point lookup.

        Reads audit_leaves' by-event projection (four narrow columns ordered by tenant and event
        id), not the events' canonical bytes: what a proof needs, whose bytes come from the tiles.
        """
        # No ORDER BY: with one, ClickHouse reads the table in its own order (every granule of a
        # big log) instead of the projection; the occurrences (normally one) are ordered here.
        rows = self.query(EVENT_PLACE_SQL, {"tenant": tenant_id, "event": event_id})
        return min((str(log_id), int(index)) for log_id, index in rows) if rows else None

    def leaf_logs(self) -> list[str]:
        """The logs audit_leaves holds leaves of."""
        return [str(r[0]) for r in self.query(f"SELECT DISTINCT toString(log_id) FROM {LEAVES_TABLE}")]

    def leaf_places(self, log_id: str, start: int, limit: int) -> list[tuple[int, str, str]]:
        """(leaf index, tenant id, event id) of the log's leaves from `start` on, `limit` rows at most, in leaf order.

        A range read of audit_leaves' primary key; a leaf indexed twice comes twice.
        """
        rows = self.query(
            f"SELECT leaf_index, tenant_id, event_id FROM {LEAVES_TABLE} "
            "WHERE log_id = {log:String} AND leaf_index >= {start:UInt64} ORDER BY leaf_index LIMIT {limit:UInt64}",
            {"log": log_id, "start": start, "limit": limit},
        )
        return [(int(i), str(t), str(e)) for i, t, e in rows]

    def is_retained(self, tenant_id: str, event_id: str) -> bool:
        """True if the event is indexed and its retention has not ended, or a legal hold keeps it."""
        rows = self.query(
            f"SELECT count() FROM {LOGS_TABLE} WHERE tenant_id = {{tenant:String}} AND event_id = {{event:String}} "
            f"AND {NOT_EXPIRED}",
            {"tenant": tenant_id, "event": event_id},
        )
        return bool(rows[0][0])

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


EVENT_PLACE_SQL = (
    f"SELECT toString(log_id), leaf_index FROM {LEAVES_TABLE} "
    "WHERE tenant_id = {tenant:String} AND event_id = {event:String}"
)
"""`event_place`'s query: answered from audit_leaves' by_event projection (one granule)."""


def _sql_string(value: str) -> str:
    """Escapes a string literal for the few DDL statements that cannot take bound parameters."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _checkpoint_row(header: BlockHeader, signed_checkpoint: str) -> tuple[Any, ...]:
    """The audit_checkpoints row of the signed note a block ends at; its size and root must be the block's."""
    body = parse_checkpoint(_note_text(signed_checkpoint))
    if (body.size, body.root) != (header.tree_size, header.tree_root):
        raise ValueError(
            f"log {header.log_id} block {header.block_index}: checkpoint is for size {body.size} "
            f"root {body.root.hex()}, but the block ends at size {header.tree_size} root "
            f"{header.tree_root.hex()}"
        )
    return (header.log_id, header.tree_size, header.tree_root, header.block_index, signed_checkpoint)


def _insert_settings(
    table: str, span: tuple[BlockHeader, BlockHeader], deduplicate: bool
) -> tuple[str, dict[str, Any]]:
    """(token, insert settings) of one insert of the blocks `span` names (first, last) into `table`."""
    first, last = span
    token = dedup_token(first.log_id, first.block_index, table.split(".", 1)[1], last.block_index)
    if not deduplicate:
        return token, {"insert_deduplicate": 0}
    return token, {"insert_deduplicate": 1, "insert_deduplication_token": token}


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


# The chDB instances `registry.open_clickhouse` handed out, by path; `ClickHouse.close` releases them.
_REGISTRY_LOCK = threading.RLock()
_CHDB_OPEN: dict[str, ClickHouse] = {}
