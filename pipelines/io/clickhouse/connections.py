"""The two drivers under `ClickHouse`: embedded chDB (clickhouse-connect) and a server (clickhouse-driver).

Each loads its client library when a connection is made, so importing the package loads neither.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from pipelines.io.clickhouse.errors import ClickHouseError
from pipelines.io.clickhouse.schema import DATABASE

if TYPE_CHECKING:
    import pyarrow as pa


_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _setting_name(name: str) -> str:
    if not _SETTING_NAME.fullmatch(name):
        raise ValueError(f"not a ClickHouse setting name: {name!r}")
    return name


class _Connection(Protocol):
    """What the shared code needs from a connection: statements, selects and row inserts."""

    kind: str

    def command(self, sql: str) -> None: ...

    def select(self, sql: str, params: Mapping[str, Any] | None) -> list[tuple[Any, ...]]: ...

    def insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], settings: Mapping[str, Any]
    ) -> None: ...

    def insert_arrow(self, table: str, data: pa.Table, settings: Mapping[str, Any]) -> None: ...

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
        self._writer: Any = None  # a chdb connection of its own for insert_arrow, made on first use
        self._writer_lock = threading.Lock()

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

    def insert_arrow(self, table: str, data: pa.Table, settings: Mapping[str, Any]) -> None:
        # chDB reads the table where it is, through its Python() table function (which finds
        # `arrow_input` among this frame's variables). clickhouse-connect's insert_arrow wrote an
        # Arrow IPC stream to a temporary file for INSERT ... FROM INFILE: ~1 µs of CPU an event
        # more (`tests/bench/bench_core.py --indexer`), for the same rows (test_clickhouse_chdb.py).
        from clickhouse_connect.driver.binding import format_query_value, quote_identifier

        arrow_input = data  # noqa: F841 - read by name by the query below
        columns = ", ".join(quote_identifier(name) for name in data.column_names)
        clause = ", ".join(f"{_setting_name(k)} = {format_query_value(v)}" for k, v in settings.items())
        settings_sql = f"SETTINGS {clause} " if clause else ""
        sql = f"INSERT INTO {table} ({columns}) {settings_sql}SELECT * FROM Python(arrow_input)"
        with self._writer_lock:
            if self._writer is None:
                import chdb

                self._writer = chdb.connect(self.path)
            self._writer.query(sql)

    def close(self) -> None:
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for reader in readers:
            reader.close()
        with self._writer_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
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

    def insert_arrow(self, table: str, data: pa.Table, settings: Mapping[str, Any]) -> None:
        # clickhouse-driver has no Arrow input: columns go over the native protocol, one list each.
        self.client.execute(
            f"INSERT INTO {table} ({', '.join(data.column_names)}) VALUES",
            [column.to_pylist() for column in data.columns],
            columnar=True,
            settings=dict(settings),
        )

    def close(self) -> None:
        self.client.disconnect()
