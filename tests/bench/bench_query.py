"""Query benchmark (`make bench-query`): search and proof latency of `auditlog serve` under load.

Not a test: it prints a table. It uses the stack of `auditlog stack up` (S3 on the configured
ports) and builds, once, a deployment of 10,000,000 events across 1,000 tenants in 8 logs: the
rows are generated inside ClickHouse (INSERT … SELECT FROM numbers(), with canonical JSON, leaf
hashes and leaves that agree), each log's tree head is computed and signed and put in a WORM
bucket, so searches and proofs run against real sizes. Kept under
$AUDITLOG_HOME/bench/query-N and reused.

Then `auditlog serve` answers a closed-loop load generator (tests/bench/loadgen, Go, 50
concurrent connections on loopback): tenant + actor + 30-day window searches, and proofs of
random events. Targets: search p99 ≤ 50 ms, proof p99 ≤ 20 ms.

    make bench-query
    BENCH_EVENTS=1000000 BENCH_SECONDS=10 make bench-query
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from schemas.settings import REPO_ROOT, Settings  # noqa: E402

EVENTS = int(os.environ.get("BENCH_EVENTS", "10000000"))
TENANTS = 1000
LOGS = 8
ACTORS = 50
SPAN_DAYS = 90
SECONDS = int(os.environ.get("BENCH_SECONDS", "20"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "50"))
CHUNK = 1_000_000

_ROWS_SQL = """
INSERT INTO auditlog.audit_logs ({columns})
SELECT tenant_id, event_id, occurred_at, actor_id, 'USER', '', action, resource_id, resource_type, result,
       request_id, '{{}}', log_id, leaf_index, SHA256(concat(char(0), canonical)), intDiv(leaf_index, 1000),
       unhex(repeat('00', 32)), canonical, 'standard', retain_until, toDateTime64(0, 3, 'UTC')
FROM (
  SELECT number AS n, sipHash64(n) AS h,
    concat('t_', toString(1000 + n % {tenants})) AS tenant_id,
    concat('evt_', lower(hex(h))) AS event_id,
    toDateTime64('2026-08-01 00:00:00', 3, 'UTC')
        + toIntervalMillisecond(intDiv(n * {span_ms}, {events})) AS occurred_at,
    concat('u_', toString(1000 + n % {tenants}), '_', toString(intDiv(h, 7) % {actors})) AS actor_id,
    ['user.login', 'document.read', 'document.update', 'role.grant', 'billing.plan.update'][1 + h % 5] AS action,
    ['DOCUMENT', 'ROLE', 'USER', 'INVOICE'][1 + intDiv(h, 5) % 4] AS resource_type,
    concat(lower(resource_type), '_', toString(intDiv(h, 20) % 500)) AS resource_id,
    if(h % 14 = 0, 'FAILURE', 'SUCCESS') AS result,
    concat('req_', lower(hex(sipHash64(n, 1)))) AS request_id,
    concat('bench.p', toString(n % {logs})) AS log_id,
    intDiv(n, {logs}) AS leaf_index,
    occurred_at + toIntervalYear(1) AS retain_until,
    concat('{{"action":"', action, '","actor":{{"id":"', actor_id, '","type":"USER"}},"event_id":"', event_id,
           '","metadata":{{}},"occurred_at":"', formatDateTime(occurred_at, '%Y-%m-%dT%H:%i:%S.%fZ'),
           '","request_id":"', request_id, '","resource":{{"id":"', resource_id, '","type":"', resource_type,
           '"}},"result":"', result, '","retention":{{"class":"standard","until":"',
           formatDateTime(retain_until, '%Y-%m-%dT%H:%i:%S.%fZ'), '"}},"tenant_id":"', tenant_id, '"}}') AS canonical
  FROM numbers({start}, {count})
)
"""


def bench_settings(settings: Settings) -> Settings:
    home = settings.home / "bench" / f"query-{EVENTS}"
    return settings.replace(home=home, bucket=f"auditlog-bench-query-{EVENTS}", origin="auditlog.test")


def build() -> None:
    """Child process: rows, leaves, signed tree heads (chDB is opened by one process at a time)."""
    from schemas.rows import AUDIT_LOG_COLUMNS
    from tests.synthetic import open_deployment
    from transforms.checkpoint import Checkpoint, sign_checkpoint
    from transforms.merkle import MerkleTree

    settings = Settings.from_env()
    archive, ch, signer = open_deployment(settings)
    span_ms = SPAN_DAYS * 86_400_000
    for start in range(0, EVENTS, CHUNK):
        count = min(CHUNK, EVENTS - start)
        sql = _ROWS_SQL.format(
            columns=", ".join(AUDIT_LOG_COLUMNS),
            tenants=TENANTS,
            span_ms=span_ms,
            events=EVENTS,
            actors=ACTORS,
            logs=LOGS,
            start=start,
            count=count,
        )
        ch._conn.command(sql)
        print(f"  rows {start + count:,}/{EVENTS:,}", file=sys.stderr, flush=True)
    ch._conn.command(
        "INSERT INTO auditlog.audit_leaves SELECT log_id, leaf_index, leaf_hash, tenant_id, event_id, block_index "
        "FROM auditlog.audit_logs"
    )
    # Merge the bulk-loaded parts, as the background merges of a running server would have.
    ch._conn.command("OPTIMIZE TABLE auditlog.audit_logs FINAL")
    ch._conn.command("OPTIMIZE TABLE auditlog.audit_leaves FINAL")
    for p in range(LOGS):
        log_id = f"bench.p{p}"
        size = int(ch.query("SELECT count() FROM auditlog.audit_leaves WHERE log_id = {l:String}", {"l": log_id})[0][0])
        tree = MerkleTree(ch.leaf_hashes(log_id, size))
        note = sign_checkpoint(Checkpoint(f"{settings.origin}/{log_id}", size, tree.root()), signer)
        archive.put_checkpoint(log_id, size, note)
        print(f"  signed {log_id} at {size:,}", file=sys.stderr, flush=True)
    sample = ch.query(
        "SELECT tenant_id, event_id, actor_id FROM auditlog.audit_logs WHERE sipHash64(event_id) % 1000 = 7 LIMIT 20000"
    )
    (settings.home / "sample.json").write_text(json.dumps([list(map(str, r)) for r in sample]))
    ch.close()


def loadgen(urls: list[str], key: str, label: str) -> dict:
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"auditlog-bench-{label}.urls"
    path.write_text("\n".join(urls) + "\n")
    done = subprocess.run(
        [
            "go",
            "run",
            ".",
            "-urls",
            str(path),
            "-c",
            str(CONCURRENCY),
            "-d",
            f"{SECONDS}s",
            "-H",
            f"Authorization: Bearer {key}",
        ],
        cwd=REPO_ROOT / "tests" / "bench" / "loadgen",
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


def main() -> None:
    from infra.stack import Stack
    from tests.synthetic import build_once

    base = Settings.from_env()
    Stack(base).up(["s3"])
    settings = bench_settings(base)
    port = settings.api_port + 17
    env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(REPO_ROOT)}
    print(
        f"auditlog query benchmark — {os.cpu_count()} cores, {EVENTS:,} events, {TENANTS:,} tenants, {LOGS} logs, "
        f"{CONCURRENCY} concurrent requests for {SECONDS} s each, embedded chDB\n",
        flush=True,
    )
    build_once(settings.home, __file__, env)
    created = subprocess.run(
        [sys.executable, "-m", "runners.cli", "apikeys", "create", "--admin", "--label", "bench"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    key = re.search(r"alk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", created).group(0)  # type: ignore[union-attr]
    sample = json.loads((settings.home / "sample.json").read_text())
    server = subprocess.Popen(
        [sys.executable, "-m", "runners.cli", "serve", "--no-index", "--no-kafka", "--port", str(port)],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}/api/v1"
    try:
        _wait(f"http://127.0.0.1:{port}/openapi.json")
        rng = random.Random(42)
        search_urls = []
        for tenant, _, actor in rng.sample(sample, min(4000, len(sample))):
            start = dt.date(2026, 8, 1) + dt.timedelta(days=rng.randint(0, SPAN_DAYS - 30))
            end = start + dt.timedelta(days=30)
            search_urls.append(
                f"{base_url}/tenants/{tenant}/audit-logs?actor_id={actor}&start_time={start}T00:00:00Z"
                f"&end_time={end}T00:00:00Z&limit=100"
            )
        proof_urls = [f"{base_url}/tenants/{t}/audit-logs/{e}/proof" for t, e, _ in sample]
        started = time.monotonic()
        # Warm-up: the first proof of each log loads its tree (then kept); the sample covers every log.
        for url in proof_urls[:200] + search_urls[:50]:
            _get(url, key)
        print(f"  warm-up (every log's tree loaded, caches warm): {time.monotonic() - started:.1f} s\n", flush=True)
        rows = []
        for label, urls, target in (("search: tenant + actor + 30 days", search_urls, 50), ("proof", proof_urls, 20)):
            result = loadgen(urls, key, label.split(":")[0])
            rows.append((label, result, target))
            verdict = "meets" if result["p99_ms"] <= target and not result["errors"] else "MISSES"
            print(
                f"  {label:<34} {result['rps']:>8,.0f} req/s   p50 {result['p50_ms']:6.1f} ms   "
                f"p99 {result['p99_ms']:6.1f} ms"
                f"   errors {result['errors']}   target p99 ≤ {target} ms: {verdict}",
                flush=True,
            )
    finally:
        server.terminate()
        server.wait(30)


def _wait(url: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit("auditlog serve did not come up")


def _get(url: str, key: str) -> None:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    urllib.request.urlopen(request, timeout=300).read()


if __name__ == "__main__":
    if sys.argv[1:] == ["--build"]:
        build()
    else:
        main()
