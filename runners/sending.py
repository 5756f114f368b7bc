"""Pieces every command that writes to or reads from Kafka in bulk shares: pacing, back-pressure, progress."""

from __future__ import annotations

import sys
import time
from typing import Any

from tqdm import tqdm


def progress_bar(total: int | None, desc: str, enabled: bool) -> tqdm:  # type: ignore[type-arg]
    """A record counter on stderr; silent when disabled or when stderr is not a terminal."""
    return tqdm(
        total=total,
        unit="rec",
        file=sys.stderr,
        disable=not enabled or not sys.stderr.isatty(),
        mininterval=0.5,
        desc=desc,
    )


def pace(start: float, sent: int, rate: float | None) -> None:
    """Sleeps until record number `sent` is due at `rate` records/s since `start` (no limit if falsy)."""
    if rate:
        ahead = start + sent / rate - time.monotonic()
        if ahead > 0.002:
            time.sleep(ahead)


def produce_waiting(producer: Any, topic: str, **record: Any) -> None:
    """Produces one record, waiting for room while librdkafka's local queue is full."""
    while True:
        try:
            producer.produce(topic, **record)
            return
        except BufferError:  # the local queue is full: let librdkafka send some
            producer.poll(0.05)
