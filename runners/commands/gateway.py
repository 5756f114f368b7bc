"""`auditlog gateway`: the gRPC front door (AuditLogService.RecordEvent / RecordEvents).

    auditlog stack up kafka
    auditlog keys master generate --out var/master.key && export AUDITLOG_MASTER_KEY_FILE=var/master.key
    auditlog apikeys create --tenant t_1000 --scope write   # prints the key once (the gateway needs write)
    auditlog gateway                                 # listens on 127.0.0.1:50051 (AUDITLOG_GATEWAY_PORT)
    auditlog gateway --workers 2 --server threads --max-in-flight 20000

The gateway seals each event with the key store (AUDITLOG_MASTER_KEY_FILE, the same store as
the ingest job) to compute the leaf hash it returns as `verification_hash`, writes the event to
`settings.topic` keyed by tenant, and answers once Kafka acknowledged it (acks=all, idempotent
producer). Keys come from `auditlog apikeys` (settings.apikeys_path); `--no-auth` is for local
experiments only. It runs until SIGTERM or Ctrl-C, then lets running calls finish and waits for
outstanding acks. `--workers N` starts N processes on the same port (SO_REUSEPORT); each has its
own producer and its own memory of recent event ids.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from runners.argtypes import IncompleteError, UsageError
from schemas.native import event_core
from schemas.retention import load_policy
from schemas.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "gateway",
        help="the gRPC gateway: validate, hash and write events to Kafka, answer after the ack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--listen", metavar="HOST:PORT", help="address (default: AUDITLOG_HOST:AUDITLOG_GATEWAY_PORT)")
    p.add_argument("--server", choices=("aio", "threads"), default="aio", help="grpc.aio (default) or a thread pool")
    p.add_argument("--threads", type=int, default=64, metavar="N", help="pool size of --server threads (default 64)")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="processes sharing the port (default 1)")
    p.add_argument(
        "--max-in-flight",
        type=int,
        default=50_000,
        metavar="N",
        help="events waiting for Kafka before requests get RESOURCE_EXHAUSTED (default 50000)",
    )
    p.add_argument(
        "--recent",
        type=int,
        default=100_000,
        metavar="N",
        help="recent event ids remembered per process for idempotent repeats (default 100000)",
    )
    p.add_argument("--linger-ms", type=int, default=5, metavar="MS", help="producer linger.ms (default 5)")
    p.add_argument("--topic", metavar="TOPIC", help="topic to write to (default: AUDITLOG_TOPIC)")
    p.add_argument("--no-auth", action="store_true", help="accept calls without an API key (local experiments only)")
    p.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # set for --workers children
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    address = args.listen or f"{settings.host}:{settings.gateway_port}"
    if args.workers > 1:
        return _supervise(args, settings, address)
    return _serve_one(args, settings, address)


def _serve_one(args: argparse.Namespace, settings: Settings, address: str) -> int:
    from api.gateway.intake import EventIntake
    from api.gateway.kafka_sink import KafkaAckSink
    from api.gateway.server import GatewayCore, GatewayOptions, serve
    from api.keys import ApiKeyStore
    from pipelines.io.keystore import open_keystore

    topic = args.topic or settings.topic
    keystore = open_keystore(settings)
    sink = KafkaAckSink(
        settings.kafka_bootstrap, topic, poll_thread=args.server == "threads", **{"linger.ms": args.linger_ms}
    )
    apikeys = None if args.no_auth else ApiKeyStore.open(settings)
    intake = EventIntake(
        keystore,
        sink,
        max_in_flight=args.max_in_flight,
        recent_capacity=args.recent,
        retention=load_policy(settings.retention_policy_path),
        core=event_core(settings.core),  # AUDITLOG_CORE: the job's choice, so receipts are its leaves
    )
    core = GatewayCore(intake, apikeys.authenticate if apikeys else None)
    options = GatewayOptions(address, server=args.server, threads=args.threads, reuse_port=args.reuse_port)

    def ready(port: int) -> None:
        auth = "off (--no-auth)" if apikeys is None else f"API keys from {settings.apikeys_path}"
        print(
            f"gateway listening on {address.rpartition(':')[0]}:{port} (pid {os.getpid()}, server {args.server}, "
            f"topic {topic} at {settings.kafka_bootstrap}, auth {auth})",
            flush=True,
        )

    try:
        serve(core, options, ready)
    except OSError as exc:  # the address cannot be listened on; the message says which and what to do
        raise UsageError(str(exc)) from exc
    finally:
        left = intake.close(30.0)
        keystore.close()
        if apikeys:
            apikeys.close()
    print(f"gateway stopped: sent {intake.sent} events, {intake.duplicates} repeats answered from memory", flush=True)
    if left:
        raise IncompleteError(f"{left} events were not acknowledged by Kafka before shutdown")
    return 0


def _supervise(args: argparse.Namespace, settings: Settings, address: str) -> int:
    """Starts `--workers` gateway processes sharing the port; stops them all if one exits."""
    argv = [sys.executable, "-m", "runners.cli", "gateway", "--listen", address, "--reuse-port", "--workers", "1"]
    argv += ["--server", args.server, "--threads", str(args.threads), "--max-in-flight", str(args.max_in_flight)]
    argv += ["--recent", str(args.recent), "--linger-ms", str(args.linger_ms)]
    if args.topic:
        argv += ["--topic", args.topic]
    if args.no_auth:
        argv.append("--no-auth")
    env = {**os.environ, **settings.to_env()}
    children = [subprocess.Popen(argv, env=env) for _ in range(args.workers)]
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = 0
    while any(child.poll() is None for child in children):
        if not stopping and any(child.poll() is not None for child in children):
            print("gateway: a worker exited; stopping the others", file=sys.stderr)
            code = 1
            stop()
        time.sleep(0.2)
    if code:
        raise IncompleteError("a gateway worker exited; the others were stopped")
    return max((child.returncode or 0) for child in children)
