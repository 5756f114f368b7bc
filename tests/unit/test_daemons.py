"""Pid files of the stack: a stale or foreign pid is never taken for ours, never signalled.

These need no service: each starts at most a sleeping Python of its own.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

from infra.daemons import Daemon, PortUse, StackError


def _daemon(tmp_path: Path, ports: tuple[PortUse, ...] = ()) -> Daemon:
    return Daemon(
        name="probe",
        home=tmp_path,
        host="127.0.0.1",
        run_dir=tmp_path / "run",
        log=tmp_path / "probe.log",
        out=tmp_path / "probe.out",
        ports=ports,
    )


def test_started_daemon_is_recognised_and_stopped(tmp_path: Path) -> None:
    daemon = _daemon(tmp_path)
    proc = daemon.start([sys.executable, "-c", "import time; time.sleep(60)"], dict(os.environ), tmp_path)

    assert daemon.pid() == proc.pid
    assert daemon.stop(timeout=5) is True
    assert proc.poll() is not None
    assert daemon.pid() is None and not daemon.pid_file.exists()


def test_foreign_pid_in_pid_file_is_not_ours_and_not_signalled(tmp_path: Path) -> None:
    daemon = _daemon(tmp_path)
    daemon.run_dir.mkdir(parents=True)
    daemon.pid_file.write_text(f"{os.getpid()}\n")  # alive, but without our marker

    assert daemon.pid() is None
    assert daemon.stop(timeout=1) is False  # we are still here
    assert not daemon.pid_file.exists()


def test_port_held_by_another_program_is_named_with_its_setting(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        daemon = _daemon(tmp_path, (PortUse(port, "AUDITLOG_PROBE_PORT"),))

        with pytest.raises(StackError, match=rf"port {port} .*AUDITLOG_PROBE_PORT"):
            daemon.start([sys.executable, "-c", "pass"], dict(os.environ), tmp_path)

    assert daemon.pid() is None
