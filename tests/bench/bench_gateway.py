"""Gateway and outbox benchmark (`make bench-gateway`): requests/s, events/s, p50/p99 latency.

Not a test: it prints tables. It starts what it needs — Kafka through `Stack` on the configured
settings (`auditlog stack up kafka`; left running, like `make run`), a fresh topic, a throwaway
key store and API key, the gateway in a subprocess, and load generators in other processes
(tests/bench/loadgen in Go: many concurrent calls over a few HTTP/2 connections, requests
pre-serialised and patched with fresh event ids, so the client spends little CPU) —
and stops all of it except Kafka. Every event is ~500 bytes of JSON with a unique event_id.

Scenarios:
0. the same load against a server whose handlers do nothing: grpc.aio's own ceiling here;
1. RecordEvent, closed loop (BENCH_CONCURRENCY calls in flight), per server kind and worker count;
2. RecordEvent at a fixed BENCH_RATE requests/s (open loop): latency when not saturated;
3. RecordEvents with BENCH_BATCH events per call;
4. `auditlog outbox forward` draining BENCH_OUTBOX_EVENTS rows from a PostgreSQL started here
   (fsync on), 5000 rows per batch; its requests/s column counts batches.

Then, with BENCH_PROFILE=1, a cProfile of the gateway under unary load, and always the per-event
cost of each step of the gateway's own work in this process (where the time goes).

    make bench-gateway
    BENCH_SECONDS=20 BENCH_CONCURRENCY=128 make bench-gateway
    BENCH_ONLY=outbox make bench-gateway       # parts: baseline, unary, rate, batch, outbox, costs
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import pstats
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from infra.stack import Stack  # noqa: E402
from pipelines.io.kafka import kafka_client_config  # noqa: E402
from schemas.settings import REPO_ROOT, Settings  # noqa: E402

SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
WARMUP = float(os.environ.get("BENCH_WARMUP", "3"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "4"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "64"))
RATE = float(os.environ.get("BENCH_RATE", "1000"))
BATCH = int(os.environ.get("BENCH_BATCH", "500"))
BATCH_CONCURRENCY = int(os.environ.get("BENCH_BATCH_CONCURRENCY", "6"))
OUTBOX_EVENTS = int(os.environ.get("BENCH_OUTBOX_EVENTS", "200000"))
PARTITIONS = int(os.environ.get("BENCH_PARTITIONS", "4"))
PROFILE = os.environ.get("BENCH_PROFILE", "") == "1"
ONLY = set(filter(None, os.environ.get("BENCH_ONLY", "").split(",")))
TARGET_BYTES = 500
ID_PLACEHOLDER = "bench-" + "X" * 26  # fixed width: replaced in the serialised bytes per request
SERVICE = "auditlog.v1.AuditLogService"
RECORD_EVENT = f"/{SERVICE}/RecordEvent"
RECORD_EVENTS = f"/{SERVICE}/RecordEvents"
LOADGEN: Path | None = None  # the built load generator, once main() has built it


def wanted(part: str) -> bool:
    return not ONLY or part in ONLY


# --------------------------------------------------------------------------- requests


def template_events(n: int = 200, seed: int = 61) -> list[dict[str, Any]]:
    """Sample events padded in metadata to about TARGET_BYTES of JSON, event_id a placeholder."""
    from schemas.samples import EventGenerator

    gen = EventGenerator(seed=seed, tenants=20)
    out = []
    for _ in range(n):
        event = gen.event()
        event["event_id"] = ID_PLACEHOLDER
        size = len(json.dumps(event, separators=(",", ":")))
        event.setdefault("metadata", {})["note"] = "x" * max(0, TARGET_BYTES - size - 12)
        out.append(event)
    return out


def serialised_templates(events: list[dict[str, Any]]) -> list[bytes]:
    from api.gateway.convert import request_from_event
    from api.sdk.events import wire_event

    return [request_from_event(wire_event(e)).SerializeToString() for e in events]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class RequestMaker:
    """Unique-id requests from serialised templates by byte patching: cheap for the client."""

    def __init__(self, templates: list[bytes], prefix: str) -> None:
        self.templates = templates
        self.placeholder = ID_PLACEHOLDER.encode()
        self.prefix = prefix
        self.count = 0

    def _next_id(self) -> bytes:
        self.count += 1
        text = f"{self.prefix}{self.count:x}"
        return (text + "-" * (len(ID_PLACEHOLDER) - len(text))).encode()

    def event(self) -> bytes:
        template = self.templates[self.count % len(self.templates)]
        return template.replace(self.placeholder, self._next_id(), 1)

    def batch(self, size: int) -> bytes:
        parts = []
        for _ in range(size):
            body = self.event()
            parts.append(b"\x0a" + _varint(len(body)) + body)
        return b"".join(parts)


# --------------------------------------------------------------------------- load generation

LOADGEN_SOURCE = REPO_ROOT / "tests" / "bench" / "loadgen"


def build_loadgen(folder: Path) -> Path:
    """Builds the Go load generator (tests/bench/loadgen): a client that costs little CPU per call."""
    binary = folder / "loadgen"
    subprocess.run(["go", "build", "-o", str(binary), "."], cwd=LOADGEN_SOURCE, check=True)
    return binary


def run_load(
    target: str,
    api_key: str,
    templates: list[bytes],
    *,
    batch: int = 0,
    concurrency: int,
    rate: float = 0,
    watch: dict[str, list[int]] | None = None,
) -> dict[str, Any]:
    """Runs the Go load generator; `watch` names processes (gateway, kafka) whose CPU per call to report."""
    folder = Path(tempfile.mkdtemp(prefix="auditlog-bench-load-"))
    try:
        binary = LOADGEN or build_loadgen(folder)
        template_file = folder / "templates.b64"
        template_file.write_text("\n".join(base64.b64encode(t).decode() for t in templates) + "\n")
        argv = [
            str(binary),
            "-grpc", target,
            "-method", RECORD_EVENTS if batch else RECORD_EVENT,
            "-templates", str(template_file),
            "-placeholder", ID_PLACEHOLDER,
            "-prefix", f"b{uuid.uuid4().hex[:6]}",
            "-batch", str(batch),
            "-c", str(max(1, concurrency)),
            "-rate", str(rate),
            "-conns", str(CONNECTIONS),
            "-d", f"{SECONDS}s",
            "-warmup", f"{WARMUP}s",
            "-H", f"authorization: Bearer {api_key}",
        ]  # fmt: skip
        watch = watch or {}
        before = {name: cpu_seconds(pids) for name, pids in watch.items()}
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        spent = {name: cpu_seconds(pids) - before[name] for name, pids in watch.items()}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if done.returncode != 0:
        sys.exit(f"the load generator failed ({done.returncode}): {done.stderr.strip()}")
    result = json.loads(done.stdout)
    calls = max(1, result["total_calls"])
    cpu_us = {name: 1e6 * seconds / calls for name, seconds in spent.items()}
    cpu_us["client"] = 1e6 * result["cpu_s"] / calls
    requests = result["requests"]
    return {
        "requests_per_s": requests / SECONDS,
        "events_per_s": requests * (batch or 1) / SECONDS,
        "p50_ms": result["p50_ms"] if requests else float("nan"),
        "p99_ms": result["p99_ms"] if requests else float("nan"),
        "errors": result["errors"],
        "cpu_us": cpu_us,
    }


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes (all threads), from /proc."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


# --------------------------------------------------------------------------- services


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def admin_client(settings: Settings) -> Any:
    import logging

    from confluent_kafka.admin import AdminClient

    quiet = logging.getLogger("bench.librdkafka")
    quiet.setLevel(logging.CRITICAL)
    return AdminClient(kafka_client_config(settings, logger=quiet))


def create_topic(settings: Settings, topic: str, partitions: int = PARTITIONS) -> None:
    from confluent_kafka.admin import NewTopic

    admin = admin_client(settings)
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(30)
    deadline = time.monotonic() + 30
    while topic not in admin.list_topics(timeout=10).topics:
        if time.monotonic() > deadline:
            sys.exit(f"topic {topic} did not appear")
        time.sleep(0.2)


def delete_topic(settings: Settings, topic: str) -> None:
    admin = admin_client(settings)
    for future in admin.delete_topics([topic]).values():
        try:
            future.result(30)
        except Exception:  # noqa: BLE001 - best effort clean-up
            pass


class GatewayProcess:
    def __init__(self, settings: Settings, topic: str, *args: str, profile: Path | None = None) -> None:
        self.settings = settings.replace(gateway_port=free_port())
        argv = [sys.executable]
        if profile:
            argv += ["-m", "cProfile", "-o", str(profile)]
        argv += ["-m", "runners.cli", "gateway", "--topic", topic, *args]
        self.workers = int(args[args.index("--workers") + 1]) if "--workers" in args else 1
        self.process = subprocess.Popen(
            argv,
            env={**os.environ, **self.settings.to_env()},
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ready = 0
        assert self.process.stdout is not None
        while ready < self.workers:
            line = self.process.stdout.readline()
            if not line:
                sys.exit(f"the gateway did not start (exit {self.process.wait()})")
            ready += line.count("gateway listening on")  # workers share the pipe: lines may merge
        self.target = f"127.0.0.1:{self.settings.gateway_port}"

    def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=120)
        return out


def bench_settings(home: Path) -> Settings:
    return Settings.from_env().replace(
        master_key=base64.b64encode(os.urandom(32)).decode(),
        master_key_file="",
        keystore_file=str(home / "keystore.sqlite"),
        apikeys_file=str(home / "apikeys.sqlite"),
    )


# --------------------------------------------------------------------------- parts


def fmt(row: dict[str, Any]) -> str:
    errors = ", ".join(f"{k} {v}" for k, v in row["errors"].items()) or "-"
    return (
        f"{row['name']:<42}{row['requests_per_s']:>12,.0f}{row['events_per_s']:>12,.0f}"
        f"{row['p50_ms']:>9.1f}{row['p99_ms']:>9.1f}  {row.get('target', ''):<21}{errors}"
    )


def gateway_scenarios(settings: Settings, api_key: str, templates: list[bytes]) -> list[dict[str, Any]]:
    rows = []
    kafka_pids = [row.pid for row in Stack(settings).status(["kafka"]) if row.pid]
    scenarios: list[tuple[str, tuple[str, ...], dict[str, Any], str]] = []
    if wanted("baseline"):
        scenarios.append(
            ("baseline: empty grpc.aio handler", ("--echo",), {"concurrency": CONCURRENCY}, "(framework ceiling)")
        )
    if wanted("unary"):
        scenarios += [
            ("RecordEvent, aio, 1 worker", ("--server", "aio"), {"concurrency": CONCURRENCY}, ">= 5,000 req/s"),
            ("RecordEvent, threads, 1 worker", ("--server", "threads"), {"concurrency": CONCURRENCY}, ">= 5,000 req/s"),
            (
                "RecordEvent, aio, 2 workers",
                ("--server", "aio", "--workers", "2"),
                {"concurrency": CONCURRENCY},
                ">= 5,000 req/s",
            ),
        ]
    if wanted("rate"):
        scenarios.append(
            (f"RecordEvent at {RATE:,.0f}/s, aio, 1 worker", ("--server", "aio"), {"concurrency": 0, "rate": RATE}, "")
        )
    if wanted("batch"):
        scenarios += [
            (
                f"RecordEvents x{BATCH}, aio, 1 worker",
                ("--server", "aio"),
                {"concurrency": BATCH_CONCURRENCY, "batch": BATCH},
                ">= 50,000 ev/s",
            ),
            (
                f"RecordEvents x{BATCH}, aio, 2 workers",
                ("--server", "aio", "--workers", "2"),
                {"concurrency": BATCH_CONCURRENCY, "batch": BATCH},
                ">= 50,000 ev/s",
            ),
        ]
    for name, args, load, target in scenarios:
        topic = f"bench.gateway.{uuid.uuid4().hex[:8]}"
        create_topic(settings, topic)
        gateway = EchoProcess(settings) if args == ("--echo",) else GatewayProcess(settings, topic, *args)
        pids = [gateway.process.pid, *children_of(gateway.process.pid)]
        try:
            result = run_load(gateway.target, api_key, templates, watch={"gateway": pids, "kafka": kafka_pids}, **load)
        finally:
            gateway.stop()
            delete_topic(settings, topic)
        row = {"name": name, "target": target, **result}
        print(fmt(row), flush=True)
        rows.append(row)
    return rows


def outbox_scenario(settings: Settings) -> dict[str, Any] | None:
    import psycopg

    from api.sdk.events import encode_event, wire_event
    from api.sdk.localpg import LocalPostgres
    from api.sdk.outbox import create_outbox_table

    templates = template_events(500, seed=62)
    topic = f"bench.outbox.{uuid.uuid4().hex[:8]}"
    create_topic(settings, topic)
    with LocalPostgres(durable=True) as pg:
        with psycopg.connect(pg.dsn) as conn:
            create_outbox_table(conn)
            rows = []
            for i in range(OUTBOX_EVENTS):
                event = wire_event({**templates[i % len(templates)], "event_id": f"ob-{i:010d}"})
                rows.append((event["event_id"], event["tenant_id"], encode_event(event)))
            with (
                conn.cursor() as cur,
                cur.copy("COPY auditlog_outbox (event_id, tenant_id, payload) FROM STDIN") as copy,
            ):
                for row in rows:
                    copy.write_row(row)
            conn.commit()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "runners.cli",
                "outbox",
                "forward",
                "--dsn",
                pg.dsn,
                "--topic",
                topic,
                "--until-empty",
                "--batch-size",
                "5000",
            ],
            env={**os.environ, **settings.to_env()},
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
    delete_topic(settings, topic)
    match = re.search(r"(\d+) events in (\d+) batches, ([\d.]+) s \(([\d,]+) events/s\)", done.stdout)
    if done.returncode != 0 or not match:
        print(f"outbox forward failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return None
    events, seconds = int(match.group(1)), float(match.group(3))
    return {
        "name": f"outbox forward, PostgreSQL, {events // 1000}k rows",
        "requests_per_s": events / seconds / 5000,
        "events_per_s": events / seconds,
        "p50_ms": float("nan"),
        "p99_ms": float("nan"),
        "target": ">= 20,000 ev/s",
        "errors": {},
    }


def cpu_table(rows: list[dict[str, Any]]) -> None:
    """CPU time per call of each party, measured from /proc: what the load costs regardless of contention.

    The projection divides the machine's cores by the CPU all parties need per call: an upper bound
    for an otherwise idle machine, assuming the work spreads over the cores perfectly.
    """
    measured = [r for r in rows if r.get("cpu_us")]
    if not measured:
        return
    cores = os.cpu_count() or 1
    print(f"\nCPU per call (µs), all threads of each process; projection = {cores} cores / total CPU per call")
    print(f"{'scenario':<42}{'gateway':>10}{'client':>10}{'kafka':>10}{'total':>10}{'projected/s':>14}{'ev/s':>12}")
    for row in measured:
        cpu = row["cpu_us"]
        total = cpu.get("gateway", 0) + cpu["client"] + cpu.get("kafka", 0)
        per_call = cores * 1e6 / total if total else float("nan")
        events = per_call * row["events_per_s"] / row["requests_per_s"] if row["requests_per_s"] else float("nan")
        print(
            f"{row['name']:<42}{cpu.get('gateway', 0):>10.0f}{cpu['client']:>10.0f}{cpu.get('kafka', 0):>10.0f}"
            f"{total:>10.0f}{per_call:>14,.0f}{events:>12,.0f}"
        )


def per_event_costs() -> None:
    """The gateway's own per-event work, step by step, in this process (no gRPC, no Kafka)."""
    from api.gateway.audit_pb2 import RecordEventRequest
    from api.gateway.convert import event_from_request
    from api.sdk.events import encode_event
    from pipelines.io.keystore import InMemoryKeyStore
    from schemas.events import canonical_bytes, pii_subject, protect_event, validate_event
    from transforms.merkle import leaf_hash

    templates = serialised_templates(template_events(200))
    maker = RequestMaker(templates, "cost-")
    raw = [maker.event() for _ in range(5000)]
    keys = InMemoryKeyStore()
    parsed = [RecordEventRequest.FromString(r) for r in raw]
    events = [event_from_request(p) for p in parsed]
    valid = [validate_event(e) for e in events]
    subject_keys = [keys.get_or_create(e["tenant_id"], pii_subject(e)) for e in valid]
    protected = [protect_event(e, k) for e, k in zip(valid, subject_keys, strict=True)]
    canonical = [canonical_bytes(p) for p in protected]
    steps = [
        ("protobuf parse", lambda: [RecordEventRequest.FromString(r) for r in raw]),
        ("message -> event dict", lambda: [event_from_request(p) for p in parsed]),
        ("validate_event (JSON Schema)", lambda: [validate_event(e) for e in events]),
        ("key store lookup (cached)", lambda: [keys.get_or_create(e["tenant_id"], pii_subject(e)) for e in valid]),
        ("protect_event (seal PII)", lambda: [protect_event(e, k) for e, k in zip(valid, subject_keys, strict=True)]),
        ("canonical_bytes (RFC 8785)", lambda: [canonical_bytes(p) for p in protected]),
        ("leaf_hash", lambda: [leaf_hash(c) for c in canonical]),
        ("encode_event (Kafka value)", lambda: [encode_event(e) for e in valid]),
    ]
    print("\nwhere the time goes: the gateway's per-event work in one process (µs per event)")
    _print_steps(steps, len(raw))
    from pipelines.ingest_core import native_entry
    from schemas.native import event_core
    from schemas.retention import load_policy

    core = event_core("auto")
    if core is None:
        print("  (the compiled core is not built: `make native`)")
        return
    policy = load_policy()
    values = [encode_event(e) for e in events]
    parsed_values = [core.parse(v) for v in values]
    taken = [p for p in parsed_values if p is not None]
    compiled = [
        ("protobuf parse", lambda: [RecordEventRequest.FromString(r) for r in raw]),
        ("message -> event dict", lambda: [event_from_request(p) for p in parsed]),
        ("encode_event (the Kafka value)", lambda: [encode_event(e) for e in events]),
        ("core.parse (validate)", lambda: [core.parse(v) for v in values]),
        ("keys + core.entry (seal, JCS, leaf)", lambda: [native_entry(core, keys, policy, p) for p in taken]),
    ]
    print(f"\n  the same with the compiled core (what RecordEvent runs; {len(taken):,} of {len(values):,} taken)")
    _print_steps(compiled, len(raw))
    from api.gateway.audit_pb2 import RecordEventsRequest

    requests = [
        RecordEventsRequest(events=parsed[i : i + BATCH]).SerializeToString() for i in range(0, len(raw), BATCH)
    ]
    read = [e for r in requests for e in core.request_events(r) or []]
    wire = [
        ("core.request_events (wire bytes)", lambda: [core.request_events(r) for r in requests]),
        ("keys + core.entry (seal, JCS, leaf)", lambda: [native_entry(core, keys, policy, p) for _, p in read]),
    ]
    print(f"\n  RecordEvents x{BATCH}: the core reads the request's wire bytes ({len(read):,} of {len(raw):,} read)")
    _print_steps(wire, len(raw))


def _print_steps(steps: list[tuple[str, Any]], events: int) -> None:
    """Each step's best of three, in µs per event, and their total."""
    total = 0.0
    for name, step in steps:
        best = min(_timed(step) for _ in range(3)) / events * 1e6
        total += best
        print(f"  {name:<34}{best:>8.1f}")
    print(f"  {'total':<34}{total:>8.1f}   -> at most {1e6 / total:,.0f} events/s per core before gRPC and Kafka")


def _timed(step: Any) -> float:
    began = time.perf_counter()
    step()
    return time.perf_counter() - began


def profile_gateway(settings: Settings, api_key: str, templates: list[bytes]) -> None:
    topic = f"bench.gateway.profile.{uuid.uuid4().hex[:8]}"
    create_topic(settings, topic)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "gateway.prof"
        gateway = GatewayProcess(settings, topic, "--server", "aio", profile=out)
        try:
            run_load(gateway.target, api_key, templates, concurrency=CONCURRENCY)
        finally:
            gateway.stop()
            delete_topic(settings, topic)
        print("\ncProfile of the gateway (aio, 1 worker) under unary load: top 25 by own time")
        stats = pstats.Stats(str(out))
        stats.sort_stats("tottime").print_stats(25)


def echo_server(port: int) -> int:
    """An AuditLogService whose handlers do nothing: the ceiling of grpc.aio itself on this machine."""
    import grpc

    from api.gateway.server import run_event_loop

    async def nothing(request: bytes, context: Any) -> bytes:
        return b""

    async def serve() -> None:
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])
        handler = grpc.unary_unary_rpc_method_handler(nothing)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"RecordEvent": handler, "RecordEvents": handler}),)
        )
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print("gateway listening on (empty handlers)", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await server.stop(1)

    run_event_loop(serve())  # the gateway's own loop, so the ceiling compares like with like
    return 0


class EchoProcess(GatewayProcess):
    def __init__(self, settings: Settings) -> None:
        port = free_port()
        self.workers = 1
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--echo-server", str(port)],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        if "listening" not in self.process.stdout.readline():
            sys.exit("the empty gRPC server did not start")
        self.target = f"127.0.0.1:{port}"


def main() -> int:
    if sys.argv[1:2] == ["--echo-server"]:
        return echo_server(int(sys.argv[2]))
    settings = Settings.from_env()
    Stack(settings).up(["kafka"])
    cores = os.cpu_count()
    print(
        f"gateway benchmark: {cores} cores, Kafka at {settings.kafka_bootstrap} ({PARTITIONS} partitions), "
        f"{SECONDS:.0f} s per scenario after {WARMUP:.0f} s warm-up, Go load generator over {CONNECTIONS} "
        f"connections, ~{TARGET_BYTES}-byte events; load average now {os.getloadavg()[0]:.1f}"
    )
    with tempfile.TemporaryDirectory(prefix="auditlog-bench-gw-") as home:
        bench = bench_settings(Path(home))
        from api.keys import ApiKeyStore

        with ApiKeyStore.open(bench) as keys:
            api_key = keys.create(admin=True, label="bench")[1]
        global LOADGEN
        LOADGEN = build_loadgen(Path(home))
        templates = serialised_templates(template_events())
        print(f"\n{'scenario':<42}{'requests/s':>12}{'events/s':>12}{'p50 ms':>9}{'p99 ms':>9}  {'target':<21}errors")
        served = {"baseline", "unary", "rate", "batch"} & (ONLY or {"unary"})
        rows = gateway_scenarios(bench, api_key, templates) if served else []
        if wanted("outbox"):
            row = outbox_scenario(bench)
            if row:
                print(fmt(row).replace("     nan      nan", "        -        -"), flush=True)
                rows.append(row)
        cpu_table(rows)
        if PROFILE:
            profile_gateway(bench, api_key, templates)
    if wanted("costs"):
        per_event_costs()
    return 0


if __name__ == "__main__":
    sys.exit(main())
