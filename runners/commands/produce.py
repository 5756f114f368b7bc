"""`auditlog produce`: realistic audit events into Kafka, with duplicates and malformed records.

    auditlog stack up kafka
    auditlog produce --events 100000 --tenants 5 --duplicates 0.02 --malformed 0.01
    auditlog produce --events 5000 --rate 500 --topic audit.events.replay --seed 7

`--events N` is the number of records written: about N × `--duplicates` re-sends of an earlier
event's exact bytes and key, later in the stream, as a retrying producer makes them; about
N × `--malformed` broken records of several kinds, each keyed by its tenant like a real one and
each rejected by `schemas.events.parse_event`; and new events for the rest. The same seed gives the same
records in the same order. Keys are tenant ids and the partitioner is Kafka's Java default
(murmur2), so a tenant's records share one partition whichever client wrote them.

From Python, without Kafka: `generate_records(...)`; with Kafka: `produce_records(...)`.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from runners.argtypes import UsageError, positive_int, records_per_second, utc_time
from runners.sending import pace, produce_waiting, progress_bar
from schemas.events import MAX_METADATA_BYTES
from schemas.samples import EPOCH, EventGenerator, start_of_today, to_record
from schemas.settings import Settings
from transforms.errors import AuditlogError
from transforms.retention import parse_time

MALFORMED_KINDS = (
    "not_json",
    "missing_field",
    "wrong_enum",
    "bad_timestamp",
    "oversize_metadata",
    "wrong_type",
)
"""Ways a generated record is broken; its kind is `malformed:<way>`."""

EVENT = "event"
DUPLICATE = "duplicate"
MALFORMED = "malformed"

DUPLICATE_WINDOW = 4096
"""A duplicate re-sends one of the last this-many new events: retries come soon after the original."""

REQUIRED_FIELDS = ("event_id", "tenant_id", "actor", "action", "resource", "result", "occurred_at")

PRODUCER_CONFIG: dict[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,  # no duplicates or reordering from the producer's own retries
    "linger.ms": 20,
    "batch.size": 1_000_000,
    "batch.num.messages": 10_000,
    "compression.type": "lz4",
    "queue.buffering.max.messages": 200_000,
    "queue.buffering.max.kbytes": 262_144,
    "message.timeout.ms": 120_000,
    "partitioner": "murmur2_random",  # what Java producers use: a tenant maps to one partition
    "delivery.report.only.error": True,  # a Python callback per record would halve the rate
}
CONNECT_TIMEOUT_S = 5.0
FLUSH_TIMEOUT_S = 120.0
PROGRESS_EVERY = 1000


class Record(NamedTuple):
    """One Kafka record to send, and what it is: `event`, `duplicate` or `malformed:<way>`."""

    key: bytes
    value: bytes
    kind: str


class ProduceError(AuditlogError, RuntimeError):
    """Records could not be written: Kafka unreachable, topic missing, or deliveries failed."""


@dataclass(frozen=True)
class ProduceSummary:
    """What `produce_records` wrote.

    Attributes:
        topic: where the records went.
        bootstrap: the Kafka address.
        sent: records written and acknowledged (acks=all).
        kinds: count per kind (`event`, `duplicate`, `malformed:<way>`).
        elapsed_s: from the first record to the last acknowledgement.
    """

    topic: str
    bootstrap: str
    sent: int
    kinds: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def events(self) -> int:
        return self.kinds.get(EVENT, 0)

    @property
    def duplicates(self) -> int:
        return self.kinds.get(DUPLICATE, 0)

    @property
    def malformed(self) -> int:
        return sum(n for kind, n in self.kinds.items() if kind.startswith(MALFORMED))

    @property
    def records_per_s(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def line(self) -> str:
        """The one-line summary the command prints."""
        ways = ", ".join(
            f"{kind.partition(':')[2]} {n}" for kind, n in sorted(self.kinds.items()) if kind.startswith(MALFORMED)
        )
        return (
            f"sent {self.sent} records to {self.topic} at {self.bootstrap}: {self.events} events, "
            f"{self.duplicates} duplicates, {self.malformed} malformed"
            + (f" ({ways})" if ways else "")
            + f"; {self.elapsed_s:.2f} s, {self.records_per_s:,.0f} records/s"
        )


# --------------------------------------------------------------------------- generation


def generate_records(
    n: int,
    tenants: int = 3,
    duplicates: float = 0.0,
    malformed: float = 0.0,
    seed: int = 42,
    actors_per_tenant: int = 20,
    start: datetime = EPOCH,
) -> Iterator[Record]:
    """Yields `n` records: new events, duplicates and malformed ones, the same for the same seed and start.

    Events occur from `start` on, a fraction of a second apart.

    Each record is a duplicate with probability `duplicates` (once an event exists to repeat)
    and malformed with probability `malformed`; requires 0 <= duplicates + malformed < 1.
    """
    if n < 0:
        raise ValueError(f"the number of records must be 0 or more, not {n}")
    if duplicates < 0 or malformed < 0 or duplicates + malformed >= 1:
        raise ValueError(
            f"duplicates {duplicates} and malformed {malformed} must be fractions >= 0 that add up to less than 1"
        )
    events = EventGenerator(seed=seed, tenants=tenants, actors_per_tenant=actors_per_tenant, start=start)
    # A separate stream for the choices, so the events are the ones `EventGenerator(seed)` gives.
    rng = random.Random(f"auditlog.produce/{seed}")
    recent: deque[tuple[bytes, bytes]] = deque(maxlen=DUPLICATE_WINDOW)
    for _ in range(n):
        roll = rng.random()
        if roll < malformed:
            way = MALFORMED_KINDS[rng.randrange(len(MALFORMED_KINDS))]
            key, value = malformed_record(way, events.event(), rng)
            yield Record(key, value, f"{MALFORMED}:{way}")
        elif roll < malformed + duplicates and recent:
            key, value = recent[rng.randrange(len(recent))]
            yield Record(key, value, DUPLICATE)
        else:
            key, value = to_record(events.event())
            recent.append((key, value))
            yield Record(key, value, EVENT)


def malformed_record(way: str, event: dict[str, Any], rng: random.Random) -> tuple[bytes, bytes]:
    """Breaks a valid event in one of the `MALFORMED_KINDS` ways; returns its (key, value)."""
    key = event["tenant_id"].encode()
    if way == "not_json":
        whole = to_record(event)[1]
        return key, whole[: len(whole) // 2]  # a half-written record
    if way == "missing_field":
        del event[rng.choice(REQUIRED_FIELDS)]
    elif way == "wrong_enum":
        if rng.random() < 0.5:
            event["result"] = "MAYBE"
        else:
            event["actor"]["type"] = "ROBOT"
    elif way == "bad_timestamp":
        event["occurred_at"] = rng.choice(["2026-13-45T25:61:00Z", "yesterday at noon", "2026-05-01 12:00:00"])
    elif way == "oversize_metadata":
        event["metadata"] = {"source": "batch", "blob": "x" * (MAX_METADATA_BYTES + 1)}
    elif way == "wrong_type":
        choice = rng.randrange(3)
        if choice == 0:
            event["actor"] = event["actor"]["id"]
        elif choice == 1:
            event["occurred_at"] = 1_777_593_600_000
        else:
            event["metadata"] = "source=web"
    else:
        raise ValueError(f"unknown malformed kind {way!r}; choose from {', '.join(MALFORMED_KINDS)}")
    return key, json.dumps(event, separators=(",", ":")).encode()


# --------------------------------------------------------------------------- Kafka


def produce_records(
    settings: Settings,
    records: Iterable[Record | tuple[bytes, bytes, str]],
    topic: str | None = None,
    rate: float | None = None,
    progress: bool = True,
    total: int | None = None,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
) -> ProduceSummary:
    """Writes records to Kafka (acks=all, idempotent) and waits until every one is acknowledged.

    Args:
        settings: where Kafka is (`kafka_client_config(settings)`); `settings.topic` by default.
        records: (key, value, kind) triples, e.g. from `generate_records`.
        topic: the topic to write to; it must exist (the broker does not auto-create topics).
        rate: at most this many records per second; None or 0 is as fast as possible.
        progress: show a progress bar on stderr when it is a terminal.
        total: the number of records, for the progress bar.
        connect_timeout_s: how long Kafka has to answer before ProduceError.

    Raises:
        ProduceError: Kafka did not answer, the topic is missing, or a record was not delivered.
    """
    from confluent_kafka import KafkaException, Producer

    from pipelines.io.kafka import kafka_client_config

    topic = topic or settings.topic
    quiet = logging.getLogger("auditlog.produce.librdkafka")
    quiet.setLevel(logging.CRITICAL)  # our own error says what failed and what to run
    producer = Producer(kafka_client_config(settings, logger=quiet, **PRODUCER_CONFIG))
    _check_topic(producer, settings, topic, connect_timeout_s, KafkaException)

    failures: list[str] = []

    def on_delivery(error: Any, message: Any) -> None:
        if error is not None:
            failures.append(f"{error.str()} (key {message.key()!r})")

    kinds: Counter[str] = Counter()
    bar = progress_bar(total, f"produce {topic}", progress)
    start = time.monotonic()
    sent = 0
    try:
        for key, value, kind in records:
            pace(start, sent, rate)
            produce_waiting(producer, topic, value=value, key=key, on_delivery=on_delivery)
            sent += 1
            kinds[kind] += 1
            if sent % PROGRESS_EVERY == 0:
                producer.poll(0)
                bar.update(PROGRESS_EVERY)
                if failures:
                    break
        left = producer.flush(FLUSH_TIMEOUT_S)
        bar.update(sent % PROGRESS_EVERY)
    finally:
        bar.close()
    elapsed = time.monotonic() - start
    if failures:
        raise ProduceError(
            f"{len(failures)} record(s) were not delivered to {topic} at {settings.kafka_bootstrap}; "
            f"first: {failures[0]}"
        )
    if left:
        raise ProduceError(
            f"{left} of {sent} records were not acknowledged by Kafka at {settings.kafka_bootstrap} "
            f"within {FLUSH_TIMEOUT_S:.0f} s; check the broker (`auditlog stack status`)"
        )
    return ProduceSummary(topic, settings.kafka_bootstrap, sent, dict(kinds), elapsed)


def _check_topic(producer: Any, settings: Settings, topic: str, timeout: float, kafka_error: type[Exception]) -> None:
    """Fails fast, and says what to do, if Kafka does not answer or the topic does not exist."""
    try:
        metadata = producer.list_topics(topic=topic, timeout=timeout)
    except kafka_error as exc:
        raise ProduceError(
            f"Kafka at {settings.kafka_bootstrap} did not answer within {timeout:.0f} s "
            f"({exc.args[0].str()}). "
            "Start the local stack with `auditlog stack up` (or `auditlog stack up kafka`), or point "
            "AUDITLOG_HOST / AUDITLOG_KAFKA_PORT at your broker"
        ) from None
    info = metadata.topics.get(topic)
    if info is None or info.error is not None or not info.partitions:
        raise ProduceError(
            f"topic {topic!r} does not exist on Kafka at {settings.kafka_bootstrap} and is not created "
            f"automatically; `auditlog stack up` creates {settings.topic!r}, or create {topic!r} first"
        )


# --------------------------------------------------------------------------- command line


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give a fraction such as 0.02") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in [0, 1); give e.g. 0.02 for 2%")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "produce",
        help="write realistic sample events to Kafka, with duplicates and malformed records",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--events",
        type=positive_int,
        default=10_000,
        metavar="N",
        help="records to write, duplicates and malformed included (default 10000)",
    )
    p.add_argument(
        "--tenants",
        type=positive_int,
        default=3,
        metavar="T",
        help="tenants to spread events over (default 3)",
    )
    p.add_argument(
        "--duplicates",
        type=_fraction,
        default=0.0,
        metavar="F",
        help="fraction of records that re-send an earlier event (default 0)",
    )
    p.add_argument(
        "--malformed",
        type=_fraction,
        default=0.0,
        metavar="F",
        help="fraction of records that are malformed (default 0)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=42,
        metavar="S",
        help="the same seed and start write the same records in the same order (default 42)",
    )
    p.add_argument(
        "--start",
        type=utc_time,
        metavar="TIME",
        help="when the first event occurs, ISO-8601 (default: midnight UTC today, so events are recent and "
        "no retention class has ended for them)",
    )
    p.add_argument(
        "--rate",
        type=records_per_second,
        default=0.0,
        metavar="R",
        help="at most R records per second (default 0: as fast as Kafka takes them)",
    )
    p.add_argument("--topic", metavar="TOPIC", help="topic to write to (default: AUDITLOG_TOPIC, audit.events)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.duplicates + args.malformed >= 1:
        raise UsageError(f"--duplicates {args.duplicates} plus --malformed {args.malformed} must be less than 1")
    start = parse_time(args.start) if args.start else start_of_today()
    records = generate_records(args.events, args.tenants, args.duplicates, args.malformed, args.seed, start=start)
    summary = produce_records(
        settings, records, topic=args.topic, rate=args.rate, progress=not args.quiet, total=args.events
    )
    print(summary.line())
    return 0
