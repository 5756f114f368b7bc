"""Where each event sits in its log, (tenant, event id) → (log, leaf index), in a local SQLite file.

A proof starts from this lookup. ClickHouse answers it too (`ClickHouse.event_place`), but an
embedded chDB query costs milliseconds of CPU however narrow it is; a SQLite point read costs tens
of microseconds. `PlaceIndex` keeps a copy of audit_leaves' (tenant, event id, log, leaf index),
filled from ClickHouse in leaf order (`sync`), and answers what it holds; the caller asks
ClickHouse for anything else. A place never changes once an event is logged (leaves are
append-only), so the copy is never stale, only behind.

What is kept is small and bounded by the logs, not by memory: each row is a 64-bit key (the first
8 bytes of SHA-256 over tenant and event id), a log number and a leaf index, ~20 B on disk, and
SQLite's page cache is bounded. A key that two rows share (the same event logged twice, or two
events whose hashes collide) is kept as "ask ClickHouse", and a caller checks the entry it reads
at a place against the tenant and event id it asked for, so neither can give a wrong place.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.io.localdb import LocalDB, claim
from pipelines.io.lru import LRU

__all__ = ["PlaceIndex", "place_key"]

log = logging.getLogger(__name__)

SYNC_ROWS = 100_000
"""Leaves read from ClickHouse per query while catching up."""
RECENT = 32_768
"""Places kept in memory, the ones found last (~5 MB): the events proved again, without a SQLite read."""
AMBIGUOUS = -1
"""The log number of a key two leaves share: the place is ClickHouse's to answer."""

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS logs (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, synced INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS places (key INTEGER PRIMARY KEY, log INTEGER NOT NULL, leaf INTEGER NOT NULL)",
)


def place_key(tenant_id: str, event_id: str) -> int:
    """The event's 64-bit key: the first 8 bytes of SHA-256(tenant, NUL, event id), as a signed integer."""
    digest = hashlib.sha256(f"{tenant_id}\0{event_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PlaceIndex:
    """The local copy of the events' places; lookups from any thread, one `sync` at a time."""

    def __init__(self, path: Path, identity: str = "") -> None:
        """Opens (or makes) the file; `identity` names the deployment the places are of.

        A file made for another deployment is emptied: a wrong place is caught by the caller's
        check of the entry, but then every lookup would fall back to ClickHouse.
        """
        self.path = path
        self._db = LocalDB(path)
        self._sync_lock = threading.Lock()
        db = self._db()
        for statement in _SCHEMA:
            db.execute(statement)
        claim(db, identity, ("places", "logs"))
        self._log_names: dict[int, str] = {}
        self._recent: LRU[int, tuple[str, int]] = LRU(capacity=RECENT)

    def lookup(self, tenant_id: str, event_id: str) -> tuple[str, int] | None:
        """(log id, leaf index) if the copy holds the event under a key no other leaf shares, else None.

        The RECENT places found last are answered from memory: a place never changes, and a
        SQLite read on the event loop's thread also hands the GIL to other threads and waits for it.
        """
        key = place_key(tenant_id, event_id)
        place = self._recent.get(key)
        if place is not None:
            return place
        row = self._db().execute("SELECT log, leaf FROM places WHERE key = ?", (key,)).fetchone()
        if row is None or row[0] == AMBIGUOUS:
            return None
        name = self._log_names.get(row[0])
        if name is None:
            found = self._db().execute("SELECT name FROM logs WHERE id = ?", (row[0],)).fetchone()
            if found is None:
                return None
            name = self._log_names[row[0]] = str(found[0])
        place = (name, int(row[1]))
        self._recent.put(key, place)
        return place

    def synced(self) -> dict[str, int]:
        """Per log, how many leading leaves the copy holds."""
        return {str(n): int(s) for n, s in self._db().execute("SELECT name, synced FROM logs")}

    def sync(self, clickhouse: Any, progress: Callable[[str, int], None] | None = None) -> int:
        """Copies the leaves ClickHouse holds past what the copy has, per log in leaf order; returns how many.

        Reads audit_leaves by its primary key (log, leaf index), SYNC_ROWS at a time, and stops a
        log at the first leaf ClickHouse does not hold yet (the indexer may be mid-way): the copy
        is always a prefix of each log.
        """
        with self._sync_lock:
            db = self._db()
            added = 0
            for log_id in clickhouse.leaf_logs():
                row = db.execute("SELECT id, synced FROM logs WHERE name = ?", (log_id,)).fetchone()
                if row is None:
                    db.execute("INSERT INTO logs (name, synced) VALUES (?, 0)", (log_id,))
                    row = db.execute("SELECT id, synced FROM logs WHERE name = ?", (log_id,)).fetchone()
                number, synced = int(row[0]), int(row[1])
                while True:
                    rows = clickhouse.leaf_places(log_id, synced, SYNC_ROWS)
                    batch: list[tuple[int, int, int]] = []
                    gap = False
                    for index, tenant_id, event_id in rows:
                        if index < synced + len(batch):
                            continue  # the same leaf twice (an insert repeated past its dedupe window)
                        if index != synced + len(batch):
                            gap = True  # that leaf is not indexed yet
                            break
                        batch.append((place_key(tenant_id, event_id), number, index))
                    if not batch:
                        break
                    db.execute("BEGIN")
                    db.executemany(
                        "INSERT INTO places (key, log, leaf) VALUES (?, ?, ?) "
                        f"ON CONFLICT (key) DO UPDATE SET log = {AMBIGUOUS}",
                        batch,
                    )
                    synced += len(batch)
                    db.execute("UPDATE logs SET synced = ? WHERE id = ?", (synced, number))
                    db.execute("COMMIT")
                    self._recent.drop(key for key, _, _ in batch)  # a shared key is ClickHouse's to answer now
                    added += len(batch)
                    if progress is not None:
                        progress(log_id, synced)
                    if gap or len(rows) < SYNC_ROWS:
                        break
            return added

    def follow(self, clickhouse: Any, stop: threading.Event, interval_s: float = 2.0) -> None:
        """`sync` every `interval_s` until `stop` is set; a failed pass is logged and tried again."""
        first = True
        while not stop.is_set():
            started = time.monotonic()
            try:
                added = self.sync(clickhouse)
            except Exception as exc:  # ClickHouse away or busy: lookups fall back to it meanwhile
                log.warning("place index: sync failed (%s); retrying in %.0f s", exc, interval_s)
            else:
                if first or added > SYNC_ROWS:
                    log.info("place index: %d places copied in %.1f s", added, time.monotonic() - started)
                first = False
            stop.wait(interval_s)

    def close(self) -> None:
        self._db.close()
