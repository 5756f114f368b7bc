"""`auditlog outbox`: the transactional outbox's table and its forwarder to Kafka.

    auditlog outbox init --dsn postgresql://app@127.0.0.1:5432/app      # create auditlog_outbox
    auditlog outbox status --dsn sqlite:////srv/app/app.db              # rows waiting
    auditlog outbox forward --dsn postgresql://app@127.0.0.1:5432/app   # relay until stopped
    auditlog outbox forward --dsn ... --until-empty                     # drain, then exit

`forward` claims batches in id order (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: a lease),
produces them to `settings.topic` keyed by tenant (acks=all, idempotent producer), waits for the
acks and only then deletes the rows: at least once. Kafka and database errors are retried with
exponential backoff. Several forwarders may run against one PostgreSQL table. SIGTERM or Ctrl-C
finishes the batch in hand, then exits. See `api/sdk/outbox.py`.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from schemas.settings import Settings
from transforms.errors import AuditlogError


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "outbox",
        help="create the outbox table, show its backlog, or forward it to Kafka (at least once)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="outbox_action", metavar="ACTION", required=True)
    for name, text in (
        ("init", "create the auditlog_outbox table if it is missing"),
        ("status", "print how many events wait in the outbox"),
        ("forward", "relay outbox rows to Kafka until stopped"),
    ):
        sub = actions.add_parser(name, help=text)
        sub.add_argument("--dsn", required=True, help="postgresql://user@host:port/db or sqlite:///path/to/app.db")
        if name == "forward":
            sub.add_argument("--batch-size", type=int, default=5000, metavar="N", help="rows per batch (default 5000)")
            sub.add_argument("--topic", metavar="TOPIC", help="topic (default: AUDITLOG_TOPIC)")
            sub.add_argument("--until-empty", action="store_true", help="exit once the outbox is empty")
            sub.add_argument("--lease-s", type=float, default=60.0, help="SQLite: seconds a claimed batch is held")
            sub.add_argument("--linger-ms", type=int, default=5, metavar="MS", help="producer linger.ms (default 5)")
            sub.add_argument("--debug-pause-before-delete-ms", type=int, default=0, help=argparse.SUPPRESS)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from api.sdk.outbox import OutboxError, connect, create_outbox_table, open_outbox

    try:
        if args.outbox_action == "init":
            conn = connect(args.dsn)
            try:
                create_outbox_table(conn)
            finally:
                conn.close()
            print(f"outbox table ready in {_redact(args.dsn)}")
            return 0
        source = open_outbox(args.dsn)
        try:
            backlog = source.backlog()
        finally:
            source.close()
    except OutboxError:
        raise
    except Exception as exc:  # the database's own message is the useful part
        raise AuditlogError(
            f"{_redact(args.dsn)}: {type(exc).__name__}: {str(exc).strip()}\n"
            "(create the table with `auditlog outbox init --dsn ...` if it is missing)"
        ) from exc
    if args.outbox_action == "status":
        print(f"{backlog} events waiting in {_redact(args.dsn)}")
        return 0
    return _forward(args, settings, backlog)


def _forward(args: argparse.Namespace, settings: Settings, backlog: int) -> int:
    from api.sdk.forwarder import OutboxForwarder
    from api.sdk.kafka import check_topic, make_producer
    from api.sdk.outbox import open_outbox

    topic = args.topic or settings.topic
    # Only failures need a callback: a batch whose flush ends without one was acknowledged whole.
    producer = make_producer(
        settings.kafka_bootstrap, **{"linger.ms": args.linger_ms, "delivery.report.only.error": True}
    )
    check_topic(producer, settings.kafka_bootstrap, topic)
    options = {"lease_s": args.lease_s} if args.dsn.startswith("sqlite:") else {}
    forwarder = OutboxForwarder(
        lambda: open_outbox(args.dsn, **options),
        producer,
        topic,
        batch_size=args.batch_size,
        pause_before_delete_s=args.debug_pause_before_delete_ms / 1000,
        say=lambda line: print(line, file=sys.stderr, flush=True),
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(
        f"outbox forward: {backlog} events waiting in {_redact(args.dsn)}; relaying to {topic} at "
        f"{settings.kafka_bootstrap}",
        flush=True,
    )
    stats = forwarder.run(stop, until_empty=args.until_empty)
    print(
        f"outbox forward: {stats.forwarded} events in {stats.batches} batches, {stats.elapsed_s:.1f} s "
        f"({stats.events_per_s:,.0f} events/s), {stats.retries} retries",
        flush=True,
    )
    return 0


def _redact(dsn: str) -> str:
    """The DSN without a password."""
    scheme, sep, rest = dsn.partition("://")
    if "@" in rest:
        userinfo, _, host = rest.rpartition("@")
        user = userinfo.split(":", 1)[0]
        return f"{scheme}{sep}{user}:***@{host}" if ":" in userinfo else dsn
    return dsn
