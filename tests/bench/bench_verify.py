"""Verify benchmark (`make bench-verify`): events verified per second over at least 1,000,000 events.

Not a test: it prints a table. It uses the stack of `auditlog stack up` (S3 on the configured
ports) and builds, once, a deployment of signed logs: generated ~500-byte events through the
ingest job's own per-log code (`LogSequencer`), blocks and checkpoints in a WORM bucket of its
own, ClickHouse (embedded chDB) loaded by the archive indexer. The build is kept under
$AUDITLOG_HOME/bench/verify-N and reused by later runs. Then `auditlog verify` runs on it
(archive replay + ClickHouse digests + comparison, Beam DirectRunner) and the rate is printed:
over the verification itself, and over the whole command including Python and Beam start-up.

    make bench-verify                        # 1,000,000 events in 8 logs
    BENCH_EVENTS=200000 make bench-verify

Beside the rates it prints the CPU each event costs (µs of CPU per event): the verify command's
own processes, SeaweedFS serving the reads, and, measured alone afterwards, the archive replay of
one log and ClickHouse's digest pass; all of it runs on the same cores.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from schemas.settings import REPO_ROOT, Settings  # noqa: E402

EVENTS = int(os.environ.get("BENCH_EVENTS", "1000000"))
LOGS = int(os.environ.get("BENCH_LOGS", "8"))
BLOCK_SIZE = 1000
TARGET = 200_000


def bench_settings(settings: Settings) -> Settings:
    home = settings.home / "bench" / f"verify-{EVENTS}-{LOGS}"
    return settings.replace(home=home, bucket=f"auditlog-bench-verify-{EVENTS}-{LOGS}", origin="auditlog.test")


def build() -> None:
    """Child process: writes the deployment (chDB is opened by one process at a time)."""
    from tqdm import tqdm

    from tests.synthetic import build_logs, open_deployment

    archive, clickhouse, signer = open_deployment(Settings.from_env())
    with tqdm(total=EVENTS // BLOCK_SIZE, unit="block", desc="building", file=sys.stderr, mininterval=2) as bar:
        build_logs(
            archive,
            clickhouse,
            EVENTS,
            logs=LOGS,
            block_size=BLOCK_SIZE,
            seed=2026,
            tenants=50,
            progress=lambda n: bar.update(1),
            signer=signer,
        )
    clickhouse.close()


def seaweedfs_cpu() -> float:
    """CPU seconds SeaweedFS's processes have used so far (0 when none is found)."""
    total = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            if Path(cmd.decode(errors="replace")).name == "weed":
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            continue
    return total


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def stages(settings: Settings) -> None:
    """Child process: the archive replay of one log, then ClickHouse's digest pass, each alone, in CPU µs/event."""
    from pipelines.archive_history import archive_from_spec, check_archive_log
    from pipelines.ingest_config import archive_spec
    from pipelines.io.clickhouse import open_clickhouse
    from runners.deployment import load_or_create_signer

    archive = archive_from_spec(archive_spec(settings))
    log_id = sorted(archive.list_logs())[0]
    verifier = load_or_create_signer(settings.keys_dir, settings.origin).verifier()
    weed, cpu = seaweedfs_cpu(), time.process_time()
    replayed = check_archive_log(archive, log_id, verifier, f"{settings.origin}/{log_id}")
    cpu, weed = time.process_time() - cpu, seaweedfs_cpu() - weed
    assert not replayed.findings, replayed.findings[:3]
    print(
        f"  archive replay of {log_id} alone ({replayed.events:,} events): "
        f"{cpu / replayed.events * 1e6:.1f} µs/event in Python, {weed / replayed.events * 1e6:.1f} in SeaweedFS"
    )
    clickhouse = open_clickhouse(settings.effective_clickhouse_url)
    cpu = time.process_time()
    snapshots = clickhouse.index_snapshots()
    cpu = time.process_time() - cpu
    clickhouse.close()
    rows = sum(d.rows for s in snapshots.values() for d in s.log_digests)
    print(f"  ClickHouse digest pass alone ({rows:,} rows): {cpu / max(rows, 1) * 1e6:.1f} µs/event")


def main() -> None:
    from infra.stack import Stack
    from tests.synthetic import build_once

    base = Settings.from_env()
    Stack(base).up(["s3"])
    settings = bench_settings(base)
    env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(REPO_ROOT)}
    print(
        f"auditlog verify benchmark — {os.cpu_count()} cores, {EVENTS:,} events in {LOGS} logs, "
        f"blocks of {BLOCK_SIZE}, S3 (SeaweedFS) + embedded chDB\n",
        flush=True,
    )
    build_once(settings.home, __file__, env)
    rows = []
    for attempt in range(2):
        started, cpu, weed = time.monotonic(), children_cpu(), seaweedfs_cpu()
        done = subprocess.run(
            [sys.executable, "-m", "runners.cli", "verify", "--json", "--no-witness"],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        )
        wall = time.monotonic() - started
        cpu, weed = children_cpu() - cpu, seaweedfs_cpu() - weed
        if done.returncode != 0:
            print(done.stdout[-2000:], done.stderr[-3000:])
            raise SystemExit(f"verify failed (exit {done.returncode})")
        report = json.loads(done.stdout)
        assert report["ok"] and report["events"] == EVENTS, report.get("findings_by_kind")
        rows.append((report["seconds"], wall))
        print(
            f"  run {attempt + 1}: {EVENTS / report['seconds']:>10,.0f} events/s over the verification "
            f"({report['seconds']:.1f} s)   {EVENTS / wall:>10,.0f} events/s for the whole command ({wall:.1f} s)   "
            f"CPU µs/event: verify {cpu / EVENTS * 1e6:.1f}, SeaweedFS {weed / EVENTS * 1e6:.1f}",
            flush=True,
        )
    best = min(r[0] for r in rows)
    print(f"\n  best: {EVENTS / best:,.0f} events/s verified (target ≥ {TARGET:,})\n\n  stages, alone:", flush=True)
    subprocess.run([sys.executable, __file__, "--stages"], env=env, cwd=REPO_ROOT, check=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--build"]:
        build()
    elif sys.argv[1:] == ["--stages"]:
        stages(Settings.from_env())
    else:
        main()
