"""Opening the index: `open_clickhouse` picks the driver from the URL and shares chDB per path.

chDB hosts one engine per process, on one data directory, and locks that directory against other
processes: one shared `ClickHouse` per path (reference-counted by its `close()`, which is why the
table of open instances lives beside the class in `index`).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from urllib.parse import urlsplit

from pipelines.io.clickhouse.connections import _ChdbConnection, _NativeConnection
from pipelines.io.clickhouse.errors import ChdbHeldError, ClickHouseError
from pipelines.io.clickhouse.index import _CHDB_OPEN, _REGISTRY_LOCK, ClickHouse

__all__ = ["open_clickhouse", "open_clickhouse_unless_held"]


def _held_elsewhere(path: str) -> bool:
    """True if another process holds the chDB directory: ClickHouse flocks its `status` file while open."""
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
