"""The transactional outbox: audit events committed with the application's own data, relayed to Kafka.

The application writes the event in the same database transaction as the change it records, so
both commit or neither does (the seed's "Database Outbox" lane)::

    create_outbox_table(conn)                      # once, like any migration
    with conn:                                     # the application's transaction
        conn.execute("UPDATE roles SET ...")
        record_in_transaction(conn, event)         # INSERT INTO auditlog_outbox, no commit

and a forwarder relays committed rows to Kafka::

    auditlog outbox forward --dsn postgresql://app@db/app
    auditlog outbox forward --dsn sqlite:////srv/app/app.db

Works with `sqlite3` connections and PostgreSQL through psycopg 3 (or psycopg2). The table is
`auditlog_outbox(id, event_id, tenant_id, payload, created_at)`; SQLite adds `lease_owner` and
`lease_until`, since it has no row locks.

The forwarder that relays them (at least once, in id order) is api/sdk/forwarder.py.
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, NamedTuple

from api.sdk.events import encode_event, wire_event
from transforms.errors import AuditlogError

__all__ = [
    "OUTBOX_TABLE",
    "OutboxRow",
    "OutboxSource",
    "PostgresOutbox",
    "SqliteOutbox",
    "create_outbox_table",
    "dialect_of",
    "open_outbox",
    "record_in_transaction",
]


OUTBOX_TABLE = "auditlog_outbox"
DEFAULT_BATCH = 5000
DEFAULT_LEASE_S = 60.0
SQLITE_BUSY_TIMEOUT_S = 30.0

POSTGRES_DDL = f"""
CREATE TABLE IF NOT EXISTS {OUTBOX_TABLE} (
    id BIGSERIAL PRIMARY KEY,
    event_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    payload BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""

SQLITE_DDL = f"""
CREATE TABLE IF NOT EXISTS {OUTBOX_TABLE} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    lease_owner TEXT,
    lease_until REAL NOT NULL DEFAULT 0
)
"""

_INSERT = {
    "sqlite": f"INSERT INTO {OUTBOX_TABLE} (event_id, tenant_id, payload) VALUES (?, ?, ?)",
    "postgres": f"INSERT INTO {OUTBOX_TABLE} (event_id, tenant_id, payload) VALUES (%s, %s, %s)",
}


class OutboxError(AuditlogError, RuntimeError):
    """The outbox table is missing or the connection is of a kind the SDK does not know."""


class OutboxRow(NamedTuple):
    id: int
    event_id: str
    tenant_id: str
    payload: bytes


# --------------------------------------------------------------------------- the application side


def dialect_of(conn: Any) -> str:
    """`sqlite` or `postgres` for a DB-API connection; OutboxError for anything else."""
    if isinstance(conn, sqlite3.Connection):
        return "sqlite"
    module = type(conn).__module__
    if module.startswith(("psycopg", "psycopg2")):
        return "postgres"
    raise OutboxError(
        f"a {type(conn).__module__}.{type(conn).__name__} is not a connection the outbox knows; "
        "pass a sqlite3 or psycopg (PostgreSQL) connection"
    )


def create_outbox_table(conn: Any, commit: bool = True) -> None:
    """Creates `auditlog_outbox` if missing (idempotent); commits unless `commit=False`."""
    ddl = SQLITE_DDL if dialect_of(conn) == "sqlite" else POSTGRES_DDL
    cur = conn.cursor()
    cur.execute(ddl)
    cur.close()
    if commit:
        conn.commit()


def record_in_transaction(conn: Any, event: dict[str, Any]) -> dict[str, Any]:
    """Writes an event into the outbox inside the connection's current transaction.

    Does not commit: the event becomes durable, and visible to the forwarder, exactly when the
    application commits its own transaction, and vanishes if it rolls back. Fills `event_id` and
    `occurred_at` when missing; returns the wire event (with its `event_id`).

    Raises:
        EventValidationError: the event breaks the schema (nothing is written).
        OutboxError: the table is missing (run `auditlog outbox init --dsn ...`).
    """
    dialect = dialect_of(conn)
    wire = wire_event(event)
    cur = conn.cursor()
    try:
        cur.execute(_INSERT[dialect], (wire["event_id"], wire["tenant_id"], encode_event(wire)))
    except Exception as exc:
        if "auditlog_outbox" in str(exc) and ("no such table" in str(exc) or "does not exist" in str(exc)):
            raise OutboxError(
                f"the outbox table {OUTBOX_TABLE} does not exist in this database: create it once with "
                "`create_outbox_table(conn)` or `auditlog outbox init --dsn ...`"
            ) from exc
        raise
    finally:
        cur.close()
    return wire


# --------------------------------------------------------------------------- the forwarder side


class OutboxSource(ABC):
    """The forwarder's view of one outbox table: claim a batch, then complete or release it."""

    @abstractmethod
    def claim(self, limit: int) -> list[OutboxRow]:
        """The oldest unclaimed rows, at most `limit`, in id order; they stay claimed until complete/release."""

    @abstractmethod
    def complete(self, ids: list[int]) -> None:
        """Deletes these claimed rows and ends the claim (the others become claimable again)."""

    @abstractmethod
    def release(self) -> None:
        """Ends the claim without deleting anything."""

    @abstractmethod
    def backlog(self) -> int:
        """Rows waiting in the table (claimed or not)."""

    @abstractmethod
    def close(self) -> None: ...


class PostgresOutbox(OutboxSource):
    """`FOR UPDATE SKIP LOCKED` in one transaction per batch; a crash rolls the claim back."""

    def __init__(self, dsn: str) -> None:
        import psycopg

        self.dsn = dsn
        self.conn = psycopg.connect(dsn, autocommit=False)

    def claim(self, limit: int) -> list[OutboxRow]:
        with self.conn.cursor() as cur:
            cur.execute(
                f"SELECT id, event_id, tenant_id, payload FROM {OUTBOX_TABLE} "
                "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                (limit,),
            )
            return [OutboxRow(r[0], r[1], r[2], bytes(r[3])) for r in cur.fetchall()]

    def complete(self, ids: list[int]) -> None:
        with self.conn.cursor() as cur:
            cur.execute(f"DELETE FROM {OUTBOX_TABLE} WHERE id = ANY(%s)", (ids,))
        self.conn.commit()

    def release(self) -> None:
        self.conn.rollback()

    def backlog(self) -> int:
        with self.conn.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {OUTBOX_TABLE}")
            row = cur.fetchone()
        self.conn.rollback()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.conn.close()


class SqliteOutbox(OutboxSource):
    """A lease per batch (`lease_owner`, `lease_until`), each change in a short transaction."""

    def __init__(self, path: str | Path, lease_s: float = DEFAULT_LEASE_S) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise OutboxError(f"SQLite database {self.path} does not exist")
        self.lease_s = lease_s
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.conn = sqlite3.connect(self.path, timeout=SQLITE_BUSY_TIMEOUT_S, isolation_level=None)
        self._claimed: list[int] = []

    def claim(self, limit: int) -> list[OutboxRow]:
        now = time.time()
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            rows = self.conn.execute(
                f"UPDATE {OUTBOX_TABLE} SET lease_owner = ?, lease_until = ? WHERE id IN "
                f"(SELECT id FROM {OUTBOX_TABLE} WHERE lease_until < ? ORDER BY id LIMIT ?) "
                "RETURNING id, event_id, tenant_id, payload",
                (self.owner, now + self.lease_s, now, limit),
            ).fetchall()
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        rows.sort()
        self._claimed = [r[0] for r in rows]
        return [OutboxRow(r[0], r[1], r[2], bytes(r[3])) for r in rows]

    def complete(self, ids: list[int]) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.executemany(
                f"DELETE FROM {OUTBOX_TABLE} WHERE id = ? AND lease_owner = ?", [(i, self.owner) for i in ids]
            )
            done = set(ids)
            self.conn.executemany(
                f"UPDATE {OUTBOX_TABLE} SET lease_until = 0 WHERE id = ? AND lease_owner = ?",
                [(i, self.owner) for i in self._claimed if i not in done],
            )
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self._claimed = []

    def release(self) -> None:
        if self._claimed:
            self.complete([])

    def backlog(self) -> int:
        row = self.conn.execute(f"SELECT count(*) FROM {OUTBOX_TABLE}").fetchone()
        return int(row[0])

    def close(self) -> None:
        self.conn.close()


def open_outbox(dsn: str, **options: Any) -> OutboxSource:
    """`postgresql://...` (or `postgres://`) or `sqlite:///path/to/app.db`."""
    if dsn.startswith(("postgresql://", "postgres://")):
        return PostgresOutbox(dsn)
    if dsn.startswith("sqlite:///"):
        return SqliteOutbox(dsn[len("sqlite://") :], **options)
    raise OutboxError(f"DSN {dsn!r} is neither postgresql://... nor sqlite:///path")


def connect(dsn: str) -> Any:
    """A plain DB-API connection to a DSN (for `outbox init` and the SDK's own outbox writes)."""
    if dsn.startswith(("postgresql://", "postgres://")):
        import psycopg

        return psycopg.connect(dsn)
    if dsn.startswith("sqlite:///"):
        return sqlite3.connect(dsn[len("sqlite://") :], timeout=SQLITE_BUSY_TIMEOUT_S)
    raise OutboxError(f"DSN {dsn!r} is neither postgresql://... nor sqlite:///path")
