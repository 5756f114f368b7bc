"""A throwaway PostgreSQL server from the machine's own binaries, for tests and benchmarks.

    with LocalPostgres() as pg:          # initdb into a temp dir, pg_ctl start on a free loopback port
        conn = psycopg.connect(pg.dsn)   # postgresql://auditlog@127.0.0.1:PORT/postgres
    # stopped (pg_ctl stop -m fast) and removed

The binaries come from Debian's `postgresql` package (/usr/lib/postgresql/<version>/bin, or
`initdb` on PATH); `infra/bootstrap.sh` installs it when missing. PostgreSQL refuses to run as
root, so as root the server runs as the `postgres` user the package creates (via runuser).
Nothing listens beyond 127.0.0.1; authentication is `trust`, fine for a loopback test server only.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from transforms.errors import AuditlogError

__all__ = ["LocalPostgres", "PostgresUnavailable", "find_postgres_bin"]

SUPERUSER = "auditlog"
START_TIMEOUT_S = 60


class PostgresUnavailable(AuditlogError, RuntimeError):
    """The PostgreSQL server binaries are missing or the server did not start."""


def find_postgres_bin() -> Path:
    """The folder holding initdb, pg_ctl and postgres (the newest Debian version wins)."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name or 0))
    for folder in reversed(candidates):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    initdb = shutil.which("initdb")
    if initdb:
        return Path(os.path.realpath(initdb)).parent
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) are not installed: `apt-get install postgresql` "
        "(infra/bootstrap.sh does it)"
    )


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class LocalPostgres:
    """One PostgreSQL cluster in a temporary folder on 127.0.0.1; see the module docstring.

    Args:
        durable: keep fsync on (benchmarks); off makes tests faster and loses nothing a test needs.
        port: the port, or None for a free one.
        root: a folder to keep the cluster in (made once, kept by `stop`), as `auditlog stack up
            postgres` does under its home; None for a temporary one, removed by `stop`.
    """

    def __init__(
        self, durable: bool = False, port: int | None = None, host: str = "127.0.0.1", root: Path | None = None
    ) -> None:
        self.bin = find_postgres_bin()
        self.host = host
        self.port = port or _free_port(host)
        self.durable = durable
        self.keep = root is not None
        if root is None:
            self.root = Path(tempfile.mkdtemp(prefix="auditlog-pg-"))
        else:
            self.root = Path(root)
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._as: list[str] = []
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                raise PostgresUnavailable("running as root needs `runuser` to start PostgreSQL as user postgres")
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable(
                    "as root, PostgreSQL needs the `postgres` user (apt-get install postgresql)"
                ) from None
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self.started = False

    @property
    def dsn(self) -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/postgres"

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self._as, *argv], capture_output=True, text=True, check=False, cwd=self.root)

    def initdb(self) -> None:
        """Creates the cluster in `data` unless it exists (superuser `auditlog`, trust on loopback)."""
        if (self.data / "PG_VERSION").exists():
            return
        done = self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-locale"
        )
        if done.returncode != 0:
            raise PostgresUnavailable(
                f"initdb failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
            )

    def server_options(self) -> list[str]:
        """The server's options: loopback only, its port, its socket in `data`."""
        options = ["-c", f"listen_addresses={self.host}", "-p", str(self.port), "-k", str(self.data)]
        options += ["-c", "max_connections=50"]
        if not self.durable:
            options += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        return options

    def server_argv(self) -> list[str]:
        """The `postgres` command in the foreground (as user postgres when run as root)."""
        return [*self._as, str(self.bin / "postgres"), "-D", str(self.data), *self.server_options()]

    def start(self) -> str:
        """initdb, then pg_ctl start; returns the DSN. Raises PostgresUnavailable with the log."""
        self.initdb()
        options = " ".join(self.server_options())
        done = self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            str(START_TIMEOUT_S),
            "start",
        )
        if done.returncode != 0:
            tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise PostgresUnavailable(f"pg_ctl start failed ({done.returncode}): {done.stderr.strip()}\n{tail}")
        self.started = True
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return self.dsn
            except OSError:
                time.sleep(0.1)
        raise PostgresUnavailable(f"PostgreSQL did not accept connections on {self.host}:{self.port}")

    def stop(self) -> None:
        """Stops the server (fast shutdown) and deletes its folder, unless it was given one."""
        if self.started:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
            self.started = False
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
