"""SqliteKeyStore, the embedded default: one SQLite file, subject keys wrapped under a master key."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipelines.io.keystore.sql import DEFAULT_CACHE_SIZE, DEFAULT_ERASURE_CHECK_S, _SqlKeyStore

__all__ = ["DEFAULT_BUSY_TIMEOUT_S", "SqliteKeyStore"]

log = logging.getLogger("pipelines.io.keystore")  # the package's logger: log lines keep their name

DEFAULT_BUSY_TIMEOUT_S = 30.0

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS masters (
    master_id TEXT PRIMARY KEY,
    check_value BLOB NOT NULL,        -- HMAC-SHA256(master, _CHECK_LABEL): proves a key is this one
    state TEXT NOT NULL CHECK (state IN ('active', 'retired')),
    added_at TEXT NOT NULL,
    retired_at TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subject_keys (  -- one row per live subject: the race arbiter
    tenant_id TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    PRIMARY KEY (tenant_id, subject_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS wrapped_keys (  -- one copy per master during a rotation
    tenant_id TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    master_id TEXT NOT NULL,
    wrapped BLOB NOT NULL,
    PRIMARY KEY (tenant_id, subject_id, master_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS wrapped_keys_by_master ON wrapped_keys (master_id);
CREATE TABLE IF NOT EXISTS erasures (      -- tombstones: these subjects never get a key again
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    key_id TEXT,
    erased_at TEXT NOT NULL,
    UNIQUE (tenant_id, subject_id)
);
"""


class SqliteKeyStore(_SqlKeyStore):
    """The embedded key store: one SQLite file, subject keys wrapped under a master key.

    Several processes may open the same file (WAL mode, `busy_timeout_s`); open the store in the
    process that uses it, never before a fork (SQLite connections do not survive one). Each
    keeps an LRU cache of unwrapped keys for the per-record path; an erasure made by another
    process reaches this cache within `erasure_check_s` seconds (0 checks on every call).

    Deleted key material does not linger: `secure_delete` zeroes deleted cells and freed pages,
    and after an erasure the WAL is checkpointed and truncated, so neither the database's free
    pages nor the log keep the wrapped key. (That stands in for a VACUUM, which would rewrite the
    whole file under an exclusive lock on every erasure; `compact()` runs one on demand.)
    Copies below the file system — SSD remapping, backups, snapshots — are out of its reach.
    """

    def __init__(
        self,
        path: Path,
        master_keys: Sequence[bytes],
        *,
        key_seed: bytes | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        erasure_check_s: float = DEFAULT_ERASURE_CHECK_S,
    ) -> None:
        """Opens (or creates) the key store at `path`.

        Args:
            path: the SQLite file; created with mode 0600 if missing.
            master_keys: the first wraps new keys; all unwrap. A key that the store was not set
                up with is refused (MasterKeyError), never used to make new keys.
            key_seed: derive new subject keys from this seed (CI replays only).
            cache_size: unwrapped keys kept in memory.
            busy_timeout_s: how long to wait for another process's write lock.
            erasure_check_s: how often to look for erasures made by other processes.
        """
        super().__init__(
            str(path), master_keys, key_seed=key_seed, cache_size=cache_size, erasure_check_s=erasure_check_s
        )
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._db = sqlite3.connect(
            str(self.path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            self._db.execute("PRAGMA journal_mode = WAL")
            # A key lost after its events were sealed would erase them by accident: fsync each commit.
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA secure_delete = ON")  # per connection: every writer sets it
            self._setup()
        except BaseException:
            self._db.close()
            raise
        if key_seed is not None:
            log.warning(
                "key store %s derives subject keys from AUDITLOG_KEY_SEED: CI replays only, never production",
                self.path,
            )

    def compact(self) -> None:
        """VACUUMs the file: rewrites it without free pages (takes an exclusive lock; seconds per GB)."""
        with self._lock:
            self._db.execute("VACUUM")
        self._flush_log()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---- the dialect

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: IMMEDIATE takes the write lock up front, so no upgrade deadlocks.

        SQLite has one writer at a time, so the check-then-insert of `_create` and the deletes
        of `destroy` never interleave: the subject and erasure locks are not needed here.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._db

    def _create_schema(self, db: Any) -> None:
        for statement in _SQLITE_SCHEMA.split(";\n"):
            if statement.strip():
                db.execute(statement)

    def _after_erasure(self) -> None:
        self._flush_log()

    def _flush_log(self) -> None:
        """Checkpoints the WAL into the file and truncates it, so no old page image keeps a key."""
        with self._lock:
            busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            log.warning(
                "key store %s: readers kept the WAL busy; erased key pages stay in its -wal file "
                "until the next checkpoint",
                self.path,
            )
