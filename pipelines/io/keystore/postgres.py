"""PostgresKeyStore, the shared key store: the SQLite store's tables and rules in PostgreSQL, with locks.

psycopg is loaded when the first connection is made.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pipelines.io.keystore.sql import DEFAULT_CACHE_SIZE, DEFAULT_ERASURE_CHECK_S, _SqlKeyStore
from transforms.pii import SubjectKeys

__all__ = ["POSTGRES_CREATE_BATCH", "POSTGRES_SCHEMA", "PostgresKeyStore"]

log = logging.getLogger("pipelines.io.keystore")  # the package's logger: log lines keep their name

POSTGRES_SCHEMA = "keystore"
"""The PostgreSQL schema of the key store's tables, in the database its URL names."""
POSTGRES_CREATE_BATCH = 256
_SETUP_LOCK = 0x6175_6469_746C_6B73  # "auditlks": serialises creating the tables

_POSTGRES_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS masters (
    master_id TEXT PRIMARY KEY,
    check_value BYTEA NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('active', 'retired')),
    added_at TEXT NOT NULL,
    retired_at TEXT
);
CREATE TABLE IF NOT EXISTS subject_keys (
    tenant_id TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    PRIMARY KEY (tenant_id, subject_id)
);
CREATE TABLE IF NOT EXISTS wrapped_keys (  -- no wrapped copy without its subject's row
    tenant_id TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    master_id TEXT NOT NULL REFERENCES masters (master_id),
    wrapped BYTEA NOT NULL,
    PRIMARY KEY (tenant_id, subject_id, master_id),
    FOREIGN KEY (tenant_id, subject_id) REFERENCES subject_keys (tenant_id, subject_id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS wrapped_keys_by_master ON wrapped_keys (master_id);
CREATE TABLE IF NOT EXISTS erasures (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    key_id TEXT,
    erased_at TEXT NOT NULL,
    UNIQUE (tenant_id, subject_id)
);
"""


class _PgSession:
    """One psycopg connection in autocommit mode, opened again if it broke; `?` placeholders."""

    def __init__(self, url: str, connect_timeout_s: float) -> None:
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        self._conn: Any = None

    def connection(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, int(self.connect_timeout_s)))
            conn.execute(f"SET search_path TO {POSTGRES_SCHEMA}")
            self._conn = conn
        return self._conn

    def execute(self, sql: str, params: Sequence[object] = ()) -> Any:
        return self.connection().execute(sql.replace("?", "%s"), tuple(params) or None)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


class PostgresKeyStore(_SqlKeyStore):
    """The shared key store: PostgreSQL, for every TaskManager, gateway and service of a cluster.

    The tables, the wrapping under the master key, the cache, erasure with tombstones and master
    rotation are the SQLite store's (`_SqlKeyStore`); they live in the schema `keystore` of the
    database the URL names. What SQLite gets from its single writer, PostgreSQL gets from locks:

    - get-or-create takes a transaction-scoped advisory lock per subject, then checks the
      tombstone, `INSERT ... ON CONFLICT DO NOTHING` and reads the winner's row, so processes on
      any host that race for a new subject all get the same keys;
    - `destroy` takes the same lock, so an erasure and a creation of one subject never
      interleave: after the tombstone commits, no key for that subject is ever written again.
      Tombstones are written under a table lock, so they commit in `seq` order and every
      process's erasure check sees each one;
    - rotation holds the rows it re-wraps shared (an erasure waits for the batch), and retiring
      a master locks its row, which key creations under it hold shared.

    Erasure deletes every wrapped copy; like any PostgreSQL delete, the row's bytes stay in the
    table's pages until VACUUM reuses them and in the write-ahead log and base backups until those
    expire. They are wrapped under the master key, so keep that key away from database backups.
    """

    _FOR_SHARE = " FOR SHARE"
    _FOR_UPDATE = " FOR UPDATE"

    def __init__(
        self,
        url: str,
        master_keys: Sequence[bytes],
        *,
        key_seed: bytes | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
        erasure_check_s: float = DEFAULT_ERASURE_CHECK_S,
        connect_timeout_s: float = 10.0,
        create_batch: int = POSTGRES_CREATE_BATCH,
    ) -> None:
        """Connects to `url` (postgresql://USER[:PASSWORD]@HOST:PORT/DB) and creates the tables if missing.

        Args:
            url: a libpq URL; the store keeps its tables in the schema `keystore` there.
            master_keys: the first wraps new keys; all unwrap (as for `SqliteKeyStore`).
            key_seed: derive new subject keys from this seed (CI replays only).
            cache_size: unwrapped keys kept in memory.
            erasure_check_s: how often to look for erasures made by other processes.
            connect_timeout_s: how long a connection attempt may take.
            create_batch: new subjects per transaction (each holds one advisory lock).
        """
        super().__init__(
            _redact(url), master_keys, key_seed=key_seed, cache_size=cache_size, erasure_check_s=erasure_check_s
        )
        self._create_batch = max(1, create_batch)
        self._session = _PgSession(url, connect_timeout_s)
        try:
            self._setup()
        except BaseException:
            self._session.close()
            raise
        if key_seed is not None:
            log.warning(
                "key store %s derives subject keys from AUDITLOG_KEY_SEED: CI replays only, never production",
                self.where,
            )

    @property
    def _db(self) -> _PgSession:
        return self._session

    def close(self) -> None:
        with self._lock:
            self._session.close()

    # ---- the dialect

    @contextmanager
    def _transaction(self) -> Iterator[_PgSession]:
        """READ COMMITTED: each statement sees what committed before it, locks do the rest."""
        with self._lock, self._session.connection().transaction():
            yield self._session

    @contextmanager
    def _reading(self) -> Iterator[_PgSession]:
        with self._lock:
            yield self._session

    def _create_schema(self, db: Any) -> None:
        # Several TaskManagers may start at once: CREATE ... IF NOT EXISTS is not race-free.
        db.execute("SELECT pg_advisory_xact_lock(?)", (_SETUP_LOCK,))
        db.execute(f"CREATE SCHEMA IF NOT EXISTS {POSTGRES_SCHEMA}")
        for statement in _POSTGRES_SCHEMA.split(";\n"):
            if statement.strip():
                db.execute(statement)

    def _lock_subjects(self, db: Any, subjects: Sequence[tuple[str, str]]) -> None:
        # In one order everywhere, so two batches never wait for each other in a cycle.
        for lock in sorted({_subject_lock(*subject) for subject in subjects}):
            db.execute("SELECT pg_advisory_xact_lock(?)", (lock,))

    def _lock_erasures(self, db: Any) -> None:
        # Blocks other tombstones only (not readers, not key creation): seq order = commit order.
        db.execute("LOCK TABLE erasures IN SHARE ROW EXCLUSIVE MODE")

    def _create(self, subjects: list[tuple[str, str]]) -> dict[tuple[str, str], SubjectKeys | None]:
        result: dict[tuple[str, str], SubjectKeys | None] = {}
        for start in range(0, len(subjects), self._create_batch):
            result.update(super()._create(subjects[start : start + self._create_batch]))
        return result


def _subject_lock(tenant_id: str, subject_id: str) -> int:
    """The advisory lock key of a subject: 64 bits of a keyed BLAKE2b of tenant ‖ 0x00 ‖ subject."""
    digest = hashlib.blake2b(
        tenant_id.encode() + b"\x00" + subject_id.encode(), digest_size=8, person=b"auditlog-subject"
    ).digest()
    return int.from_bytes(digest, "big", signed=True)


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)
