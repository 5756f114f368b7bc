"""verify, export and rebuild on Beam's Prism runner, workers in processes of their own, against the DirectRunner.

One small signed deployment (real SeaweedFS with Object Lock, embedded chDB; built and tampered
with by tamper_store.py in child processes) is verified, exported and rebuilt twice by the CLI:
with the DirectRunner in the command's process, and with `--runner prism` — Prism (`make prism`,
built from the Go module proxy at the Beam SDK's version) running the pipeline, its SDK workers
started by a worker pool in another process (Prism's EXTERNAL environment). Both runs must give
the same findings, the same export files and proofs, and the same rebuilt tables; tampering with
either store is found under Prism as on the DirectRunner::

    AUDITLOG_TEST_PORT_OFFSET=51000 .venv/bin/python -m pytest tests/integration/test_beam_prism.py -s
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.beam import WorkerPool, prism_bin
from schemas.settings import REPO_ROOT, Settings
from tests.integration.test_tamper import AUDITLOG, _run, findings, kinds, tamper

pytestmark = pytest.mark.integration

TABLES = ("audit_logs", "audit_leaves", "audit_blocks", "audit_checkpoints")
EXPORTED = ("events.csv", "events.jsonl", "events.parquet")


@pytest.fixture
def deployment(stack, stack_settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, dict[str, str]]]:
    """A fresh home and bucket holding two built logs (600 events); the environment that names them."""
    settings = stack_settings.replace(home=tmp_path / "home", bucket="prism-runs", origin="auditlog.test")
    env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(REPO_ROOT)}
    built = _run([sys.executable, str(Path(__file__).with_name("tamper_store.py")), "build"], env)
    assert built.returncode == 0, built.stderr[-3000:]
    yield settings, env


@pytest.fixture
def worker_pool(deployment: tuple[Settings, dict[str, str]]) -> Iterator[WorkerPool]:
    """Beam's SDK worker pool in a process of its own; Prism asks it for workers (EXTERNAL environment)."""
    settings, _ = deployment
    pool = WorkerPool(settings).start()
    try:
        yield pool
    finally:
        pool.stop()


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return _run([*AUDITLOG, *args], env, timeout=600)


def verify(env: dict[str, str], *extra: str) -> tuple[int, dict[str, Any]]:
    done = cli(env, "verify", "--json", "--no-witness", *extra)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    report = json.loads(done.stdout)
    report.pop("seconds")
    return done.returncode, report


def tables(env: dict[str, str]) -> dict[str, tuple[int, str]]:
    """Every row of the four tables, in order: (count, SHA-256 of the rows), read in a child process."""
    child = subprocess.run(
        [sys.executable, __file__], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert child.returncode == 0, child.stderr[-3000:]
    return {name: (n, digest) for name, (n, digest) in json.loads(child.stdout.splitlines()[-1]).items()}


def export(env: dict[str, str], out: Path, *extra: str) -> dict[str, bytes]:
    done = cli(env, "export", "--tenant", "t_1000", "--proofs", "--out", str(out), *extra)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    checked = cli(
        env, "verify-export", str(out), "--key", str(Path(env["AUDITLOG_HOME"]) / "keys" / "auditlog.test.vkey")
    )
    assert checked.returncode == 0, checked.stdout
    files = {name: (out / name).read_bytes() for name in EXPORTED}
    files.update({f"proofs/{p.name}": p.read_bytes() for p in sorted((out / "proofs").iterdir())})
    manifest = json.loads((out / "MANIFEST.note").read_text().splitlines()[0])
    manifest.pop("created_at")
    files["MANIFEST (but its time)"] = json.dumps(manifest, sort_keys=True).encode()
    return files


def test_prism_with_workers_in_other_processes_gives_what_the_direct_runner_gives(
    deployment: tuple[Settings, dict[str, str]], worker_pool: WorkerPool, tmp_path: Path
) -> None:
    settings, env = deployment
    print(f"\nPrism {prism_bin(settings)}; worker pool {worker_pool.address} (pid {worker_pool.proc.pid})")  # type: ignore[union-attr]
    prism = {**env, "AUDITLOG_BEAM_WORKER_POOL": worker_pool.address}  # the pool this test started
    own_pool = {**env, "AUDITLOG_BEAM_RUNNER": "prism"}  # the setting; the command starts a pool itself

    # A clean deployment: the same report, nothing found.
    direct = verify(env)
    assert direct[0] == 0 and direct[1]["ok"] and direct[1]["events"] == 600, direct
    assert verify(prism, "--runner", "prism") == direct

    # Exports: byte-identical files and proofs, the same manifest but for its creation time.
    on_direct = export(env, tmp_path / "export-direct")
    on_prism = export(own_pool, tmp_path / "export-prism")
    assert sorted(on_prism) == sorted(on_direct) and len(on_direct) > len(EXPORTED) + 100
    assert [name for name in on_direct if on_prism[name] != on_direct[name]] == []

    # ClickHouse tampered with three ways: named alike by both, and found under Prism.
    for case in ("update_field", "delete_row", "insert_row"):
        tamper(env, case)
    direct = verify(env)
    assert direct[0] == 1 and kinds(direct[1]) == {
        ("clickhouse", "modified"),
        ("clickhouse", "deleted"),
        ("clickhouse", "inserted"),
    }
    assert verify(prism, "--runner", "prism") == direct

    # Rebuilds: the same tables from the archive alone, whichever runner loads them.
    rebuilt = cli(prism, "rebuild", "--runner", "prism")
    assert rebuilt.returncode == 0 and "rebuilt: 600 events in 2 logs" in rebuilt.stdout, (
        rebuilt.stdout + rebuilt.stderr[-3000:]
    )
    on_prism_tables = tables(env)
    rebuilt = cli(env, "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr[-3000:]
    assert tables(env) == on_prism_tables
    assert on_prism_tables["audit_logs"][0] == 600
    assert verify(prism, "--runner", "prism")[1]["ok"]

    # The archive itself tampered with: found under Prism as on the DirectRunner.
    tamper(env, "overwrite_block")
    direct = verify(env)
    assert direct[0] == 1 and ("archive", "archive object overwritten") in kinds(direct[1]), findings(direct[1])
    assert verify(prism, "--runner", "prism") == direct

    # The workers were processes the pool started, not threads of the command.
    log = worker_pool.log_file.read_text()
    assert log.count("Starting worker with command") >= 5, log[-2000:]


def _dump_tables() -> None:
    from pipelines.io.clickhouse import open_clickhouse

    clickhouse = open_clickhouse(Settings.from_env().effective_clickhouse_url)
    out = {}
    for table in TABLES:
        rows = clickhouse.query(f"SELECT * FROM auditlog.{table} ORDER BY ALL")
        out[table] = (len(rows), hashlib.sha256(repr(rows).encode()).hexdigest())
    clickhouse.close()
    print(json.dumps(out))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))
    _dump_tables()
