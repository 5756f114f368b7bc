"""`auditlog ingest`: run the streaming ingest job on a local mini-cluster or a Flink cluster.

auditlog ingest --bounded                       # local mini-cluster, read to the end, finish
auditlog ingest                                 # local, until Ctrl-C; cut ticker closes blocks
auditlog ingest --cluster http://127.0.0.1:8081 # submit the same code with `flink run -py`
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from runners.argtypes import positive_int
from runners.deployment import halted_error, indexer_unless_served, load_or_create_signer, with_master_key
from schemas.settings import REPO_ROOT, Settings

if TYPE_CHECKING:
    pass

SHIPPED_PACKAGES = ("transforms", "schemas", "pipelines")  # what the job imports; the CLI stays home


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "ingest",
        help="run the streaming ingest job (Kafka → logs, blocks, checkpoints → ClickHouse + WORM S3)",
        description="Runs pipelines/ingest.py. By default on a local mini-cluster inside this process; "
        "with --cluster the same code is submitted to a Flink cluster with `flink run -py`.",
    )
    p.add_argument("--bounded", action="store_true", help="read up to the end offsets present at start, then finish")
    p.add_argument("--cluster", metavar="URL", help="Flink REST address to submit to, e.g. http://127.0.0.1:8081")
    p.add_argument("--topic", help="source topic (default: settings.topic)")
    p.add_argument(
        "--parallelism",
        type=positive_int,
        help="job parallelism (default: AUDITLOG_PARALLELISM, else 1 on the local mini-cluster and 2 on a cluster)",
    )
    p.add_argument("--block-size", type=int, help="leaves per block (default: settings.block_size)")
    p.add_argument("--no-ticker", action="store_true", help="do not write cut markers (blocks close only when full)")
    p.add_argument("--no-index", action="store_true", help="do not load ClickHouse (run `auditlog index` later)")
    p.add_argument(
        "--unverifiable",
        action="store_true",
        help="benchmarks only: skip hashing, chaining and signing to measure their cost (blocks cannot be verified)",
    )
    p.add_argument(
        "--from-recording",
        metavar="FILE",
        help="run on a recording (`auditlog record`) as a bounded source, no broker; logs are named after "
        "the recorded topic unless --topic is given",
    )
    p.add_argument("--dlq-file", metavar="FILE", help="with --from-recording: dead letters as JSON Lines here")
    p.set_defaults(handler=run)


def prepare(settings: Settings, topic: str) -> None:
    """Checks the services and creates what the job needs: signing key, topics, key store."""
    from pipelines.io.kafka import kafka_client_config
    from pipelines.io.keystore import open_keystore

    load_or_create_signer(settings.keys_dir, settings.origin)
    open_keystore(settings).close()  # fails here, clearly, on a wrong or missing master key
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(kafka_client_config(settings))
    try:
        metadata = admin.list_topics(timeout=5)
    except Exception as exc:  # confluent_kafka raises KafkaException with no subclass to catch
        raise SystemExit(
            f"error: Kafka at {settings.kafka_bootstrap} does not answer ({exc}); start it with `auditlog stack up`"
        ) from None
    missing = [t for t in (topic, settings.dlq_topic) if t not in metadata.topics]
    if missing:
        futures = admin.create_topics([NewTopic(t, num_partitions=4, replication_factor=1) for t in missing])
        for name, future in futures.items():
            try:
                future.result(10)
            except Exception as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise SystemExit(f"error: cannot create topic {name}: {exc}") from None


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.from_recording:
        from runners.commands.replay import ingest_recording

        return ingest_recording(args, settings)
    if args.parallelism:
        settings = settings.replace(parallelism=args.parallelism)
    from pipelines.ingest_config import config_to_json, job_config

    topic = args.topic or settings.topic
    settings = with_master_key(settings)
    prepare(settings, topic)
    config = job_config(settings, topic=topic, block_size=args.block_size, verifiable=not args.unverifiable)
    ticker = None
    if args.bounded:
        CutTicker(settings, topic).mark_once()
    if not args.bounded and not args.no_ticker:
        ticker = CutTicker(settings, topic)
        ticker.start()
    from pipelines.indexer import IndexerThread, wait_quiet

    indexer = None if args.no_index or args.unverifiable else indexer_unless_served(settings)
    follower = IndexerThread(indexer) if indexer else None
    publisher = None

    def start_helpers() -> None:
        # Only once the job graph is built: PyFlink plans the SQL source over py4j from this
        # thread, and the Table planner keeps per-thread state in the JVM. Another Python thread
        # that runs py4j calls meanwhile (a garbage-collected JavaObject's release does) can hand
        # this thread a different JVM thread, and planning failed with "NullPointerException:
        # metadataHandlerProvider" (seen once in `make run`).
        nonlocal publisher
        if follower:
            follower.start()
        publisher = None if args.unverifiable else start_publisher(settings)

    try:
        if args.cluster:
            start_helpers()
            rc = submit_to_cluster(settings, config_to_json(config), args.cluster, args.bounded)
        else:
            rc = run_local(settings, config, args.bounded, start_helpers)
    finally:
        if ticker:
            ticker.stop()
        if follower:
            follower.stop()
        if publisher:
            finish_publisher(publisher)
    if indexer is None:
        return rc
    stats = wait_quiet(indexer)
    print(f"indexed into ClickHouse: {stats.blocks} blocks, {stats.events} events", file=sys.stderr)
    indexer.clickhouse.close()
    halted = halted_error(stats.halted)
    if halted and not rc:
        raise halted
    if halted:  # the job failed too: its exit status stands, the halted logs are still named
        print(halted, file=sys.stderr)
    return rc


def start_publisher(settings: Settings) -> Any:
    """The witness publisher in a thread beside the job (None without witnesses); it never stops ingest."""
    from infra.witness import local_registrar
    from pipelines.witnessing import PublisherThread, open_publisher

    try:
        publisher = open_publisher(settings, register=local_registrar(settings))
    except Exception as exc:  # noqa: BLE001 - a witness misconfiguration must not stop ingest
        print(f"warning: witnesses not asked to cosign: {exc}", file=sys.stderr)
        return None
    if publisher is None:
        return None
    thread = PublisherThread(publisher)
    thread.start()
    return thread


def finish_publisher(thread: Any) -> None:
    """Stops the publisher after one last pass; a witness still down is reported, not waited for."""
    thread.stop()
    publisher = thread.publisher
    try:
        publisher.sync_once()
    except Exception as exc:  # noqa: BLE001
        print(f"warning: last witness pass failed: {exc}", file=sys.stderr)
    for row in publisher.lag():
        note = f" ({row.refused or row.error})" if row.refused or row.error else ""
        print(
            f"witness {row.witness}: log {row.log_id} cosigned up to {row.cosigned_size} of {row.newest_size}, "
            f"{row.checkpoints_behind} checkpoint(s) behind{note}",
            file=sys.stderr,
        )


def run_local(settings: Settings, config: Any, bounded: bool, built: Callable[[], None] | None = None) -> int:
    """Runs the job on a local mini-cluster; `built` is called once its graph is built, before it runs."""
    from infra.jars import ensure_jars
    from pipelines.ingest import build_ingest, create_environment, kafka_records

    jars = ensure_jars(settings)
    env, t_env = create_environment(
        config,
        parallelism=settings.job_parallelism(local=True),
        checkpoint_interval_ms=settings.checkpoint_interval_ms,
        checkpoint_dir=(settings.home / "checkpoints" / "ingest-local").as_uri(),
        jars=[str(jars.kafka_connector), str(jars.operators)],
        local=True,
    )
    build_ingest(kafka_records(t_env, config, bounded), config)
    if built:
        built()
    started = time.monotonic()
    mode = "bounded" if bounded else "streaming; Ctrl-C to stop"
    print(
        f"ingest: {config.options.topic} → logs {config.options.origin_prefix}/…, local mini-cluster ({mode})",
        file=sys.stderr,
    )
    result = env.execute(f"auditlog ingest {config.options.topic}")
    elapsed = time.monotonic() - started
    runtime_ms = result.get_net_runtime()
    print(
        f"ingest finished in {elapsed:.1f} s (job {result.get_job_id()}, net runtime {runtime_ms} ms)",
        file=sys.stderr,
    )
    return 0


def submit_to_cluster(settings: Settings, config_json: str, cluster: str, bounded: bool) -> int:
    """Submits pipelines/ingest.py with `flink run -py`, shipping the project's packages."""
    from infra.jars import ensure_jars
    from infra.stack import Stack

    jars = ensure_jars(settings)
    jobs_dir = settings.home / "jobs"
    jobs_dir.mkdir(parents=True, exist_ok=True)
    config_file = jobs_dir / f"ingest-{int(time.time())}.json"
    config_file.write_text(config_json)
    address = cluster.removeprefix("http://").removeprefix("https://").rstrip("/")
    stack = Stack(settings)
    command = [
        str(stack.flink_bin()),
        "run",
        "-m",
        address,
        "-py",
        str(REPO_ROOT / "pipelines" / "ingest.py"),
        "-pyfs",
        ",".join(str(REPO_ROOT / p) for p in SHIPPED_PACKAGES),
        "-j",
        str(jars.kafka_connector),
        *([] if bounded else ["--detached"]),
        "--config",
        str(config_file),
        "--jar",
        str(jars.kafka_connector),
        "--jar",
        str(jars.operators),
        "--parallelism",
        str(settings.job_parallelism(local=False)),
        "--checkpoint-interval-ms",
        str(settings.checkpoint_interval_ms),
        *(["--bounded"] if bounded else []),
    ]
    print("submitting:", " ".join(command), file=sys.stderr)
    return subprocess.run(command, env=stack.flink_env(), check=False).returncode


class CutTicker:
    """Writes a cut marker into every partition of the topic at the block latency.

    The markers are part of the input, so replaying the topic cuts exactly the same blocks.
    """

    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings = settings
        self.topic = topic
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cut-ticker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _producer(self) -> Any:
        from confluent_kafka import Producer

        from pipelines.io.kafka import kafka_client_config

        return Producer(kafka_client_config(self.settings, **{"acks": "all", "enable.idempotence": True}))

    def _mark(self, producer: Any) -> None:
        from pipelines.ingest_core import CUT_MARKER

        partitions = producer.list_topics(self.topic, timeout=5).topics[self.topic].partitions
        for p in partitions:
            producer.produce(self.topic, CUT_MARKER, partition=p)

    def mark_once(self) -> None:
        """Writes one marker into every partition and waits for the acks.

        A bounded run does this before it starts: its last block then ends at a marker in the
        input, so a later run over the grown topic cuts the same blocks instead of sealing
        wherever this run's input happened to end (which would be an integrity alarm).
        """
        producer = self._producer()
        self._mark(producer)
        left = producer.flush(30)
        if left:
            raise SystemExit(f"error: {left} cut markers were not acknowledged by Kafka; is the broker up?")

    def _run(self) -> None:
        producer = self._producer()
        interval = self.settings.block_latency_ms / 1000
        while not self._stop.wait(interval):
            self._mark(producer)
            producer.flush(5)
        producer.flush(5)
