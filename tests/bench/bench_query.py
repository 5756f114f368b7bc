"""Query benchmark (`make bench-query`): proof and search latency of `auditlog serve` under load.

Not a test: it prints a table. It uses the stack of `auditlog stack up` (S3 on the configured
ports) and builds, once per size, a deployment of N events across 1,000 tenants in 8 logs:

- the rows are generated inside ClickHouse (INSERT … SELECT FROM numbers(), with canonical JSON,
  leaf hashes and leaves that agree);
- each log is then published as a C2SP tlog-tiles log in a WORM bucket, as the ingest job does:
  its leaf hashes and canonical bytes are streamed from ClickHouse in leaf order, 100,000 rows a
  query, through TileBuilder and BundleBuilder (a log is never held in memory), every full hash
  tile and entry bundle and the partial ones of the final size are put (16 threads), and the
  checkpoint signed with the tiles' root goes in last.

Proofs therefore read what production proofs read: the place from ClickHouse's point lookup, the
checkpoint, hash tiles and the entry bundle from the archive. Each size is kept under
$AUDITLOG_HOME/bench/query-tiles-N (bucket auditlog-bench-query-tiles-N) and reused.

Then, for each size, `auditlog serve` answers a closed-loop load generator (tests/bench/loadgen,
Go, on loopback): proofs of random events at 16 in flight, twice: cold (the server's place index
copied from ClickHouse, as a running server has it, but its disk tile cache empty: each proof
reads its level-0 tile and entry bundle from S3), then over a working set of 2,000 events proved
once before (their tiles on local disk); then tenant + actor + 30-day window searches at 50.
Reported per size: req/s, p50, p99, the server's RSS (VmRSS, VmHWM) after the warm-up and after
the proof load, and the archive bytes of the tiles per event. Targets:
proofs ≥ 1,000/s with p99 ≤ 50 ms, the server's RSS flat from 1M to 10M events, search p99 ≤ 50 ms.

    make bench-query
    BENCH_SIZES=100000 BENCH_SECONDS=5 make bench-query
    BENCH_SIZES=1000000,10000000 BENCH_CONCURRENCY=16 BENCH_SEARCH_CONCURRENCY=50 make bench-query
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from schemas.settings import REPO_ROOT, Settings  # noqa: E402

SIZES = [int(s) for s in os.environ.get("BENCH_SIZES", "1000000,10000000").replace("_", "").split(",") if s.strip()]
TENANTS = 1000
LOGS = 8
ACTORS = 50
SPAN_DAYS = 90
SECONDS = int(os.environ.get("BENCH_SECONDS", "20"))
PROOF_CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "16"))
SEARCH_CONCURRENCY = int(os.environ.get("BENCH_SEARCH_CONCURRENCY", "50"))
PROOF_TARGET_RPS = 1000
PROOF_TARGET_P99_MS = 50
SEARCH_TARGET_P99_MS = 50
RSS_FLAT = 1.15  # the largest size's RSS may be at most this many times the smallest's
SAMPLE = 20_000  # events the proofs and searches pick from, uniformly over the log, at every size
WARM_EVENTS = 2_000  # the working set of the second proof row, each proved once before it
CHUNK = 1_000_000  # rows generated per INSERT … SELECT
READ_CHUNK = 100_000  # rows read back per query to build the tiles
PUT_THREADS = 16
PUTS_IN_FLIGHT = 256  # queued puts at most (each holds one tile or bundle)
CHECK_EVERY = 61  # every 61st row's leaf hash is recomputed from its canonical bytes
BY_LEAF = "auditlog.bench_by_leaf"
LOCK_DAYS = 1.0  # the bench's objects are locked a day, not the archive's 7 years: its disk can be reclaimed

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


def bench_settings(settings: Settings, events: int) -> Settings:
    # `query-tiles-N`: deployments of `query-N` hold no tiles and are not reused.
    home = settings.home / "bench" / f"query-tiles-{events}"
    return settings.replace(home=home, bucket=f"auditlog-bench-query-tiles-{events}", origin="auditlog.test")


def _say(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Build (a child process: chDB is opened by one process at a time)


def build() -> None:
    """Rows and leaves in ClickHouse, each log's tiles and bundles and its signed checkpoint in the archive."""
    from schemas.rows import AUDIT_LOG_COLUMNS
    from tests.synthetic import open_deployment

    events = int(os.environ["BENCH_EVENTS"])
    settings = Settings.from_env()
    archive, ch, signer = open_deployment(settings)
    span_ms = SPAN_DAYS * 86_400_000
    started = time.monotonic()
    for start in range(0, events, CHUNK):
        count = min(CHUNK, events - start)
        sql = _ROWS_SQL.format(
            columns=", ".join(AUDIT_LOG_COLUMNS),
            tenants=TENANTS,
            span_ms=span_ms,
            events=events,
            actors=ACTORS,
            logs=LOGS,
            start=start,
            count=count,
        )
        ch._conn.command(sql)
        _say(f"rows {start + count:,}/{events:,} ({time.monotonic() - started:.0f} s)")
    ch._conn.command(
        "INSERT INTO auditlog.audit_leaves SELECT log_id, leaf_index, leaf_hash, tenant_id, event_id, block_index "
        "FROM auditlog.audit_logs"
    )
    # Merge the bulk-loaded parts, as the background merges of a running server would have.
    ch._conn.command("OPTIMIZE TABLE auditlog.audit_logs FINAL")
    ch._conn.command("OPTIMIZE TABLE auditlog.audit_leaves FINAL")
    _say(f"leaves indexed and merged ({time.monotonic() - started:.0f} s)")

    # audit_logs is ordered by (tenant, time, event): a leaf range of one log is spread over
    # every granule, so each range query would decompress the whole canonical column. A copy of
    # the two columns ordered by (log, leaf) is read range by range instead, then dropped.
    ch._conn.command(f"DROP TABLE IF EXISTS {BY_LEAF}")
    ch._conn.command(
        f"CREATE TABLE {BY_LEAF} (log_id LowCardinality(String), leaf_index UInt64, leaf_hash FixedString(32), "
        "canonical String CODEC(ZSTD(1))) ENGINE = MergeTree ORDER BY (log_id, leaf_index)"
    )
    ch._conn.command(f"INSERT INTO {BY_LEAF} SELECT log_id, leaf_index, leaf_hash, canonical FROM auditlog.audit_logs")
    _say(f"rows copied in leaf order ({time.monotonic() - started:.0f} s)")

    stats: dict[str, float] = {"tile_objects": 0, "tile_bytes": 0, "bundle_objects": 0, "bundle_bytes": 0, "checked": 0}
    with _Putter(_fast_archive(settings, archive)) as putter:
        for p in range(LOGS):
            _publish_log(ch, putter, signer, settings, f"bench.p{p}", stats, started)
    stats["put_seconds"] = round(time.monotonic() - started, 1)
    ch._conn.command(f"DROP TABLE {BY_LEAF}")

    # SAMPLE events uniformly over the logs (a top-N by hash, not a prefix of the tenants).
    sample = ch.query(
        "SELECT tenant_id, event_id, actor_id FROM auditlog.audit_logs ORDER BY sipHash64(event_id, 42) "
        "LIMIT {n:UInt32}",
        {"n": SAMPLE},
    )
    (settings.home / "sample.json").write_text(json.dumps([list(map(str, r)) for r in sample]))
    (settings.home / "tiles.json").write_text(json.dumps(stats))
    ch.close()
    _say(f"built: {stats}")


def _fast_archive(settings: Settings, archive: Any) -> Any:
    """The same bucket through a client whose connection pool serves PUT_THREADS threads, locking for LOCK_DAYS."""
    from pipelines.io.archive import S3Archive
    from pipelines.io.s3 import s3_client

    client = s3_client(settings, connections=PUT_THREADS + 4)
    return S3Archive(client, archive.bucket, retention_days=LOCK_DAYS)


class _Putter:
    """`put_immutable` on a thread pool, at most PUTS_IN_FLIGHT queued; the first failure is raised."""

    def __init__(self, archive: Any) -> None:
        self.archive = archive
        self._pool = ThreadPoolExecutor(PUT_THREADS, thread_name_prefix="put")
        self._slots = threading.BoundedSemaphore(PUTS_IN_FLIGHT)
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self.done = 0

    def put(self, key: str, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._slots.acquire()
        future = self._pool.submit(self.archive.put_immutable, key, data)
        future.add_done_callback(self._finished)

    def _finished(self, future: Future[Any]) -> None:
        with self._lock:
            if future.exception() is not None and self._error is None:
                self._error = future.exception()
            self.done += 1
        self._slots.release()

    def drain(self) -> None:
        """Waits until every put queued so far is done."""
        for _ in range(PUTS_IN_FLIGHT):
            self._slots.acquire()
        for _ in range(PUTS_IN_FLIGHT):
            self._slots.release()
        if self._error is not None:
            raise self._error

    def __enter__(self) -> _Putter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True)
        if self._error is not None and exc[0] is None:
            raise self._error


def _publish_log(
    ch: Any, putter: _Putter, signer: Any, settings: Settings, log_id: str, stats: dict[str, float], t0: float
) -> None:
    from pipelines.io.archive import tile_key
    from pipelines.io.archive.tiles import TileStore
    from transforms.checkpoint import Checkpoint, sign_checkpoint
    from transforms.merkle import leaf_hash
    from transforms.tiles import BundleBuilder, TileBuilder

    size = int(ch.query("SELECT count() FROM auditlog.audit_leaves WHERE log_id = {l:String}", {"l": log_id})[0][0])
    tiles, bundles = TileBuilder(), BundleBuilder()

    def put_tiles(done: list[tuple[Any, bytes]], kind: str) -> None:
        for tile, data in done:
            putter.put(tile_key(log_id, tile), data)
            stats[f"{kind}_objects"] += 1
            stats[f"{kind}_bytes"] += len(data)

    for first in range(0, size, READ_CHUNK):
        end = min(first + READ_CHUNK, size)
        rows = ch.query(
            f"SELECT leaf_index, hex(leaf_hash), canonical FROM {BY_LEAF} WHERE log_id = {{l:String}} "
            "AND leaf_index >= {a:UInt64} AND leaf_index < {b:UInt64} ORDER BY leaf_index",
            {"l": log_id, "a": first, "b": end},
        )
        if len(rows) != end - first or int(rows[0][0]) != first or int(rows[-1][0]) != end - 1:
            raise SystemExit(f"{log_id}: leaves {first}..{end - 1} are not each in ClickHouse once ({len(rows)} rows)")
        hashes = [bytes.fromhex(h) for _, h, _ in rows]
        entries = [c.encode("utf-8") if isinstance(c, str) else bytes(c) for _, _, c in rows]
        for i in range(0, len(rows), CHECK_EVERY):
            if leaf_hash(entries[i]) != hashes[i]:
                raise SystemExit(f"{log_id} leaf {first + i}: leaf_hash is not SHA-256(0x00 ‖ canonical)")
            stats["checked"] += 1
        put_tiles(tiles.extend(hashes), "tile")
        put_tiles(bundles.extend(entries), "bundle")
        del rows, hashes, entries
        _say(
            f"{log_id}: {end:,}/{size:,} leaves, {putter.done:,} objects put "
            f"({time.monotonic() - t0:.0f} s since the build began)"
        )
    put_tiles(tiles.partial_tiles(), "tile")
    partial = bundles.partial_bundle()
    put_tiles([partial] if partial is not None else [], "bundle")
    putter.drain()  # the tiles before the checkpoint, as the job writes them
    root = tiles.root()
    if TileStore(putter.archive).reader(log_id, size).root() != root:
        raise SystemExit(f"{log_id}: the tiles read back from the archive do not give the root at {size}")
    note = sign_checkpoint(Checkpoint(f"{settings.origin}/{log_id}", size, root), signer)
    putter.archive.put_checkpoint(log_id, size, note)
    _say(f"signed {log_id} at {size:,} ({time.monotonic() - t0:.0f} s)")


# ---------------------------------------------------------------------------------------------
# Measure


def _loadgen_binary(workdir: Path) -> Path:
    binary = workdir / "loadgen"
    subprocess.run(["go", "build", "-o", str(binary), "."], cwd=REPO_ROOT / "tests" / "bench" / "loadgen", check=True)
    return binary


def loadgen(
    binary: Path, urls: list[str], key: str, label: str, concurrency: int, pids: dict[str, int]
) -> dict[str, Any]:
    """Runs the load generator; its JSON, and the cores each party used meanwhile (`cpu`)."""
    path = binary.parent / f"{label}.urls"
    path.write_text("\n".join(urls) + "\n")
    before, began = _cpu(pids), time.monotonic()
    done = subprocess.run(
        [
            str(binary),
            "-urls",
            str(path),
            "-c",
            str(concurrency),
            "-d",
            f"{SECONDS}s",
            "-H",
            f"Authorization: Bearer {key}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    after, wall = _cpu(pids), time.monotonic() - began
    result: dict[str, Any] = json.loads(done.stdout)
    # Cores busy during the run: the server, S3, the load generator, and everything else on the
    # machine (another build or test suite: when `others` is well above 0, the figures are low).
    used = {name: (after[name] - before[name]) / wall for name in after}
    used["others"] = max(0.0, used.pop("all") - sum(used.values()))
    result["cpu"] = used
    return result


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far: of the whole machine (`all`), of each named process, and of finished children."""
    tick = os.sysconf("SC_CLK_TCK")
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    busy = sum(int(v) for i, v in enumerate(fields[:8]) if i not in (3, 4))  # all but idle and iowait
    out = {"all": busy / tick}
    for name, pid in pids.items():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[name] = (int(stat[11]) + int(stat[12])) / tick
        except (OSError, IndexError):
            out[name] = 0.0
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    out["loadgen"] = children.ru_utime + children.ru_stime
    return out


def rss(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def _s3_pid(base: Settings) -> int:
    """The stack's SeaweedFS (`auditlog stack up`), whose CPU the table reports; 0 if unknown."""
    try:
        return int((base.home / "run" / "s3.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def tile_bytes(settings: Settings) -> dict[str, int]:
    """Bytes and objects under logs/<log>/tile/ in the bucket: hash tiles and entry bundles apart."""
    from pipelines.ingest_config import archive_spec
    from pipelines.io.archive import open_archive

    client = open_archive(**archive_spec(settings)).client
    out = {"hash_bytes": 0, "hash_objects": 0, "entry_bytes": 0, "entry_objects": 0}
    pages = client.get_paginator("list_objects_v2")
    for p in range(LOGS):
        prefix = f"logs/bench.p{p}/tile/"
        for page in pages.paginate(Bucket=settings.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                kind = "entry" if obj["Key"][len(prefix) :].startswith("entries/") else "hash"
                out[f"{kind}_bytes"] += int(obj["Size"])
                out[f"{kind}_objects"] += 1
    return out


def measure(base: Settings, events: int, binary: Path) -> dict[str, Any]:
    from tests.synthetic import build_once

    settings = bench_settings(base, events)
    port = settings.api_port + 17
    env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(REPO_ROOT), "BENCH_EVENTS": str(events)}
    print(f"{events:,} events — {settings.home}", flush=True)
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
    archive_bytes = tile_bytes(settings)
    # The place index is what a long-running server has copied from ClickHouse by then (a child
    # process: chDB is opened by one process at a time); the disk tile cache starts empty, so the
    # first proof row is read cold from S3.
    out: dict[str, Any] = {"events": events, "archive": archive_bytes}
    synced = subprocess.run(
        [sys.executable, __file__, "--places"], env=env, cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    out["places"] = json.loads(synced.stdout)
    print(f"  place index: {out['places']['added']:,} places copied in {out['places']['seconds']:.1f} s", flush=True)
    for stale in (settings.home / "api").glob("tiles.sqlite*"):
        stale.unlink()
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
        out["rss_started"] = rss(server.pid)
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
        rng.shuffle(proof_urls)
        started = time.monotonic()
        # Warm-up: every log's head checked (its partial tiles read), the clients and caches made.
        for url in proof_urls[:200] + search_urls[:50]:
            _get(url, key)
        out["warmup_s"] = time.monotonic() - started
        out["rss_warm"] = rss(server.pid)
        pids = {"server": server.pid, "s3": _s3_pid(base)}
        out["proof"] = loadgen(binary, proof_urls, key, "proof", PROOF_CONCURRENCY, pids)
        # A working set of WARM_EVENTS events, each proved once first: their tiles and bundles are
        # then on local disk, as a server's are for the events it is asked about again.
        hot = proof_urls[:WARM_EVENTS]
        with ThreadPoolExecutor(PROOF_CONCURRENCY) as pool:
            list(pool.map(lambda url: _get(url, key), hot))
        out["proof_warm"] = loadgen(binary, hot, key, "proof-warm", PROOF_CONCURRENCY, pids)
        out["proof_warm"]["events"] = len(hot)
        out["rss_proofs"] = rss(server.pid)
        out["search"] = loadgen(binary, search_urls, key, "search", SEARCH_CONCURRENCY, pids)
        out["rss_searches"] = rss(server.pid)
        p, w, s = out["proof"], out["proof_warm"], out["search"]
        print(
            f"  warm-up {out['warmup_s']:.1f} s; proofs {p['rps']:,.0f}/s p50 {p['p50_ms']:.1f} ms "
            f"p99 {p['p99_ms']:.1f} ms ({p['errors']} errors), from disk {w['rps']:,.0f}/s p99 {w['p99_ms']:.1f} ms; "
            f"searches {s['rps']:,.0f}/s p99 {s['p99_ms']:.1f} ms; "
            f"RSS after proofs {out['rss_proofs'][0]:.0f} MiB\n",
            flush=True,
        )
    finally:
        server.terminate()
        server.wait(30)
    return out


def report(results: list[dict[str, Any]]) -> None:
    print(
        f"\nauditlog query benchmark — {os.cpu_count()} cores, {TENANTS:,} tenants, {LOGS} logs, embedded chDB, "
        f"proofs from tlog-tiles in S3 (SeaweedFS), {SECONDS} s per row, closed loop on loopback\n"
    )
    cols = f"{'in flight':>9} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}"
    cores = f"{'serve':>5} {'S3':>4} {'gen':>4} {'other':>5}"
    head = f"  {'events':>11}  {'kind':<34} {cols}  {cores}  target"
    print(f"  {'':>11}  {'':<34} {'':>{len(cols)}}  {'cores busy':^{len(cores)}}")
    print(head)
    print("  " + "-" * (len(head) + 30))
    for r in results:
        for kind, label, verdict in (
            ("proof", "proof, tiles cold (from S3)", _proof_verdict),
            ("proof_warm", f"proof, {r['proof_warm']['events']:,} events' tiles on disk", _proof_verdict),
            ("search", "search: tenant + actor + 30 days", _search_verdict),
        ):
            x = r[kind]
            c = x["cpu"]
            conc = SEARCH_CONCURRENCY if kind == "search" else PROOF_CONCURRENCY
            print(
                f"  {r['events']:>11,}  {label:<34} {conc:>9} {x['rps']:>8,.0f} {x['p50_ms']:>7.1f} "
                f"{x['p99_ms']:>7.1f} {x['errors']:>6}  {c['server']:>5.2f} {c['s3']:>4.2f} {c['loadgen']:>4.2f} "
                f"{c['others']:>5.2f}  {verdict(x)}"
            )
    if any(r[k]["cpu"]["others"] > 0.25 for r in results for k in ("proof", "search")):
        print("  (other: cores busy with processes outside the benchmark; where it is high, those rows are low)")
    print("\n  auditlog serve RSS / peak (VmRSS / VmHWM, MiB)")
    head = f"  {'events':>11}  {'started':>15}  {'after warm-up':>15}  {'after proofs':>15}  {'after searches':>15}"
    print(head)
    print("  " + "-" * len(head))
    for r in results:
        cells = [f"{r[k][0]:.0f} / {r[k][1]:.0f}" for k in ("rss_started", "rss_warm", "rss_proofs", "rss_searches")]
        print(f"  {r['events']:>11,}  " + "  ".join(f"{c:>15}" for c in cells))
    if len(results) > 1:
        low, high = results[0], results[-1]
        ratio = high["rss_proofs"][0] / low["rss_proofs"][0]
        print(
            f"  target: RSS after proofs flat from {low['events']:,} to {high['events']:,} events "
            f"(≤ {RSS_FLAT:.2f}×): {ratio:.2f}× — {'meets' if ratio <= RSS_FLAT else 'MISSES'}"
        )
    print("\n  archive: logs/<log>/tile/ objects")
    head = (
        f"  {'events':>11}  {'hash tiles':>22}  {'B/event':>7}  {'entry bundles':>24}  {'B/event':>7}"
        f"  {'all B/event':>11}"
    )
    print(head)
    print("  " + "-" * len(head))
    for r in results:
        a, n = r["archive"], r["events"]
        print(
            f"  {n:>11,}  {a['hash_objects']:>8,} obj {a['hash_bytes'] / 2**20:>7.1f} MiB"
            f"  {a['hash_bytes'] / n:>7.1f}  "
            f"{a['entry_objects']:>8,} obj {a['entry_bytes'] / 2**20:>9.1f} MiB  {a['entry_bytes'] / n:>7.1f}  "
            f"{(a['hash_bytes'] + a['entry_bytes']) / n:>11.1f}"
        )
    print(flush=True)


def _proof_verdict(x: dict[str, Any]) -> str:
    meets = x["rps"] >= PROOF_TARGET_RPS and x["p99_ms"] <= PROOF_TARGET_P99_MS and not x["errors"]
    return f"≥ {PROOF_TARGET_RPS:,}/s, p99 ≤ {PROOF_TARGET_P99_MS} ms: {'meets' if meets else 'MISSES'}"


def _search_verdict(x: dict[str, Any]) -> str:
    meets = x["p99_ms"] <= SEARCH_TARGET_P99_MS and not x["errors"]
    return f"p99 ≤ {SEARCH_TARGET_P99_MS} ms: {'meets' if meets else 'MISSES'}"


def main() -> None:
    from infra.stack import Stack

    base = Settings.from_env()
    Stack(base).up(["s3"])
    print(
        f"auditlog query benchmark — {os.cpu_count()} cores, sizes {', '.join(f'{n:,}' for n in SIZES)} events; "
        f"proofs at {PROOF_CONCURRENCY} in flight, searches at {SEARCH_CONCURRENCY}, {SECONDS} s each\n",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="auditlog-bench-query-") as tmp:
        binary = _loadgen_binary(Path(tmp))
        results = [measure(base, events, binary) for events in SIZES]
    report(results)


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


def sync_places() -> None:
    """Fills the deployment's place index from ClickHouse (what `auditlog serve` does in the background)."""
    from pipelines.io.clickhouse import open_clickhouse
    from runners.commands.serve import local_caches

    settings = Settings.from_env()
    ch = open_clickhouse(settings.effective_clickhouse_url)
    started = time.monotonic()
    added = local_caches(settings)[0].sync(ch)
    ch.close()
    print(json.dumps({"added": added, "seconds": time.monotonic() - started}))


if __name__ == "__main__":
    if sys.argv[1:] == ["--build"]:
        build()
    elif sys.argv[1:] == ["--places"]:
        sync_places()
    else:
        main()
