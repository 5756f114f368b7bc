"""The one settings object of auditlog, read from the environment in one place.

Every command, job and test takes a `Settings`; nothing else reads the environment or
hard-codes a port, a path or a jar. Override any field with its environment variable
(listed beside it), for example::

    AUDITLOG_HOME=/srv/auditlog AUDITLOG_KAFKA_PORT=19092 auditlog stack up
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    """Where auditlog keeps its data and how it reaches its services.

    Attributes:
        home: the one folder that holds every service's data and logs (AUDITLOG_HOME).
        jars_dir: jars fetched from Maven Central by infra/pom.xml (AUDITLOG_JARS).
        host: the address every local service binds to (AUDITLOG_HOST).
        kafka_port: Kafka client listener (AUDITLOG_KAFKA_PORT).
        kafka_controller_port: KRaft controller listener (AUDITLOG_KAFKA_CONTROLLER_PORT).
        s3_port: SeaweedFS S3 gateway (AUDITLOG_S3_PORT).
        s3_master_port: SeaweedFS master (AUDITLOG_S3_MASTER_PORT); volume and filer use the
            next ports up, as `weed mini` lays them out.
        flink_port: Flink JobManager REST and web UI (AUDITLOG_FLINK_PORT).
        flink_rpc_port: Flink JobManager RPC (AUDITLOG_FLINK_RPC_PORT).
        flink_taskmanagers: one-slot TaskManagers to start (AUDITLOG_FLINK_TASKMANAGERS).
        bucket: the WORM bucket with Object Lock (AUDITLOG_BUCKET).
        s3_access_key: S3 access key (AUDITLOG_S3_ACCESS_KEY).
        s3_secret_key: S3 secret key (AUDITLOG_S3_SECRET_KEY).
        topic: the audit event topic (AUDITLOG_TOPIC).
        dlq_topic: the dead-letter topic (AUDITLOG_DLQ_TOPIC).
        clickhouse_url: `chdb:///abs/path` for the embedded engine or `clickhouse://host:port/db`
            for a server (AUDITLOG_CLICKHOUSE_URL); empty means chDB under `home`.
    """

    home: Path = REPO_ROOT / "var"
    jars_dir: Path = REPO_ROOT / ".local" / "jars"
    host: str = "127.0.0.1"
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    s3_port: int = 8333
    s3_master_port: int = 9333
    flink_port: int = 8081
    flink_rpc_port: int = 6123
    flink_taskmanagers: int = 2
    bucket: str = "auditlog-worm"
    s3_access_key: str = "auditlog"
    s3_secret_key: str = "auditlog-secret"
    topic: str = "audit.events"
    dlq_topic: str = "audit.events.dlq"
    clickhouse_url: str = ""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Builds settings from AUDITLOG_* variables, then applies explicit overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            raw = env.get(_ENV_NAMES.get(field.name, "AUDITLOG_" + field.name.upper()))
            if raw is None or raw == "":
                continue
            values[field.name] = _convert(field.name, field.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)  # type: ignore[arg-type]
        return settings

    def replace(self, **changes: object) -> Settings:
        """Returns a copy with some fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @property
    def kafka_bootstrap(self) -> str:
        return f"{self.host}:{self.kafka_port}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{self.host}:{self.s3_port}"

    @property
    def flink_rest(self) -> str:
        return f"http://{self.host}:{self.flink_port}"

    @property
    def chdb_path(self) -> Path:
        return self.home / "chdb"

    @property
    def effective_clickhouse_url(self) -> str:
        return self.clickhouse_url or f"chdb://{self.chdb_path}"

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"


_ENV_NAMES = {"home": "AUDITLOG_HOME", "jars_dir": "AUDITLOG_JARS"}


def _convert(name: str, annotation: object, raw: str) -> object:
    kind = str(annotation)
    if kind == "Path":
        return Path(raw).expanduser().resolve()
    if kind == "int":
        try:
            return int(raw)
        except ValueError:
            env = _ENV_NAMES.get(name, "AUDITLOG_" + name.upper())
            raise SystemExit(f"{env}={raw!r} is not a whole number; set it to a port or count") from None
    return raw
