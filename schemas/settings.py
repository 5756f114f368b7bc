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

from schemas.retention import DEFAULT_POLICY_FILE

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
        kafka_bootstrap_servers: Kafka brokers outside the local stack, e.g. `b1:9092,b2:9092`
            (AUDITLOG_KAFKA_BOOTSTRAP_SERVERS); empty means `host`:`kafka_port`.
        s3_endpoint_url: an S3 endpoint outside the local stack, e.g. `https://s3.eu-west-1.amazonaws.com`
            (AUDITLOG_S3_ENDPOINT_URL); empty means the local SeaweedFS at `host`:`s3_port`.
        s3_region: the bucket's region (AUDITLOG_S3_REGION).
        origin: prefix of every log's checkpoint origin and the signing key's name; a log's
            origin is `origin`/`log_id` (AUDITLOG_ORIGIN).
        block_size: leaves per block at most (AUDITLOG_BLOCK_SIZE).
        block_latency_ms: how often the cut ticker closes open blocks (AUDITLOG_BLOCK_LATENCY_MS).
        checkpoint_interval_ms: Flink checkpoint interval (AUDITLOG_CHECKPOINT_INTERVAL_MS).
        parallelism: ingest job parallelism (AUDITLOG_PARALLELISM); 0, the default, picks it per
            place (`job_parallelism`): 1 on the local mini-cluster, 2 on a Flink cluster.
        dedupe_ttl_days: how long an event id is remembered for dedupe (AUDITLOG_DEDUPE_TTL_DAYS).
        keystore_file: the SQLite key store of per-subject PII keys (AUDITLOG_KEYSTORE_FILE);
            empty means `home`/keystore.sqlite. Read it as `keystore_path`.
        keystore_url: a PostgreSQL URL for the key store shared by every host of a cluster,
            e.g. `postgresql://auditlog@db:5432/auditlog` (AUDITLOG_KEYSTORE_URL); empty means
            the SQLite file `keystore_path`. `auditlog stack up postgres` runs one locally.
            Never printed (it may hold a password).
        postgres_port: the local PostgreSQL of `auditlog stack up postgres` (AUDITLOG_POSTGRES_PORT);
            its key-store URL is `local_keystore_url`.
        master_key_file: file holding the key store's base64 master key(s), one per line, the
            current one first (AUDITLOG_MASTER_KEY_FILE); make one with
            `auditlog keys master generate --out FILE`.
        master_key: the master key(s) in base64 instead of a file (AUDITLOG_MASTER_KEY); set
            this or `master_key_file`, not both. Never printed.
        key_seed: derive new PII subject keys from this text instead of at random
            (AUDITLOG_KEY_SEED), so that CI replays of a recorded topic give byte-identical
            ciphertext. Anyone with the seed can read every sealed value: production must
            never set it. Never printed.
        gateway_port: the gRPC gateway `auditlog gateway` listens on (AUDITLOG_GATEWAY_PORT).
        api_port: the query API and Compliance UI `auditlog serve` listens on (AUDITLOG_API_PORT).
        apikeys_file: the SQLite file of hashed API keys (AUDITLOG_APIKEYS_FILE); empty means
            `home`/apikeys.sqlite. Read it as `apikeys_path`.
        retention_policy_file: the TOML file of retention classes and the rules that assign them
            (AUDITLOG_RETENTION_POLICY_FILE); empty means the shipped schemas/retention.toml.
        witness_port: the local witness (litewitness) `auditlog stack up` runs (AUDITLOG_WITNESS_PORT).
        witness_name: the local witness's name in its cosignature lines (AUDITLOG_WITNESS_NAME);
            empty means `origin`/witness.
        witnesses: the witnesses asked to cosign each checkpoint (AUDITLOG_WITNESSES): entries
            `name URL VKEY` separated by ';' (VKEY is the witness's cosignature/v1 verifier key,
            name+keyid+base64). Empty means the local witness once `stack up` made its key; `none`
            means no witness. Read it as `witness_list`.
        min_witnesses: cosignatures `auditlog verify` requires on every checkpoint (AUDITLOG_MIN_WITNESSES).
        beam_runner: where verify, rebuild and export run their Beam pipelines (AUDITLOG_BEAM_RUNNER):
            `direct` (Beam's DirectRunner, in the command's process) or `prism` (Beam's Prism runner,
            with SDK workers in processes of their own); `--runner` on those commands overrides it.
        prism_location: the Prism binary (AUDITLOG_PRISM_LOCATION); empty means `make prism`'s
            .local/bin/prism, built at the Beam SDK's version.
        beam_worker_pool: `host:port` of a running Beam SDK worker pool for Prism's EXTERNAL
            environment (AUDITLOG_BEAM_WORKER_POOL); empty means the command starts one beside
            itself for the run (infra/beam.py).
        beam_results: where verify and rebuild pipelines leave their reports for the command
            (AUDITLOG_BEAM_RESULTS): a folder or a URL Beam's FileSystems write (gs://...) that every
            worker reaches; empty means a temporary local folder.
        core: which event core the ingest step runs (AUDITLOG_CORE): `auto` (the compiled core,
            transforms/native, when it is built, else the Python reference), `native` (the compiled
            core or an error) or `python` (the reference only). Both make the same bytes
            (schemas/native.py, tests/unit/test_native_core.py).
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
    kafka_bootstrap_servers: str = ""
    s3_endpoint_url: str = ""
    s3_region: str = "us-east-1"
    origin: str = "auditlog.local"
    block_size: int = 1000
    block_latency_ms: int = 2000
    checkpoint_interval_ms: int = 10000
    parallelism: int = 0
    dedupe_ttl_days: int = 7
    keystore_file: str = ""
    keystore_url: str = dataclasses.field(default="", repr=False)
    postgres_port: int = 5433
    master_key_file: str = ""
    master_key: str = dataclasses.field(default="", repr=False)
    key_seed: str = dataclasses.field(default="", repr=False)
    gateway_port: int = 50051
    api_port: int = 8480
    apikeys_file: str = ""
    retention_policy_file: str = ""
    witness_port: int = 7380
    witness_name: str = ""
    witnesses: str = ""
    min_witnesses: int = 0
    beam_runner: str = "direct"
    prism_location: str = ""
    beam_worker_pool: str = ""
    beam_results: str = ""
    core: str = "auto"

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

    def with_ports_moved(self, offset: int) -> Settings:
        """A copy whose Kafka, SeaweedFS, Flink and witness ports are `offset` higher.

        For a second stack beside the configured one (the tests', a benchmark's own).
        """
        return self.replace(**{name: getattr(self, name) + offset for name in STACK_PORTS})

    def to_env(self) -> dict[str, str]:
        """Returns the AUDITLOG_* variables that make `from_env` rebuild these settings.

        For starting a command in a child process with exactly these settings, e.g.
        `subprocess.run(["auditlog", "ingest"], env={**os.environ, **settings.to_env()})`.
        Every field is written (empty ones as ""), so the child ignores whatever the parent's
        environment said; secrets (`master_key`, `key_seed`) are included when set.
        """
        return {
            _ENV_NAMES.get(field.name, "AUDITLOG_" + field.name.upper()): str(getattr(self, field.name))
            for field in dataclasses.fields(self)
        }

    def job_parallelism(self, local: bool) -> int:
        """The ingest job's parallelism: `parallelism` if set, else 1 locally and 2 on a cluster.

        On the local mini-cluster every subtask runs in one JVM with one embedded Python
        interpreter (thread mode), so two sequencing subtasks only hand its GIL back and forth
        for every record: 8,717-9,194 ev/s at 1 against 6,916-7,316 at 2 on two cores (README,
        `make bench-ingest`). A cluster's TaskManagers have one slot and one interpreter each.
        """
        if self.parallelism < 0:
            raise SystemExit(f"AUDITLOG_PARALLELISM={self.parallelism} is negative; set it to 1 or more (0: auto)")
        return self.parallelism or (1 if local else 2)

    @property
    def kafka_bootstrap(self) -> str:
        return self.kafka_bootstrap_servers or f"{self.host}:{self.kafka_port}"

    @property
    def s3_endpoint(self) -> str:
        return self.s3_endpoint_url or f"http://{self.host}:{self.s3_port}"

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

    @property
    def signer_key_file(self) -> Path:
        """The checkpoint-signing key of this deployment, named after `origin`."""
        return self.keys_dir / (self.origin.replace("/", "_") + ".key")

    @property
    def verifier_key_file(self) -> Path:
        return self.keys_dir / (self.origin.replace("/", "_") + ".vkey")

    @property
    def keystore_path(self) -> Path:
        if self.keystore_file:
            return Path(self.keystore_file).expanduser().resolve()
        return self.home / "keystore.sqlite"

    @property
    def local_keystore_url(self) -> str:
        """The key-store URL of the stack's own PostgreSQL (`auditlog stack up postgres`)."""
        return f"postgresql://auditlog@{self.host}:{self.postgres_port}/auditlog"

    @property
    def retention_policy_path(self) -> Path:

        if self.retention_policy_file:
            return Path(self.retention_policy_file).expanduser().resolve()
        return DEFAULT_POLICY_FILE

    @property
    def apikeys_path(self) -> Path:
        if self.apikeys_file:
            return Path(self.apikeys_file).expanduser().resolve()
        return self.home / "apikeys.sqlite"

    @property
    def local_witness_name(self) -> str:
        return self.witness_name or f"{self.origin}/witness"

    @property
    def local_witness_url(self) -> str:
        return f"http://{self.host}:{self.witness_port}"

    @property
    def local_witness_vkey_file(self) -> Path:
        """The local witness's cosignature verifier key, written by `auditlog stack up`."""
        return self.home / "witness" / "witness.vkey"

    @property
    def witness_list(self) -> list[WitnessConfig]:
        """The witnesses to ask for cosignatures (see `witnesses`), in the order given."""
        text = self.witnesses.strip()
        if text.lower() == "none":
            return []
        if not text:
            vkey_file = self.local_witness_vkey_file
            if not vkey_file.is_file():
                return []
            return [WitnessConfig(self.local_witness_name, self.local_witness_url, vkey_file.read_text().strip())]
        out = []
        for entry in text.replace("\n", ";").split(";"):
            if not entry.strip():
                continue
            parts = entry.split()
            if len(parts) != 3:
                raise SystemExit(f"AUDITLOG_WITNESSES entry {entry.strip()!r} is not 'name URL VKEY'")
            out.append(WitnessConfig(*parts))
        return out


@dataclass(frozen=True)
class WitnessConfig:
    """One witness: a short name for reports, where it answers, and its cosignature verifier key."""

    name: str
    url: str
    vkey: str


# The ports of the stack's Kafka, SeaweedFS (s3_master_port and the ones after it), Flink and witness.
STACK_PORTS = (
    "kafka_port",
    "kafka_controller_port",
    "s3_port",
    "s3_master_port",
    "flink_port",
    "flink_rpc_port",
    "witness_port",
)
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
