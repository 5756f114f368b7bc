"""The cluster files (infra/k8s, infra/clickhouse, infra/s3) agree with the code they deploy.

Nothing here reaches a cluster. Each manifest is checked against the code it configures (JobConfig,
Settings, the ClickHouse schema, the archive's layout) and against the other manifests, so a change
on one side that the other misses fails here instead of on a cluster. ClickHouse DDL is parsed by
the real engine (chDB's formatQuery, in a child process)::

    .venv/bin/python -m pytest -q tests/unit/test_cluster_manifests.py
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import inspect
import json
import os
import re
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyflink
import pytest
import yaml

from pipelines.ingest_config import archive_spec, config_from_json, config_to_json, job_config, keystore_spec
from pipelines.io.archive import DEFAULT_RETENTION_DAYS, LOGS_PREFIX, open_archive
from pipelines.io.clickhouse import cluster_ddl, schema_statements
from pipelines.io.clickhouse.connections import _NativeConnection
from runners.cli import build_parser
from runners.commands.ingest import SHIPPED_PACKAGES
from schemas.settings import _ENV_NAMES, REPO_ROOT, Settings

K8S = REPO_ROOT / "infra" / "k8s"
CLICKHOUSE = REPO_ROOT / "infra" / "clickhouse"
S3 = REPO_ROOT / "infra" / "s3"
IMAGE_ROOT = "/opt/auditlog/"  # where the Dockerfile copies the repository
FLINK_VERSION = importlib.metadata.version("apache-flink")


def documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def one(name: str, kind: str, metadata_name: str | None = None) -> dict[str, Any]:
    found = [d for d in documents(name) if d["kind"] == kind and metadata_name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"{name}: expected one {kind} {metadata_name or ''}, found {len(found)}"
    return found[0]


def container(pod_spec: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod_spec["containers"] if c["name"] == name)


def env_of(c: dict[str, Any]) -> dict[str, str]:
    """Literal env values (secret references map to '<secret>')."""
    return {e["name"]: e.get("value", "<secret>") for e in c.get("env", [])}


def mounts(pod_spec: dict[str, Any], container_name: str) -> dict[str, str]:
    """mountPath -> volume name for one container."""
    return {m["mountPath"]: m["name"] for m in container(pod_spec, container_name).get("volumeMounts", [])}


def flag_values(args: list[str]) -> dict[str, str]:
    pairs = {}
    for i, arg in enumerate(args):
        if arg.startswith("-") and i + 1 < len(args) and not args[i + 1].startswith("-"):
            pairs[arg] = args[i + 1]
    return pairs


def repo_path(image_path: str) -> Path:
    assert image_path.startswith(IMAGE_ROOT), f"{image_path} is not under {IMAGE_ROOT}"
    return REPO_ROOT / image_path.removeprefix(IMAGE_ROOT)


@pytest.fixture(scope="module")
def flink() -> dict[str, Any]:
    return one("flinkdeployment.yaml", "FlinkDeployment")


@pytest.fixture(scope="module")
def job_json() -> str:
    return str(one("configmap-job.yaml", "ConfigMap")["data"]["job.json"])


@pytest.fixture(scope="module")
def job(job_json: str) -> Any:
    return config_from_json(job_json)


# --------------------------------------------------------------------------- every manifest


def test_every_manifest_parses_and_names_its_kind_and_namespace() -> None:
    names = sorted(p.name for p in K8S.glob("*.yaml"))
    assert names == ["configmap-job.yaml", "flinkdeployment.yaml", "indexer-deployment.yaml"]
    for name in names:
        for doc in documents(name):
            assert doc["apiVersion"] and doc["kind"], name
            assert doc["metadata"]["name"], name
            assert doc["metadata"]["namespace"] == "auditlog", f"{name}: {doc['kind']} {doc['metadata']['name']}"


def test_every_pod_runs_the_one_image(flink: dict[str, Any]) -> None:
    image = flink["spec"]["image"]
    init = flink["spec"]["jobManager"]["podTemplate"]["spec"]["initContainers"]
    deployments = [d for d in documents("indexer-deployment.yaml") if d["kind"] == "Deployment"]
    used = {c["image"] for c in init} | {
        c["image"] for d in deployments for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert used == {image}


# --------------------------------------------------------------------------- the FlinkDeployment


def test_flinkdeployment_runs_pipelines_ingest_with_pyflinks_driver(flink: dict[str, Any]) -> None:
    spec = flink["spec"]
    assert flink["apiVersion"] == "flink.apache.org/v1beta1"
    assert spec["flinkVersion"] == "v" + "_".join(FLINK_VERSION.split(".")[:2])
    job = spec["job"]
    assert job["entryClass"] == "org.apache.flink.client.python.PythonDriver"
    jar = f"flink-python-{FLINK_VERSION}.jar"
    assert job["jarURI"] == f"local:///opt/flink/opt/{jar}"
    assert (Path(pyflink.__file__).parent / "opt" / jar).exists(), f"the apache-flink pin ships no opt/{jar}"
    assert job["upgradeMode"] == "savepoint"


def test_job_args_name_files_of_the_repository_and_flags_main_accepts(flink: dict[str, Any]) -> None:
    job = flink["spec"]["job"]
    args = [str(a) for a in job["args"]]
    flags = flag_values(args)
    assert repo_path(flags["-py"]) == REPO_ROOT / "pipelines" / "ingest.py"
    shipped = flags["-pyfs"].split(",")
    assert [repo_path(p).name for p in shipped] == list(SHIPPED_PACKAGES)  # what `auditlog ingest --cluster` ships
    assert all(repo_path(p).is_dir() for p in shipped)
    main_flags = set(re.findall(r'add_argument\("(--[a-z-]+)"', (REPO_ROOT / "pipelines" / "ingest.py").read_text()))
    job_flags = {a for a in args[args.index("--config") :] if a.startswith("--")}
    assert job_flags <= main_flags, f"pipelines/ingest.py main() does not accept {job_flags - main_flags}"
    assert "--bounded" not in job_flags  # a streaming job
    assert int(flags["--parallelism"]) == job["parallelism"]  # main() sets it; the operator sizes TaskManagers by it


def test_flink_configuration(flink: dict[str, Any]) -> None:
    conf = flink["spec"]["flinkConfiguration"]
    assert all(isinstance(v, str) for v in conf.values()), "the CRD takes string values only: quote them"
    assert conf["python.execution-mode"] == "thread"
    assert conf["taskmanager.numberOfTaskSlots"] == "1"  # one GIL per TaskManager: scale with TaskManagers
    assert conf["state.backend.type"] == "rocksdb"
    assert conf["execution.checkpointing.incremental"] == "true"
    assert conf["execution.checkpointing.mode"] == "EXACTLY_ONCE"
    assert conf["execution.checkpointing.interval"] == "10 s"
    interval_ms = flag_values([str(a) for a in flink["spec"]["job"]["args"]])["--checkpoint-interval-ms"]
    assert int(interval_ms) == 10_000  # main() enables checkpointing with its own flag: keep them equal
    for key in ("execution.checkpointing.dir", "execution.checkpointing.savepoint-dir", "high-availability.storageDir"):
        assert conf[key].startswith("s3://"), key
    assert conf["high-availability.type"] == "kubernetes"
    assert conf["restart-strategy.type"] in ("exponential-delay", "fixed-delay", "failure-rate")
    for key in ("python.executable", "python.client.executable"):
        assert conf[key] == "/usr/local/bin/python3.11", key  # where the Dockerfile installs Python
    env = container(flink["spec"]["podTemplate"]["spec"], "flink-main-container")["env"]
    assert {e["name"] for e in env} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}  # the s3:// plugin's keys
    assert all("secretKeyRef" in e["valueFrom"] for e in env)


def test_pods_mount_the_paths_job_json_names(flink: dict[str, Any], job: Any) -> None:
    spec = flink["spec"]
    tm = spec["taskManager"]["podTemplate"]["spec"]
    tm_mounts = mounts(tm, "flink-main-container")
    volumes = {v["name"]: v for v in tm["volumes"]}
    for path in (job.signer_key_file, job.keystore["master_key_file"], job.keystore["keystore_file"]):
        directory = str(Path(path).parent)
        assert directory in tm_mounts, f"TaskManagers read {path} but mount nothing at {directory}"
    assert "secret" in volumes[tm_mounts[str(Path(job.signer_key_file).parent)]]
    assert "secret" in volumes[tm_mounts[str(Path(job.keystore["master_key_file"]).parent)]]
    assert job.keystore["master_key"] == "" and job.keystore["key_seed"] == ""  # never secrets in a ConfigMap

    jm = spec["jobManager"]["podTemplate"]["spec"]
    config_path = flag_values([str(a) for a in spec["job"]["args"]])["--config"]
    assert config_path in mounts(jm, "flink-main-container")
    jm_volumes = {v["name"]: v for v in jm["volumes"]}
    assert jm_volumes["job-template"]["configMap"]["name"] == one("configmap-job.yaml", "ConfigMap")["metadata"]["name"]
    assert jm_volumes["job-config"]["emptyDir"]["medium"] == "Memory"  # the rendered file holds credentials


def test_init_container_fills_every_placeholder_of_job_json(
    flink: dict[str, Any], job_json: str, tmp_path: Path
) -> None:
    init = flink["spec"]["jobManager"]["podTemplate"]["spec"]["initContainers"][0]
    placeholders = set(re.findall(r"\$\{(\w+)\}", job_json))
    assert placeholders and placeholders == {e["name"] for e in init["env"]}
    assert all("secretKeyRef" in e["valueFrom"] for e in init["env"])

    script = init["command"][-1]
    (tmp_path / "template").mkdir()
    (tmp_path / "rendered").mkdir()
    (tmp_path / "template" / "job.json").write_text(job_json)
    script = script.replace("/etc/auditlog/", f"{tmp_path}/")
    values = {name: f"value-of-{name}" for name in placeholders}
    env = {k: v for k, v in os.environ.items() if k not in placeholders}
    done = subprocess.run([sys.executable, "-c", script], env={**env, **values}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rendered = config_from_json((tmp_path / "rendered" / "job.json").read_text())
    assert rendered.archive["access_key"] == "value-of-AUDITLOG_ARCHIVE_ACCESS_KEY"
    assert rendered.archive["secret_key"] == "value-of-AUDITLOG_ARCHIVE_SECRET_KEY"

    missing = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert missing.returncode != 0 and "no value for" in missing.stderr


def test_dockerfile_builds_what_the_manifests_use(flink: dict[str, Any]) -> None:
    dockerfile = (K8S / "Dockerfile").read_text()
    assert re.search(rf"^ARG FLINK_VERSION={re.escape(FLINK_VERSION)}$", dockerfile, re.M), "Flink != apache-flink pin"
    assert re.search(r"^FROM flink:\$\{FLINK_VERSION\}-scala_2\.12-java17$", dockerfile, re.M)
    assert re.search(r"^ARG PYTHON_VERSION=3\.11\.\d+$", dockerfile, re.M)
    assert "--enable-shared" in dockerfile  # thread mode embeds libpython
    assert "flink-s3-fs-presto" in dockerfile  # s3:// checkpoints
    assert "flink-sql-connector-kafka" in dockerfile and "/opt/flink/lib/" in dockerfile
    # The ingest job's JVM operators, compiled from the sources infra/jars.py compiles locally.
    assert "COPY pipelines/jvm /build/jvm" in dockerfile and "javac --release 17" in dockerfile
    assert "COPY --from=operators /auditlog-flink.jar /opt/flink/lib/" in dockerfile
    jar = urlsplit(flink["spec"]["job"]["jarURI"]).path
    assert f'cp "{jar.replace(FLINK_VERSION, "${FLINK_VERSION}")}" /opt/flink/lib/' in dockerfile  # PemJa once per JVM
    copied = set(re.findall(r"^COPY (\w+) /opt/auditlog/\1$", dockerfile, re.M))
    packages = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert copied == {p.rstrip("*") for p in packages["include"]}, "copy every package pyproject.toml installs"
    assert set(SHIPPED_PACKAGES) <= copied


# --------------------------------------------------------------------------- job.json


def test_job_json_round_trips_through_config_from_json(job_json: str, job: Any) -> None:
    assert config_to_json(job) == job_json.rstrip("\n")


def test_job_json_has_the_fields_of_the_real_schema(job: Any) -> None:
    reference = job_config(Settings())
    as_dict, expected = dataclasses.asdict(job), dataclasses.asdict(reference)
    assert as_dict.keys() == expected.keys()
    assert as_dict["options"].keys() == expected["options"].keys()
    assert job.keystore.keys() == keystore_spec(Settings()).keys()
    assert archive_spec(Settings()).keys() <= job.archive.keys() <= inspect.signature(open_archive).parameters.keys()
    assert job.options.origin_prefix != Settings().origin  # production values, not the local defaults
    assert Path(job.signer_key_file).name == Settings(origin=job.options.origin_prefix).signer_key_file.name


# --------------------------------------------------------------------------- the indexer and the cut ticker


def settings_names() -> set[str]:
    return {_ENV_NAMES.get(f.name, "AUDITLOG_" + f.name.upper()) for f in dataclasses.fields(Settings)}


def test_indexer_reads_the_archive_the_job_writes(job: Any) -> None:
    deployment = one("indexer-deployment.yaml", "Deployment", "auditlog-indexer")
    pod = deployment["spec"]["template"]["spec"]
    indexer = container(pod, "indexer")
    assert indexer["command"][:3] == ["auditlog", "index", "--follow"]
    env = env_of(indexer)
    assert {n for n in env if n.startswith("AUDITLOG_")} <= settings_names()
    settings = Settings.from_env({k: v for k, v in env.items() if v != "<secret>"})
    assert settings.origin == job.options.origin_prefix
    assert settings.bucket == job.archive["bucket"]
    assert urlsplit(settings.s3_endpoint).hostname == urlsplit(job.archive["endpoint"]).hostname
    assert deployment["spec"]["replicas"] == 1

    key_dir = mounts(pod, "indexer")[str(settings.keys_dir)]
    volume = next(v for v in pod["volumes"] if v["name"] == key_dir)
    key_map = one("indexer-deployment.yaml", "ConfigMap", volume["configMap"]["name"])
    assert settings.verifier_key_file.name in key_map["data"]


def test_indexer_clickhouse_url_carries_the_cluster_settings() -> None:
    indexer = container(
        one("indexer-deployment.yaml", "Deployment", "auditlog-indexer")["spec"]["template"]["spec"], "indexer"
    )
    url = env_of(indexer)["AUDITLOG_CLICKHOUSE_URL"].replace("$(CLICKHOUSE_PASSWORD)", "pw")
    names = [e["name"] for e in indexer["env"]]
    assert names.index("CLICKHOUSE_PASSWORD") < names.index("AUDITLOG_CLICKHOUSE_URL")  # $(VAR) sees earlier vars only
    connection = _NativeConnection(url)  # parses the URL as the indexer will; connects lazily
    settings = connection.client.settings
    assert settings["distributed_foreground_insert"] == "1"
    assert settings["select_sequential_consistency"] == "1" and settings["insert_quorum_parallel"] == "0"
    assert urlsplit(url).path == "/auditlog"


def test_cut_ticker_writes_into_the_topic_the_job_reads(job: Any) -> None:
    pod = one("indexer-deployment.yaml", "Deployment", "auditlog-cut-ticker")["spec"]["template"]["spec"]
    ticker = container(pod, "cut-ticker")
    env = env_of(ticker)
    assert set(env) <= settings_names()
    settings = Settings.from_env(env)
    assert settings.kafka_bootstrap == job.bootstrap
    assert settings.topic == job.options.topic
    assert ticker["command"] == ["auditlog", "cut-ticker"]
    assert "cut-ticker" in build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]


# --------------------------------------------------------------------------- ClickHouse


def test_cluster_sql_is_the_generators_output() -> None:
    assert (CLICKHOUSE / "cluster.sql").read_text() == cluster_ddl(), (
        "infra/clickhouse/cluster.sql is stale; regenerate it with\n  .venv/bin/python -c "
        "\"from pipelines.io.clickhouse import cluster_ddl; print(cluster_ddl(), end='')\" "
        "> infra/clickhouse/cluster.sql"
    )


def test_cluster_sql_has_a_replicated_and_a_distributed_table_per_schema_table() -> None:
    cluster = schema_statements((CLICKHOUSE / "cluster.sql").read_text())
    assert all(" ON CLUSTER '{cluster}'" in s for s in cluster)
    tables = {
        m["table"]: m["body"]
        for s in schema_statements()
        if (m := re.match(r"CREATE TABLE IF NOT EXISTS auditlog\.(?P<table>\w+)\s*\((?P<body>.*)\)\s*ENGINE", s, re.S))
    }
    assert set(tables) == {"audit_logs", "audit_leaves", "audit_blocks", "audit_checkpoints"}
    for table, columns in tables.items():
        local = [s for s in cluster if s.startswith(f"CREATE TABLE IF NOT EXISTS auditlog.{table}_local ")]
        distributed = [s for s in cluster if s.startswith(f"CREATE TABLE IF NOT EXISTS auditlog.{table} ")]
        assert len(local) == 1 and len(distributed) == 1, table
        assert (
            f"ENGINE = ReplicatedMergeTree('/clickhouse/tables/{{shard}}/auditlog/{table}', '{{replica}}')" in local[0]
        )
        assert [c.strip() for c in columns.splitlines()] == [
            c.strip() for c in local[0].split("(", 1)[1].rsplit(")\nENGINE", 1)[0].splitlines()
        ], f"{table}_local has other columns than schemas/clickhouse.sql"
        assert "replicated_deduplication_window = " in local[0] and "non_replicated" not in local[0]
        engine = f"ENGINE = Distributed('{{cluster}}', auditlog, {table}_local, cityHash64("
        assert f"AS auditlog.{table}_local\n{engine}" in distributed[0], distributed[0]


def test_cluster_ddl_names_another_cluster() -> None:
    assert "ON CLUSTER 'prod'" in cluster_ddl("prod") and "Distributed('prod', " in cluster_ddl("prod")
    assert "{cluster}" not in cluster_ddl("prod").split("\n\n", 1)[1]  # only the header mentions the macro


FORMAT_QUERY_CHECK = r"""
import json, sys, chdb
for statement in json.load(sys.stdin):
    literal = statement.replace("\\", "\\\\").replace("'", "\\'")
    chdb.query(f"SELECT formatQuery('{literal}')", "TSV")  # raises on a syntax error
"""


def test_clickhouse_parses_every_statement() -> None:
    statements = schema_statements((CLICKHOUSE / "cluster.sql").read_text()) + schema_statements(
        (CLICKHOUSE / "tiering.sql").read_text()
    )
    done = subprocess.run(
        [sys.executable, "-c", FORMAT_QUERY_CHECK],
        input=json.dumps(statements),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_storage_xml_defines_what_tiering_sql_uses() -> None:
    root = ET.parse(CLICKHOUSE / "storage.xml").getroot()
    disk = root.find("storage_configuration/disks/s3")
    assert disk is not None and disk.findtext("type") == "s3"
    assert disk.findtext("use_environment_credentials") == "true" and disk.find("secret_access_key") is None
    volumes = root.find("storage_configuration/policies/hot_and_cold/volumes")
    assert volumes is not None
    disks_by_volume = {v.tag: [d.text for d in v.findall("disk")] for v in volumes}
    assert disks_by_volume["default"] == ["default"]  # lets an existing table switch to this policy
    assert ["s3"] in disks_by_volume.values()
    tiering = (CLICKHOUSE / "tiering.sql").read_text()
    assert "storage_policy = 'hot_and_cold'" in tiering and "TO DISK 's3'" in tiering
    assert "auditlog.audit_logs_local" in tiering and "auditlog.audit_logs_local" in cluster_ddl()


# --------------------------------------------------------------------------- S3


def statements_of(policy: str) -> list[dict[str, Any]]:
    data = json.loads((S3 / policy).read_text())
    assert data["Version"] == "2012-10-17"
    for s in data["Statement"]:
        assert s["Effect"] in ("Allow", "Deny") and s["Action"] and s["Resource"]
    return list(data["Statement"])


def actions(statements: list[dict[str, Any]], effect: str) -> set[str]:
    return {a for s in statements if s["Effect"] == effect for a in s["Action"]}


def resources(statements: list[dict[str, Any]]) -> set[str]:
    return {r for s in statements for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])}


def test_object_lock_configuration_is_seven_years_compliance() -> None:
    lock = json.loads((S3 / "object-lock.json").read_text())
    assert lock["ObjectLockEnabled"] == "Enabled"
    retention = lock["Rule"]["DefaultRetention"]
    assert retention == {"Mode": "COMPLIANCE", "Years": 7}  # Years or Days, never both
    assert abs(retention["Years"] * 365.25 - DEFAULT_RETENTION_DAYS) < 2  # what the writer sets per object


def test_writer_policy_puts_and_never_deletes(job: Any) -> None:
    statements = statements_of("writer-policy.json")
    allowed, denied = actions(statements, "Allow"), actions(statements, "Deny")
    assert allowed == {"s3:PutObject", "s3:PutObjectRetention", "s3:GetObject"}  # GetObject: replays read back
    assert {"s3:DeleteObject", "s3:DeleteObjectVersion", "s3:BypassGovernanceRetention"} <= denied
    bucket = job.archive["bucket"]
    allow_resources = resources([s for s in statements if s["Effect"] == "Allow"])
    assert allow_resources == {f"arn:aws:s3:::{bucket}/{LOGS_PREFIX}*"}  # only the archive's layout
    assert resources(statements) <= {f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*", *allow_resources}


def test_reader_policy_only_reads(job: Any) -> None:
    statements = statements_of("reader-policy.json")
    allowed, denied = actions(statements, "Allow"), actions(statements, "Deny")
    assert {"s3:ListBucket", "s3:GetObject"} <= allowed
    assert not {a for a in allowed if a.startswith(("s3:Put", "s3:Delete", "s3:Bypass"))}
    assert {"s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion"} <= denied
    bucket = job.archive["bucket"]
    assert resources(statements) == {f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"}
