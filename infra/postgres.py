"""The local PostgreSQL: the shared key store's database (`auditlog stack up postgres`).

One cluster under `home/postgres/`, made once by initdb and run in the foreground as a daemon of
the stack, on `settings.host` and `settings.postgres_port` only (trust authentication: a loopback
server for development and tests, not a production database)::

    home/postgres/data/        the cluster (initdb; superuser `auditlog`), its socket too
    home/postgres/log/         the server's output

It is started only when named (`auditlog stack up postgres`), and `finish` creates the database
`auditlog`, so that::

    export AUDITLOG_KEYSTORE_URL=postgresql://auditlog@127.0.0.1:5433/auditlog   # settings.local_keystore_url

makes every process (ingest, gateway, erase, serve) share one key store. The server comes from
`api.sdk.localpg.LocalPostgres`, the same code the outbox tests start PostgreSQL with; Debian's
binaries, which infra/bootstrap.sh installs. As root the server runs as user `postgres`.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api.sdk.localpg import LocalPostgres, PostgresUnavailable
from infra.daemons import Daemon, PortUse, StackError, port_open
from schemas.settings import Settings

DATABASE = "auditlog"


@dataclass
class PostgresService:
    """The `postgres` service of infra.stack.Stack; duck-typed like its other services."""

    settings: Settings
    say: Callable[[str], None]

    service = "postgres"
    restart_together = False  # one daemon (infra/service.py's Service says what this means)

    @property
    def home(self) -> Path:
        return self.settings.home / "postgres"

    @property
    def run_dir(self) -> Path:
        return self.settings.home / "run"

    @property
    def log_dir(self) -> Path:
        return self.home / "log"

    def _server(self) -> LocalPostgres:
        try:
            return LocalPostgres(
                durable=True, port=self.settings.postgres_port, host=self.settings.host, root=self.home
            )
        except PostgresUnavailable as exc:
            raise StackError(f"postgres: {exc}") from None

    def daemons(self) -> list[Daemon]:
        log = self.log_dir / "postgres.log"
        port = PortUse(self.settings.postgres_port, "postgres_port (AUDITLOG_POSTGRES_PORT)")
        return [Daemon("postgres", self.settings.home, self.settings.host, self.run_dir, log, log, (port,))]

    def known_daemons(self) -> list[Daemon]:
        return self.daemons()

    def needs_java(self) -> bool:
        return False

    def prepare(self, jars: Any) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        server = self._server()
        if server._as:  # as root: the postgres user must reach the folder through its parents
            reach = subprocess.run([*server._as, "test", "-w", str(self.home)], check=False)
            if reach.returncode != 0:
                raise StackError(
                    f"postgres: as root the server runs as user postgres, which cannot reach {self.home}; "
                    "give it search permission on the parent folders or choose another AUDITLOG_HOME"
                )
        try:
            server.initdb()
        except PostgresUnavailable as exc:
            raise StackError(f"postgres: {exc}") from None

    def command(self, daemon: Daemon) -> tuple[list[str], dict[str, str]]:

        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        return self._server().server_argv(), env

    def address(self, daemon: Daemon) -> str:
        return self.settings.local_keystore_url

    def _connect(self, database: str) -> Any:
        import psycopg

        s = self.settings
        return psycopg.connect(
            host=s.host, port=s.postgres_port, user="auditlog", dbname=database, autocommit=True, connect_timeout=2
        )

    def healthy(self) -> bool:
        if not port_open(self.settings.host, self.settings.postgres_port):
            return False
        try:
            with self._connect("postgres") as conn:
                conn.execute("SELECT 1")
        except Exception:  # noqa: BLE001 - any failure means "not answering yet"
            return False
        return True

    def finish(self) -> None:
        """Creates the database `auditlog` (the key store makes its own tables there)."""
        with self._connect("postgres") as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone() is None:
                conn.execute(f"CREATE DATABASE {DATABASE}")
                self.say(f"postgres: created database {DATABASE}")

    def detail(self, daemon: Daemon) -> str:
        return f"key store: AUDITLOG_KEYSTORE_URL={self.settings.local_keystore_url}"
