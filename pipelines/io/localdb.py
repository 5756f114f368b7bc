"""A local SQLite file used from many threads, as the query service's caches use one.

`LocalDB(path)()` is the calling thread's connection (autocommit, WAL); `claim(db, identity,
tables)` empties `tables` when the file was last used for another deployment. The place index
(pipelines/io/places.py) and the disk tile cache (pipelines/io/archive/tilecache.py) share both.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

__all__ = ["LocalDB", "claim"]


class LocalDB:
    """One connection per thread to a SQLite file in WAL mode, with `synchronous` as given."""

    def __init__(self, path: Path, synchronous: str = "NORMAL") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.synchronous = synchronous
        self._local = threading.local()

    def __call__(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.synchronous}")
            self._local.db = db
        return db

    def close(self) -> None:
        """Closes the calling thread's connection."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


def claim(db: sqlite3.Connection, identity: str, tables: tuple[str, ...]) -> None:
    """Empties `tables` unless the file's recorded identity is `identity`, then records it (one transaction)."""
    db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
    row = db.execute("SELECT value FROM meta WHERE name = 'identity'").fetchone()
    if row is not None and row[0] == identity:
        return
    db.execute("BEGIN")
    for table in tables:
        db.execute(f"DELETE FROM {table}")  # the callers' own table names, never input
    db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('identity', ?)", (identity,))
    db.execute("COMMIT")
