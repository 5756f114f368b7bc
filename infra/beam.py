"""Beam's Prism runner on this machine: the binary `make prism` builds, and a pool of SDK workers.

verify, rebuild and export are Beam pipelines. `--runner prism` (or AUDITLOG_BEAM_RUNNER=prism)
runs them on Prism, Beam's portable reference runner, with the SDK workers in processes of their
own, the way a cluster runs them:

    prism                  `go install github.com/apache/beam/sdks/v2/go/cmd/prism@v<Beam SDK>`
                           into .local/bin (make prism); started by Beam's PrismRunner per command
    SDK worker pool        `python -m infra.beam --port N`: Beam's external worker pool service,
                           bound to `settings.host`; for each job Prism asks it for a worker, and
                           it starts one in a new Python process (Prism's EXTERNAL environment)

Prism 2.61 runs EXTERNAL and DOCKER environments, not PROCESS, hence the pool. Beam's own
`python -m apache_beam.runners.worker.worker_pool_main` does the same but listens on every
interface; this one binds the stack's host, as every local service does. (Prism itself listens on
every interface for its job and worker endpoints; 2.61 has no flag to change that.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from infra.daemons import StackError, port_open, tail
from schemas.settings import REPO_ROOT, Settings

PRISM_BIN = REPO_ROOT / ".local" / "bin" / "prism"
POOL_START_TIMEOUT_S = 60.0
RUNNERS = ("direct", "prism")


def prism_bin(settings: Settings) -> str:
    """The Prism binary: AUDITLOG_PRISM_LOCATION, else `make prism`'s, else one on PATH."""
    if settings.prism_location:
        if not Path(settings.prism_location).is_file():
            raise StackError(f"AUDITLOG_PRISM_LOCATION={settings.prism_location} is not a file")
        return settings.prism_location
    if PRISM_BIN.is_file() and os.access(PRISM_BIN, os.X_OK):
        return str(PRISM_BIN)
    found = shutil.which("prism")
    if found:
        return found
    raise StackError(
        f"Beam's Prism runner is not installed; run `make prism` (go install "
        f"github.com/apache/beam/sdks/v2/go/cmd/prism@v<Beam SDK version> into {PRISM_BIN.parent})"
    )


def prism_options(settings: Settings, worker_pool: str) -> list[str]:
    """Beam pipeline options that run a pipeline on Prism with its workers from `worker_pool` (host:port)."""
    return [
        "--runner=PrismRunner",
        f"--prism_location={prism_bin(settings)}",
        "--environment_type=EXTERNAL",
        f"--environment_config={worker_pool}",
    ]


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class WorkerPool:
    """A Beam SDK worker pool in a process of its own (`python -m infra.beam`), stopped with its workers."""

    def __init__(self, settings: Settings, log_file: Path | None = None, port: int = 0) -> None:
        self.settings = settings
        self.port = port or _free_port(settings.host)
        self.log_file = log_file or settings.home / "beam" / "worker-pool.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.port}"

    def start(self) -> WorkerPool:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        # The workers are `python -c ...` from PATH: this interpreter's, so they import this project.
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "infra.beam", "--host", self.settings.host, "--port", str(self.port)],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # stop() ends the pool and the workers it started
            )
        deadline = time.monotonic() + POOL_START_TIMEOUT_S
        while not port_open(self.settings.host, self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise StackError(f"the Beam worker pool did not start on {self.address}:\n{tail(self.log_file, 20)}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        self.proc = None


@contextmanager
def prism_pipeline_options(settings: Settings) -> Iterator[list[str]]:
    """Options for a pipeline on Prism: the worker pool AUDITLOG_BEAM_WORKER_POOL names, or one started for it."""
    if settings.beam_worker_pool:
        yield prism_options(settings, settings.beam_worker_pool)
        return
    pool = WorkerPool(settings).start()
    try:
        yield prism_options(settings, pool.address)
    finally:
        pool.stop()


def serve_worker_pool(host: str, port: int) -> None:
    """Beam's external worker pool service on host:port, each worker a new process, until SIGTERM."""
    import grpc
    from apache_beam.portability.api import beam_fn_api_pb2_grpc
    from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer, kill_process_gracefully
    from apache_beam.utils import thread_pool_executor

    pool = BeamFnExternalWorkerPoolServicer(use_process=True)
    server = grpc.server(thread_pool_executor.shared_unbounded_instance())
    server.add_insecure_port(f"{host}:{port}")
    beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(pool, server)
    server.start()
    print(f"Beam SDK worker pool on {host}:{port} (pid {os.getpid()})", flush=True)

    def stop(*_: object) -> None:
        server.stop(0)
        for worker in list(pool._worker_processes.values()):
            kill_process_gracefully(worker)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    server.wait_for_termination()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m infra.beam", description=serve_worker_pool.__doc__)
    parser.add_argument("--host", default=Settings().host)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    serve_worker_pool(args.host, args.port)


if __name__ == "__main__":
    main()
