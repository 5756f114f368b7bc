"""The local stack: Kafka (KRaft), SeaweedFS S3 with Object Lock, and a Flink standalone cluster.

One place starts, checks and stops the services, for the CLI and for the integration tests alike.
Everything binds `settings.host`, every port comes from `Settings`, and every byte of data, config,
pid file and log lives under `settings.home`::

    home/run/<daemon>.pid          pid files (kafka, s3, flink-jobmanager, flink-taskmanager-N)
    home/kafka/{data,log}          broker + controller in one JVM, formatted once
    home/s3/{data,log}             `weed mini`, S3 identities in home/s3/s3.json
    home/s3/security/              SeaweedFS's security.toml, JWT keys, gRPC certificates (0600,
                                   new at each start): only the S3 gateway reaches the data
    home/flink/{conf,log,tmp,...}  FLINK_CONF_DIR generated from settings; the pip package's
                                   own conf is never touched

Each service is a module of its own: infra/kafka.py, infra/seaweedfs.py, infra/flink.py (on the
`Service` base of infra/service.py); this one is the orchestrator. Clients of the stack take their
Kafka config from pipelines/io/kafka.py and their S3 client from pipelines/io/s3.py.

From Python::

    stack = Stack(Settings.from_env())
    stack.up()                  # idempotent: running services are left alone
    for row in stack.status(): print(row)
    stack.down()

From a shell: `auditlog stack up | status | down [kafka|s3|flink|witness ...]`; the witness
(litewitness and its ssh-agent, under home/witness/) is infra/witness.py; PostgreSQL for the
shared key store (under home/postgres/, started only when named) is infra/postgres.py.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.daemons import Daemon, StackError
from infra.flink import FlinkService, flink_home
from infra.jars import Jars, ensure_jars
from infra.kafka import KafkaService
from infra.postgres import PostgresService
from infra.seaweedfs import S3Service
from infra.service import Say, Service, java
from infra.witness import WitnessService
from pipelines.io.s3 import s3_client
from schemas.settings import Settings

__all__ = ["SERVICES", "ServiceStatus", "Stack", "StackError"]

SERVICES = ("kafka", "s3", "flink", "witness", "postgres")  # witness: infra/witness.py, postgres: infra/postgres.py
"""Service names accepted by `Stack.up`, `Stack.down` and `Stack.status`, in start order."""
OPTIONAL_SERVICES = ("postgres",)
"""Started only when named (`stack up postgres`); with no names, `down` and `status` cover them while they run."""

START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
POLL_S = 0.3


@dataclass(frozen=True)
class ServiceStatus:
    """What `stack status` reports for one daemon.

    Attributes:
        service: kafka, s3 or flink.
        name: the daemon, e.g. `flink-taskmanager-2`.
        running: its process is alive (by pid file and environment marker).
        healthy: the service answers (Kafka metadata, S3 ListBuckets, Flink /overview).
        address: where clients reach it.
        pid: the process id while running.
        log: its main log file.
        detail: anything else worth a glance (a foreign program on its port, slots, ...).
    """

    service: str
    name: str
    running: bool
    healthy: bool
    address: str
    pid: int | None
    log: Path
    detail: str = ""

    @property
    def state(self) -> str:
        if self.running:
            return "running" if self.healthy else "starting/unhealthy"
        return "stopped"


_SERVICE_TYPES: dict[str, Any] = {
    "kafka": KafkaService,
    "s3": S3Service,
    "flink": FlinkService,
    "witness": WitnessService,
}
_SERVICE_TYPES["postgres"] = PostgresService


# --------------------------------------------------------------------------- the stack


class Stack:
    """Starts, checks and stops the local services described by one `Settings`.

    Args:
        settings: ports, host, home and jars folder; nothing else is consulted.
        say: where progress lines go (default: stderr).
    """

    def __init__(self, settings: Settings, say: Say | None = None) -> None:
        self.settings = settings
        self.say: Say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self._services = {name: kind(settings, self.say) for name, kind in _SERVICE_TYPES.items()}

    # ---- lifecycle

    def up(self, services: Iterable[str] = (), timeout: float = START_TIMEOUT_S) -> list[ServiceStatus]:
        """Starts the named services that are not running and waits until each answers.

        `services` names any of SERVICES; empty means all but OPTIONAL_SERVICES. Idempotent: a running service is left
        alone (only its missing daemons start). Afterwards the topics `settings.topic` and
        `settings.dlq_topic` and the Object Lock bucket exist.

        Raises:
            StackError: java/jars/weed missing, a port taken by another program, or a service
                that exited or did not answer within `timeout` seconds (its log tail included).
        """
        chosen = [self._services[name] for name in self._select(services)]
        self._check_distinct_ports()
        self.settings.home.mkdir(parents=True, exist_ok=True)
        jars: Jars | None = None
        if any(service.needs_java() for service in chosen):
            java()
            jars = ensure_jars(self.settings, say=self.say)
        began = time.monotonic()
        launched: dict[str, list[Daemon]] = {}
        try:
            for service in chosen:
                launched[service.service] = []
                self._launch(service, jars, launched[service.service])
            self._wait_healthy(chosen, launched, began, timeout)
        except BaseException:
            # Leave nothing half-started behind: stop what this call launched (also the first
            # daemons of a service whose next one failed to start), keep the rest.
            for daemons in launched.values():
                for daemon in reversed(daemons):
                    daemon.stop(STOP_TIMEOUT_S)
            raise
        for service in chosen:
            service.finish()
        if any(launched.values()):
            self.say(f"stack up in {time.monotonic() - began:.1f} s")
        return self.status([service.service for service in chosen])

    def down(self, services: Iterable[str] = (), timeout: float = STOP_TIMEOUT_S) -> list[str]:
        """Stops the named services' daemons (Flink first); returns the names of those that ran.

        Stale pid files are removed. A process that is not ours is never signalled.
        """
        stopped = []
        for name in reversed(self._select(services)):
            for daemon in reversed(self._services[name].known_daemons()):
                if daemon.stop(timeout):
                    self.say(f"{name}: stopped {daemon.name}")
                    stopped.append(daemon.name)
        return stopped

    def status(self, services: Iterable[str] = ()) -> list[ServiceStatus]:
        """One row per daemon: running, answering, address, pid and log file."""
        rows = []
        for name in self._select(services):
            service = self._services[name]
            daemons = service.known_daemons()
            pids = {d.name: d.pid() for d in daemons}
            healthy = any(pids.values()) and service.healthy()
            for daemon in daemons:
                pid = pids[daemon.name]
                detail = service.detail(daemon) if pid else ""
                if pid is None:
                    busy = daemon.busy_ports()
                    if busy:
                        detail = "port(s) " + ", ".join(str(u.port) for u in busy) + " held by another program"
                rows.append(
                    ServiceStatus(
                        service=name,
                        name=daemon.name,
                        running=pid is not None,
                        healthy=pid is not None and healthy,
                        address=service.address(daemon),
                        pid=pid,
                        log=daemon.log,
                        detail=detail,
                    )
                )
        return rows

    def is_up(self, services: Iterable[str] = ()) -> bool:
        """True if every daemon of the named services runs and each service answers."""
        rows = self.status(services)
        return bool(rows) and all(row.running and row.healthy for row in rows)

    # ---- helpers for jobs, commands and tests

    @staticmethod
    def flink_bin() -> Path:
        """The `flink` CLI of the installed apache-flink package; run it with `flink_env()`."""
        return flink_home() / "bin" / "flink"

    def flink_env(self) -> dict[str, str]:
        """Environment for `flink_bin()` so that it talks to this stack's cluster."""
        flink = self._services["flink"]
        assert isinstance(flink, FlinkService)
        return flink.env()

    def flink_conf_dir(self) -> Path:
        flink = self._services["flink"]
        assert isinstance(flink, FlinkService)
        return flink.conf_dir

    def kafka_connector_jar(self) -> Path:
        """The Flink SQL Kafka connector jar (fetched with Maven if missing)."""
        return ensure_jars(self.settings, say=self.say).kafka_connector

    def s3_client(self) -> Any:
        return s3_client(self.settings)

    # ---- internals

    def _launch(self, service: Service, jars: Jars | None, started: list[Daemon]) -> None:
        """Starts the service's daemons that are not running, adding each to `started` as it starts.

        A service whose daemons depend on each other (`restart_together`: litewitness signs
        through the ssh-agent that holds its key) has its running daemons stopped and all of them
        started again when one is missing, so a new agent never runs without the key loaded.
        """
        wanted = service.daemons()
        missing = [d for d in wanted if d.pid() is None]
        if not missing:
            self.say(f"{service.service}: already running")
            return
        if service.restart_together and len(missing) < len(wanted):
            for daemon in reversed(wanted):
                if daemon not in missing and daemon.stop(STOP_TIMEOUT_S):
                    self.say(f"{service.service}: stopped {daemon.name} to start it with the others")
            missing = wanted
        for daemon in missing:
            daemon.check_ports_free()
        service.prepare(jars)
        for daemon in missing:
            argv, env = service.command(daemon)
            daemon.start(argv, env, cwd=service.home)
            started.append(daemon)
            self.say(f"{service.service}: started {daemon.name} (log: {daemon.log})")

    def _check_distinct_ports(self) -> None:
        """Raises StackError if two settings give the same port (each service binds its own)."""
        owners: dict[int, list[str]] = {}
        for service in self._services.values():
            for daemon in service.daemons():
                for use in daemon.ports:
                    owners.setdefault(use.port, []).append(f"{daemon.name}: {use.setting}")
        clashes = {port: names for port, names in owners.items() if len(names) > 1}
        if clashes:
            lines = [f"port {port} is chosen twice: {' and '.join(names)}" for port, names in clashes.items()]
            raise StackError("; ".join(lines) + ". Give each setting its own port.")

    def _select(self, services: Iterable[str]) -> list[str]:
        names = list(services) or [
            name
            for name in SERVICES
            if name not in OPTIONAL_SERVICES or any(d.pid() for d in self._services[name].known_daemons())
        ]
        unknown = [name for name in names if name not in SERVICES]
        if unknown:
            raise StackError(f"unknown service(s) {', '.join(unknown)}; choose from {', '.join(SERVICES)}")
        return [name for name in SERVICES if name in names]

    def _wait_healthy(
        self, chosen: list[Service], launched: dict[str, list[Daemon]], began: float, timeout: float
    ) -> None:
        pending = list(chosen)
        deadline = began + timeout
        while pending:
            for service in list(pending):
                for daemon in launched.get(service.service, []):
                    if daemon.exited():
                        raise StackError(
                            f"{service.service}: {daemon.name} exited during start-up.\n{daemon.log_tail()}"
                        )
                if service.healthy():
                    pending.remove(service)
                    if launched.get(service.service):
                        self.say(f"{service.service}: ready after {time.monotonic() - began:.1f} s")
            if not pending:
                return
            if time.monotonic() > deadline:
                tails = "\n".join(
                    daemon.log_tail(20) for service in pending for daemon in launched.get(service.service, [])
                )
                raise StackError(
                    f"{', '.join(s.service for s in pending)} did not answer within {timeout:.0f} s.\n{tails}"
                )
            time.sleep(POLL_S)
