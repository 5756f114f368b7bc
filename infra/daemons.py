"""Background processes of the local stack: start, recognise, stop.

A `Daemon` is one long-running process (a Kafka broker, a Flink TaskManager, ...) with a pid
file, a log and the ports it binds. It is recognised after a restart of the caller by its pid
file *and* a marker in the process's environment, so a recycled pid is never mistaken for ours
and never signalled. Each daemon runs in its own session, so stopping it also stops whatever it
spawned (Flink's Python workers).

Used by `infra/stack.py`; nothing here knows about Kafka, S3 or Flink.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from transforms.errors import AuditlogError

MARKER_ENV = "AUDITLOG_STACK_PROCESS"
"""Environment variable set in every daemon; its value names the stack home and the daemon."""

LOG_TAIL_LINES = 40


class StackError(AuditlogError, RuntimeError):
    """A service of the local stack could not be fetched, configured, started or stopped.

    The message says what went wrong and what to do; the CLI prints it as is.
    """


@dataclass(frozen=True)
class PortUse:
    """A port a daemon binds, and the setting that chooses it (for error messages)."""

    port: int
    setting: str
    """e.g. `kafka_port (AUDITLOG_KAFKA_PORT)` or `s3_master_port + 1 (AUDITLOG_S3_MASTER_PORT)`."""


@dataclass(frozen=True)
class Daemon:
    """One background process of the stack.

    Attributes:
        name: unique within the stack, e.g. `kafka`, `flink-taskmanager-2`.
        home: the stack's home; with `name` it makes the environment marker.
        host: the address its ports are bound on.
        run_dir: where the pid file lives.
        log: the process's main log, shown by `stack status` and tailed on failure.
        out: where the process's stdout and stderr go.
        ports: what it binds on the stack's host, checked before it starts.
    """

    name: str
    home: Path
    host: str
    run_dir: Path
    log: Path
    out: Path
    ports: tuple[PortUse, ...] = ()

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def marker(self) -> str:
        return f"{self.home}::{self.name}"

    def pid(self) -> int | None:
        """Returns the pid if this daemon is running, else None (a stale pid file is ignored)."""
        recorded = self.recorded_pid()
        if recorded is None or not _alive(recorded):
            return None
        if not _has_marker(recorded, self.marker):
            return None
        return recorded

    def exited(self) -> bool:
        """True if the process recorded in the pid file is gone (for a daemon this call started)."""
        recorded = self.recorded_pid()
        return recorded is None or not _alive(recorded)

    def recorded_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def start(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> subprocess.Popen[bytes]:
        """Starts the process detached from the caller's terminal and records its pid.

        Requires that `pid()` is None; raises StackError if a port it needs is taken.
        """
        self.check_ports_free()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        full_env = dict(env)
        full_env[MARKER_ENV] = self.marker
        with open(self.out, "ab") as out:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            out.write(f"\n==== {stamp} starting {self.name}: {' '.join(argv)}\n".encode())
            out.flush()
            try:
                proc = subprocess.Popen(
                    list(argv),
                    cwd=cwd,
                    env=full_env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise StackError(f"{self.name}: cannot run {argv[0]}: {exc}") from exc
        self.pid_file.write_text(f"{proc.pid}\n")
        return proc

    def stop(self, timeout: float) -> bool:
        """Stops the process group (SIGTERM, then SIGKILL after `timeout` s); returns True if it ran.

        A stale pid file is removed; a pid that is not ours is never signalled.
        """
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        _signal_group(pid, signal.SIGTERM)
        if not _wait_gone(pid, timeout):
            _signal_group(pid, signal.SIGKILL)
            _wait_gone(pid, 5.0)
        self.pid_file.unlink(missing_ok=True)
        return True

    def check_ports_free(self) -> None:
        """Raises StackError naming the port and its setting if another program holds one."""
        for use in self.ports:
            if port_in_use(self.host, use.port):
                raise StackError(
                    f"{self.name} cannot start: port {use.port} on {self.host} is already in use by "
                    f"another program. Stop that program, or choose another port with "
                    f"{use.setting}."
                )

    def busy_ports(self) -> list[PortUse]:
        return [use for use in self.ports if port_in_use(self.host, use.port)]

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the main log and of stdout/stderr, for error messages."""
        parts = []
        for path in dict.fromkeys([self.log, self.out]):
            text = tail(path, lines)
            if text:
                parts.append(f"--- last lines of {path} ---\n{text}")
        return "\n".join(parts) or f"(no output in {self.log} or {self.out})"


def port_in_use(host: str, port: int) -> bool:
    """True if nothing can bind `host:port` now (a listener, or an exclusive bind, holds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on `host:port`."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def _alive(pid: int) -> bool:
    # Reap it first if it is our own exited child, so that a zombie does not look alive.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[-1].split()[0] != "Z":
            return True
        # A zombie leader whose other threads still run is still closing its sockets; once
        # only the leader is left it holds nothing and merely waits for its parent to reap it.
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except OSError:
        return False


def _has_marker(pid: int, marker: str) -> bool:
    expected = f"{MARKER_ENV}={marker}".encode()
    for _ in range(20):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except FileNotFoundError:
            return False
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # no /proc access: trust the pid file
        except OSError:
            environ = b""
        # While the process is in execve (bash -> flink-console.sh -> java) it reads as empty.
        if environ:
            return expected in environ.split(b"\0")
        time.sleep(0.05)
    return False


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return not _alive(pid)
