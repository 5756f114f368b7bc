"""Ingest benchmark (`make bench-ingest`): end-to-end events/s and produce→checkpoint latency.

Not a test: it prints a table. It uses the stack of `auditlog stack up` (Kafka and S3 on the
configured ports), preloads a fresh topic with ~500-byte events, and runs the real job:

1. throughput: `auditlog ingest --bounded` on the local mini-cluster, both sinks on (WORM S3
   from the job, ClickHouse through the indexer), checkpoints every 10 s; events/s over the
   job's net runtime, and over the wall time until ClickHouse holds every event;
2. the same with hashing, chaining and signing switched off (`--unverifiable`), and the ratio;
3. the framework's floor on the same topic: the job's Kafka source and JVM keying with nothing
   after it, with a Python function that does nothing called once a record, and the same called
   once a batch after the job's JVM batcher (what the job does) — what PyFlink itself costs
   here, the ceiling no work in Python can beat;
4. latency: the job streaming (cut ticker at the block latency) while events are produced at a
   fixed rate with occurred_at = now; for every event, the time until a signed checkpoint that
   covers it is in the archive (p50/p99).

    make bench-ingest                          # defaults: 300,000 events
    BENCH_EVENTS=100000 make bench-ingest

It runs on a Kafka and SeaweedFS of its own, started fresh under $AUDITLOG_HOME/bench/ingest-stack
on ports 3000 above the configured ones and stopped at the end: every run makes buckets, which
cannot be deleted under Object Lock, and with a day of them on the shared stack (51 buckets) a
run's Kafka + SeaweedFS CPU per object was 5.2 ms, against 4.3 on a fresh stack.
BENCH_SHARED_STACK=1 uses the configured stack instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from infra.stack import Stack  # noqa: E402
from pipelines.io.archive import ensure_bucket  # noqa: E402
from pipelines.io.kafka import kafka_client_config  # noqa: E402
from pipelines.io.s3 import s3_client  # noqa: E402
from runners.commands.produce import Record, generate_records, produce_records  # noqa: E402
from schemas.settings import REPO_ROOT, Settings  # noqa: E402

EVENTS = int(os.environ.get("BENCH_EVENTS", "300000"))
PARTITIONS = int(os.environ.get("BENCH_PARTITIONS", "2"))
LATENCY_RATE = int(os.environ.get("BENCH_LATENCY_RATE", "2000"))
LATENCY_SECONDS = int(os.environ.get("BENCH_LATENCY_SECONDS", "30"))
TARGET_BYTES = 500
STACK_PORT_OFFSET = 3000


def padded_records(n: int, seed: int) -> list[Record]:
    """Sample events padded in metadata to about TARGET_BYTES of JSON each."""
    out = []
    for record in generate_records(n, 20, 0.0, 0.0, seed):
        event = json.loads(record.value)
        pad = max(0, TARGET_BYTES - len(record.value) - 12)
        event.setdefault("metadata", {})["note"] = "x" * pad
        out.append(Record(record.key, json.dumps(event, separators=(",", ":")).encode(), "event"))
    return out


def create_topic(settings: Settings, topic: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(kafka_client_config(settings))
    for future in admin.create_topics([NewTopic(topic, PARTITIONS, 1)]).values():
        future.result(15)


TICK = os.sysconf("SC_CLK_TCK")


def _proc_stats() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds so far) of every process this user can read."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK)
    return out


class TreeCPU:
    """CPU seconds of a process and all its descendants, sampled every 0.2 s while it runs.

    A descendant's last sample counts when it exits (at most 0.2 s of its CPU is missed); the
    JVM of the local mini-cluster and the TaskManager's Python all run under the command.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            stats = _proc_stats()
            tree = {self.pid}
            grew = True
            while grew:
                grew = False
                for pid, (parent, _) in stats.items():
                    if parent in tree and pid not in tree:
                        tree.add(pid)
                        grew = True
            for pid in tree:
                if pid in stats:
                    self.last[pid] = stats[pid][1]
            self._stop.wait(0.2)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return sum(self.last.values())


def service_cpu(settings: Settings) -> float:
    """CPU seconds so far of the stack's Kafka broker and SeaweedFS (their pid files)."""
    stats = _proc_stats()
    total = 0.0
    for name in ("kafka", "s3"):
        try:
            pid = int((settings.home / "run" / f"{name}.pid").read_text().split()[0])
        except (OSError, ValueError):
            continue
        total += stats.get(pid, (0, 0.0))[1]
    return total


def count_objects(settings: Settings, bucket: str) -> int:
    """Objects in `bucket` (current versions): what the run PUT into the archive."""
    client = s3_client(settings)
    count = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        count += page.get("KeyCount", 0)
    return count


def run_measured(settings: Settings, command: list[str], env: dict[str, str]) -> tuple[float, float, float, str]:
    """Runs `command`; returns (wall s, its CPU s with descendants, Kafka + SeaweedFS CPU s, stderr)."""
    services = service_cpu(settings)
    started = time.monotonic()
    proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cpu = TreeCPU(proc.pid)
    _, stderr = proc.communicate()
    wall = time.monotonic() - started
    used = cpu.stop()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(command[1:4])} failed ({proc.returncode}):\n{stderr[-3000:]}")
    return wall, used, service_cpu(settings) - services, stderr


def run_ingest(settings: Settings, env: dict[str, str], *args: str) -> tuple[float, float, float, float]:
    """Runs `auditlog ingest`; returns (wall s, net job runtime s, its CPU s, Kafka + SeaweedFS CPU s)."""
    wall, cpu, services, stderr = run_measured(settings, [sys.executable, "-m", "runners.cli", "ingest", *args], env)
    match = re.search(r"net runtime (\d+) ms", stderr)
    return wall, int(match.group(1)) / 1000 if match else wall, cpu, services


def latency(settings: Settings, env: dict[str, str]) -> list[float]:
    """Streams at LATENCY_RATE events/s; returns each event's produce→signed-checkpoint seconds."""
    from pipelines.ingest_config import archive_spec
    from pipelines.io.archive import open_archive

    topic = f"bench.latency.{int(time.time())}"
    create_topic(settings, topic)
    job = subprocess.Popen(
        [sys.executable, "-m", "runners.cli", "ingest", "--topic", topic, "--no-index"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    archive = open_archive(**archive_spec(settings))
    seen: dict[tuple[str, int], float] = {}
    produced_at: dict[str, float] = {}
    latencies: list[float] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for log_id in archive.list_logs():
                if not log_id.startswith(topic):
                    continue
                for size in archive.list_checkpoints(log_id):
                    if (log_id, size) in seen:
                        continue
                    now = time.time()
                    seen[(log_id, size)] = now
                    for block in archive.list_blocks(log_id):
                        header, entries = archive.read_block(log_id, block)
                        if header.tree_size == size:
                            for entry in entries:
                                sent = produced_at.get(json.loads(entry)["event_id"])
                                if sent is not None:
                                    latencies.append(now - sent)
            stop.wait(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    time.sleep(25)  # let the mini-cluster start and read the (empty) topic
    watcher.start()
    records = [(r.key, json.loads(r.value)) for r in generate_records(LATENCY_RATE * LATENCY_SECONDS, 20, 0.0, 0.0, 99)]
    from confluent_kafka import Producer

    producer = Producer(kafka_client_config(settings, **{"linger.ms": 5, "acks": "all"}))
    interval = 1 / LATENCY_RATE
    start = time.monotonic()
    for i, (key, event) in enumerate(records):
        target = start + i * interval
        delay = target - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        now = time.time()
        event["occurred_at"] = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        produced_at[event["event_id"]] = now
        producer.produce(topic, json.dumps(event).encode(), key)
        producer.poll(0)
    producer.flush(30)
    deadline = time.monotonic() + 60
    while len(latencies) < len(records) and time.monotonic() < deadline:
        time.sleep(0.5)
    stop.set()
    job.terminate()
    job.wait(60)
    return latencies


def floor_job(topic: str, variant: str) -> None:
    """Child process: the ingest job's source and keying, then nothing (`jvm`) or an empty Python function.

    `python`: called once a record; `batched`: once a batch, after the job's JVM batcher.
    """
    from dataclasses import replace

    from pyflink.common import Types
    from pyflink.datastream import KeyedProcessFunction
    from pyflink.java_gateway import get_gateway

    from infra.jars import ensure_jars
    from pipelines.ingest import batched_by_partition, create_environment, kafka_records, keyed_by_partition
    from pipelines.ingest_config import job_config

    class Nothing(KeyedProcessFunction):
        def process_element(self, value: object, ctx: object) -> None:
            return None

    settings = Settings.from_env()
    config = replace(job_config(settings, topic=topic), group_id=f"auditlog-bench-floor-{variant}")
    env, t_env = create_environment(
        config,
        parallelism=settings.job_parallelism(local=True),
        checkpoint_interval_ms=settings.checkpoint_interval_ms,  # the measured job's (main() sets 10 s)
        checkpoint_dir=(settings.home / "bench" / f"floor-checkpoints-{variant}").as_uri(),
        jars=[str(ensure_jars(settings).kafka_connector), str(ensure_jars(settings).operators)],
        local=True,
    )
    records = kafka_records(t_env, config, bounded=True)
    keyed = batched_by_partition(records) if variant == "batched" else keyed_by_partition(records)
    if variant == "jvm":
        sink = get_gateway().jvm.org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink()
        keyed._j_data_stream.sinkTo(sink)
    else:
        keyed.process(Nothing(), output_type=Types.PICKLED_BYTE_ARRAY())
    result = env.execute(f"auditlog bench floor {variant}")
    print(f"net runtime {result.get_net_runtime()} ms", file=sys.stderr)


def run_floor(env: dict[str, str], topic: str, variant: str) -> tuple[float, float]:
    """(net seconds, CPU seconds with descendants) of `floor_job` in a child process (one mini-cluster per process)."""
    settings = Settings.from_env()
    _, cpu, _, stderr = run_measured(settings, [sys.executable, __file__, "--floor", topic, variant], env)
    # Its retained checkpoints hold nothing but Kafka offsets: not worth keeping.
    shutil.rmtree(settings.home / "bench" / f"floor-checkpoints-{variant}", ignore_errors=True)
    match = re.search(r"net runtime (\d+) ms", stderr)
    if not match:
        sys.exit(f"the floor job printed no net runtime:\n{stderr[-3000:]}")
    return int(match.group(1)) / 1000, cpu


def bench_stack(configured: Settings) -> Settings:
    """The settings of the benchmark's own stack: a fresh home, ports STACK_PORT_OFFSET above `configured`'s."""
    home = configured.home / "bench" / "ingest-stack"
    Stack(configured.replace(home=home)).down()  # a stack an interrupted run left behind
    shutil.rmtree(home, ignore_errors=True)
    return configured.with_ports_moved(STACK_PORT_OFFSET).replace(home=home)


def main() -> None:
    settings = Settings.from_env()
    own_stack = not os.environ.get("BENCH_SHARED_STACK")
    if own_stack:
        settings = bench_stack(settings)
        os.environ.update(settings.to_env())  # every Settings.from_env() here and in the children
    stack = Stack(settings)
    stack.up(["kafka", "s3"])
    try:
        measure(settings)
    finally:
        if own_stack:
            stack.down()


def measure(settings: Settings) -> None:
    run_id = int(time.time())
    chdb_dir = settings.home / "bench" / f"chdb-{run_id}"
    env = {**os.environ, "AUDITLOG_CLICKHOUSE_URL": f"chdb://{chdb_dir}", "AUDITLOG_CHECKPOINT_INTERVAL_MS": "10000"}
    print(
        f"auditlog ingest benchmark — {os.cpu_count()} cores, {EVENTS:,} events of ~{TARGET_BYTES} B, "
        f"{PARTITIONS} partitions, parallelism {settings.job_parallelism(local=True)}, checkpoints every 10 s\n",
        flush=True,
    )
    records = padded_records(EVENTS, seed=run_id % 1000)
    rows = []
    cpu: dict[str, float] = {}
    puts: dict[str, tuple[int, float]] = {}  # mode -> (objects written, Kafka + SeaweedFS CPU s)
    runs = (
        ("verifiable (hash, chain, sign)", "on", ()),
        ("  the same, indexer off", "noindex", ("--no-index",)),
        ("hashing/chaining/signing off", "off", ("--unverifiable",)),
    )
    print(f"  {'run':<34} {'ev/s (net)':>10} {'ev/s (wall)':>11} {'job µs/ev':>10} {'Kafka+S3':>9}")
    for label, mode, flag in runs:
        topic = f"bench.ingest.{run_id}.{mode}"
        create_topic(settings, topic)
        # A bucket of its own per run: the indexer then sees only this run's logs.
        bucket = f"auditlog-bench-{run_id}-{mode}"
        ensure_bucket(s3_client(settings), bucket)
        env["AUDITLOG_BUCKET"] = bucket
        produce_records(settings, records, topic, None, False, len(records))
        wall, net, used, services = run_ingest(settings, env, "--bounded", "--topic", topic, *flag)
        rows.append((label, EVENTS / net, EVENTS / wall, net, wall))
        cpu[mode] = used / EVENTS * 1e6
        puts[mode] = (count_objects(settings, bucket), services)
        print(
            f"  {label:<34} {EVENTS / net:>10,.0f} {EVENTS / wall:>11,.0f} {cpu[mode]:>10.1f} "
            f"{services / EVENTS * 1e6:>9.1f}   (net runtime {net:.1f} s; wall {wall:.1f} s, start-up and indexing in)",
            flush=True,
        )
    print(f"\n  cost of the verifiable log: {rows[2][1] / rows[0][1]:.2f}x the rate without it")
    objects, services = puts["noindex"]
    if objects:
        # Without the indexer nothing reads the archive back, so this CPU is the PUTs' (and Kafka's).
        print(
            f"  archive, indexer off: {objects:,} objects written, {objects / EVENTS * 1000:.1f} a 1,000 events; "
            f"Kafka + SeaweedFS {services / objects * 1000:.2f} ms of CPU an object\n"
        )
    on_topic = f"bench.ingest.{run_id}.on"
    floors = (
        ("floor: source + keying only", "jvm"),
        ("floor: + an empty Python function", "python"),
        ("floor: + batches, one call each", "batched"),
    )
    for label, variant in floors:
        net, used = run_floor(env, on_topic, variant)
        cpu[variant] = used / EVENTS * 1e6
        print(
            f"  {label:<34} {EVENTS / net:>10,.0f} ev/s over net runtime {net:6.1f} s, {cpu[variant]:.1f} µs/ev",
            flush=True,
        )
    print("\n  CPU µs per event by stage (differences between the runs above; start-up included):")
    stages = (
        ("Kafka source + keying (JVM)", cpu["jvm"]),
        ("batches into Python and back (PyFlink)", cpu["batched"] - cpu["jvm"]),
        ("step, state, archiving, checkpoints", cpu["noindex"] - cpu["batched"]),
        ("indexer (Arrow into chDB)", cpu["on"] - cpu["noindex"]),
        ("whole job", cpu["on"]),
    )
    for label, value in stages:
        print(f"    {label:<44} {value:>8.1f}")
    print()
    env_latency = {**env, "AUDITLOG_BLOCK_LATENCY_MS": "1000", "AUDITLOG_BUCKET": f"auditlog-bench-{run_id}-latency"}
    ensure_bucket(s3_client(settings), env_latency["AUDITLOG_BUCKET"])
    lat = latency(settings.replace(bucket=env_latency["AUDITLOG_BUCKET"]), env_latency)
    if lat:
        q = statistics.quantiles(lat, n=100)
        print(
            f"  produce → signed checkpoint in WORM S3, {LATENCY_RATE:,} ev/s for {LATENCY_SECONDS} s, "
            f"cut every 1 s: p50 {q[49]:.2f} s, p99 {q[98]:.2f} s over {len(lat):,} events"
        )
    else:
        print("  latency: no checkpoint seen (see the job's log)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--floor"]:
        floor_job(sys.argv[2], sys.argv[3])
    else:
        main()
