"""Tiles kept on local disk, bounded in bytes: what lets a proof skip the archive for a tile read before.

Every tile path names one immutable content (pipelines/io/archive/tiles.py), so a tile read once
can be served from disk for ever: no invalidation, only a bound. `DiskTileCache` is one SQLite file
(a blob read is tens of microseconds; an S3 GET is milliseconds of CPU on both ends). When the
bytes held pass `max_bytes`, the tiles put longest ago go first until a tenth is free; a hit writes
nothing, so reads never wait on the one writer.

The file is a cache: one that SQLite cannot open (a crash mid-write with synchronous off, a disk
swapped) is moved aside and started afresh, and one that held another archive's tiles (its
`identity`, the endpoint and bucket, differs) is emptied. Tile paths are immutable within one
archive only: a bucket made again under the same name (possible in development, where locks are
short) holds other tiles at the same keys, so a reader that finds the cache disagreeing with a
signed checkpoint drops the log's tiles and reads the archive again (`TileStore.forget`) before
it calls the disagreement an alarm.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from pipelines.io.localdb import LocalDB, claim

__all__ = ["DEFAULT_DISK_CACHE_BYTES", "DiskTileCache"]

DEFAULT_DISK_CACHE_BYTES = 2 << 30
"""2 GiB: every level-0 hash tile of ~67 M events, or ~8,000 entry bundles of 1 KB events."""


class DiskTileCache:
    """Tile bytes by archive key in a SQLite file of at most ~`max_bytes`; thread-safe."""

    def __init__(self, path: Path, max_bytes: int = DEFAULT_DISK_CACHE_BYTES, identity: str = "") -> None:
        if max_bytes <= 0:
            raise ValueError(f"the tile cache needs a positive size in bytes, got {max_bytes}")
        self.path = path
        self.max_bytes = max_bytes
        self._db = LocalDB(path, synchronous="OFF")  # a cache: losing the last puts to a crash is fine
        self._write_lock = threading.Lock()
        try:
            self._held = self._open(identity)
        except sqlite3.DatabaseError:
            self.close()
            path.replace(path.with_name(path.name + ".broken"))
            self._held = self._open(identity)

    def _open(self, identity: str) -> int:
        db = self._db()
        db.execute(
            "CREATE TABLE IF NOT EXISTS tiles (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "key TEXT NOT NULL UNIQUE, size INTEGER NOT NULL, data BLOB NOT NULL)"
        )
        claim(db, identity, ("tiles",))
        return int(db.execute("SELECT coalesce(sum(size), 0) FROM tiles").fetchone()[0])

    @property
    def held(self) -> int:
        """Bytes of tiles held."""
        return self._held

    def get(self, key: str) -> bytes | None:
        row = self._db().execute("SELECT data FROM tiles WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def put(self, key: str, data: bytes) -> None:
        """Keeps the tile (a key already held is left as it is: its content is the same)."""
        if len(data) > self.max_bytes // 10:
            return
        with self._write_lock:
            db = self._db()
            added = db.execute("INSERT OR IGNORE INTO tiles (key, size, data) VALUES (?, ?, ?)", (key, len(data), data))
            if added.rowcount:
                self._held += len(data)
            if self._held > self.max_bytes:
                self._evict(db)

    def forget(self, prefix: str) -> None:
        """Drops every tile whose key starts with `prefix` (a log's, when they disagree with its checkpoint)."""
        with self._write_lock:
            db = self._db()
            dropped = db.execute(
                "SELECT coalesce(sum(size), 0) FROM tiles WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)
            ).fetchone()[0]
            db.execute("DELETE FROM tiles WHERE substr(key, 1, ?) = ?", (len(prefix), prefix))
            self._held -= int(dropped)

    def _evict(self, db: sqlite3.Connection) -> None:
        """Drops the oldest puts until a tenth of the bound is free."""
        goal = self.max_bytes - self.max_bytes // 10
        dropped = 0
        cutoff = None
        for row_id, size in db.execute("SELECT id, size FROM tiles ORDER BY id"):
            if self._held - dropped <= goal:
                break
            dropped += int(size)
            cutoff = int(row_id)
        if cutoff is not None:
            db.execute("DELETE FROM tiles WHERE id <= ?", (cutoff,))
            self._held -= dropped

    def close(self) -> None:
        self._db.close()
