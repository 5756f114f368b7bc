"""The outbox forwarder: relays committed outbox rows (api/sdk/outbox.py) to Kafka.

    auditlog outbox forward --dsn postgresql://app@db/app

At least once. A forwarder claims a batch in id order — PostgreSQL: `SELECT ... FOR UPDATE SKIP
LOCKED` inside a transaction, so several forwarders share the table without waiting on each
other; SQLite: a lease written in a short transaction, taken over by another forwarder once it
expires — produces every row (acks=all, idempotent producer), waits for the acks, and only then
deletes the acknowledged rows. A forwarder killed at any point leaves its rows in the table
(PostgreSQL rolls the transaction back; a SQLite lease expires), and the next run sends them
again: a row can reach Kafka twice, never zero times. The ingest job's dedupe by
(tenant, event_id) removes the repeats. Kafka or database errors are retried with exponential
backoff and jitter, forever, until stopped.

Order: one forwarder sends rows in id order, so a tenant's events keep their commit order within
a batch. PostgreSQL ids follow insert order, not commit order, and several forwarders interleave
batches, so the log's order is "roughly" commit order; the log's integrity never depends on it.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from api.sdk.outbox import DEFAULT_BATCH, OutboxRow, OutboxSource
from transforms.errors import AuditlogError

__all__ = ["ForwardError", "ForwarderStats", "OutboxForwarder"]

log = logging.getLogger(__name__)


class ForwardError(AuditlogError, RuntimeError):
    """A batch was not fully acknowledged by Kafka; its unacknowledged rows stay and are retried."""


@dataclass
class ForwarderStats:
    forwarded: int = 0
    batches: int = 0
    retries: int = 0
    elapsed_s: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.forwarded / self.elapsed_s if self.elapsed_s > 0 else 0.0


class _Batch:
    """Rows claimed from one source and produced; Kafka's failures for them, as they arrive."""

    __slots__ = ("source", "rows", "failures")

    def __init__(self, source: OutboxSource, rows: list[OutboxRow]) -> None:
        self.source = source
        self.rows = rows
        self.failures: list[tuple[str, bytes | None]] = []

    def on_delivery(self, error: Any, message: Any) -> None:
        if error is not None:  # successes are silent with delivery.report.only.error
            self.failures.append((str(error), message.value() if message is not None else None))


class OutboxForwarder:
    """Relays outbox rows to Kafka at least once; see the module docstring.

    `run` keeps two batches in a pipeline on two database connections: while Kafka acknowledges
    one batch, the next is claimed; while the first is deleted, the next is on its way to Kafka.
    Rows are still produced in id order, and a row is deleted only after Kafka acknowledged it.

    Args:
        open_source: makes a fresh OutboxSource (called again after a database error).
        producer: a confluent_kafka Producer made by `api.sdk.kafka.make_producer`; with
            `delivery.report.only.error` set, only failures cost a callback.
        topic: the event topic.
        batch_size: rows per claim.
        ack_timeout_s: how long to wait for a batch's acks before retrying it.
        backoff_s: (first, max) retry delay; doubles per failure, with jitter.
        pause_before_delete_s: crash tests only: sleep between the acks and the delete.
        headers: optional `headers(row) -> [(name, bytes)]`, Kafka headers for a row, computed from
            the exact value bytes produced (`row.payload`); the query service signs its read-audit
            records this way (schemas/reserved.py).
    """

    def __init__(
        self,
        open_source: Callable[[], OutboxSource],
        producer: Any,
        topic: str,
        *,
        batch_size: int = DEFAULT_BATCH,
        ack_timeout_s: float = 30.0,
        backoff_s: tuple[float, float] = (0.1, 10.0),
        pause_before_delete_s: float = 0.0,
        say: Callable[[str], None] | None = None,
        headers: Callable[[OutboxRow], list[tuple[str, bytes]]] | None = None,
    ) -> None:
        self.open_source = open_source
        self.headers = headers
        self.producer = producer
        self.topic = topic
        self.batch_size = batch_size
        self.ack_timeout_s = ack_timeout_s
        self.backoff_s = backoff_s
        self.pause_before_delete_s = pause_before_delete_s
        self.say = say or log.info
        self.stats = ForwarderStats()
        self._sources: list[OutboxSource | None] = [None, None]

    # ---- the steps of one batch

    def _source(self, slot: int) -> OutboxSource:
        source = self._sources[slot]
        if source is None:
            source = self._sources[slot] = self.open_source()
        return source

    def _claim(self, slot: int) -> _Batch | None:
        source = self._source(slot)
        rows = source.claim(self.batch_size)
        if not rows:
            source.release()
            return None
        return _Batch(source, rows)

    def _send(self, batch: _Batch) -> None:
        produce, topic, on_delivery, headers = self.producer.produce, self.topic, batch.on_delivery, self.headers
        for row in batch.rows:
            extra = {"headers": headers(row)} if headers is not None else {}
            while True:
                try:
                    produce(topic, value=row.payload, key=row.tenant_id.encode(), on_delivery=on_delivery, **extra)
                    break
                except BufferError:  # librdkafka's queue is full: let it send
                    self.producer.poll(0.05)

    def _finish(self, batch: _Batch, left: int) -> int:
        """Deletes the acknowledged rows of a batch whose acks are all in (or timed out).

        Raises:
            ForwardError: some rows were not acknowledged (they stay, unclaimed, to be sent again).
        """
        if left:  # which records are still unacknowledged is unknown: keep the whole batch
            done: list[int] = []
        elif batch.failures:
            failed_payloads = {payload for _, payload in batch.failures}
            done = [row.id for row in batch.rows if row.payload not in failed_payloads]
        else:
            done = [row.id for row in batch.rows]
        if self.pause_before_delete_s:
            time.sleep(self.pause_before_delete_s)
        if done:
            batch.source.complete(done)
        else:
            batch.source.release()
        self.stats.forwarded += len(done)
        self.stats.batches += 1
        if len(done) < len(batch.rows):
            why = (
                batch.failures[0][0] if batch.failures else f"{left} not acknowledged within {self.ack_timeout_s:.0f} s"
            )
            raise ForwardError(
                f"{len(batch.rows) - len(done)} of {len(batch.rows)} rows were not acknowledged by Kafka ({why})"
            )
        return len(done)

    def forward_batch(self) -> int:
        """One claim → produce → acks → delete cycle, without the pipeline; returns rows forwarded.

        Raises:
            ForwardError: some rows were not acknowledged (the acknowledged ones were deleted).
        """
        batch = self._claim(0)
        if batch is None:
            return 0
        try:
            self._send(batch)
            left = self.producer.flush(self.ack_timeout_s)
        except BaseException:
            self._release(batch)
            raise
        return self._finish(batch, left)

    # ---- the loop

    def run(
        self, stop: threading.Event | None = None, until_empty: bool = False, idle_s: float = 0.2
    ) -> ForwarderStats:
        """Forwards until `stop` is set (or, with `until_empty`, until a claim finds nothing)."""
        stop = stop or threading.Event()
        began = time.monotonic()
        delay = self.backoff_s[0]
        current: _Batch | None = None
        slot = 0
        try:
            while not stop.is_set():
                try:
                    if current is None:
                        current = self._claim(slot)
                        if current is None:
                            if until_empty:
                                break
                            stop.wait(idle_s)
                            continue
                        self._send(current)
                    following = self._claim(1 - slot)  # overlaps Kafka's acks of `current`
                    left = self.producer.flush(self.ack_timeout_s)
                    if following is not None:
                        self._send(following)  # on its way while `current` is deleted
                    finished, current, slot = current, following, 1 - slot
                    try:
                        self._finish(finished, left)
                        delay = self.backoff_s[0]
                    except ForwardError as exc:
                        self._retry(f"Kafka: {exc}", delay, stop)
                        delay = min(delay * 2, self.backoff_s[1])
                except Exception as exc:  # noqa: BLE001 - database errors: reconnect and retry
                    if not _is_database_error(exc):
                        raise
                    current = None
                    self._drop_sources()
                    self._retry(f"database: {type(exc).__name__}: {exc}", delay, stop)
                    delay = min(delay * 2, self.backoff_s[1])
            if current is not None:  # stopped with a batch in flight: finish it properly
                self._finish(current, self.producer.flush(self.ack_timeout_s))
        finally:
            self.stats.elapsed_s = time.monotonic() - began
            self._drop_sources()
        return self.stats

    def _release(self, batch: _Batch) -> None:
        try:
            batch.source.release()
        except Exception:  # noqa: BLE001 - the connection itself may be what failed
            pass

    def _retry(self, why: str, delay: float, stop: threading.Event) -> None:
        self.stats.retries += 1
        wait = delay * (0.5 + random.random())
        self.say(f"outbox forward: {why}; retrying in {wait:.2f} s")
        stop.wait(wait)

    def _drop_sources(self) -> None:
        for slot, source in enumerate(self._sources):
            if source is not None:
                try:
                    source.release()
                    source.close()
                except Exception:  # noqa: BLE001 - closing a broken connection may fail too
                    pass
            self._sources[slot] = None


def _is_database_error(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        return True
    module = type(exc).__module__
    return module.startswith(("psycopg", "psycopg2"))
