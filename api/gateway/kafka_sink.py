"""The gateway's Kafka side: one idempotent producer and a thread that delivers its acks.

confluent_kafka calls delivery callbacks only from `poll()`/`flush()`; a daemon thread polls so
that the request threads (or the event loop) never block on Kafka.
"""

from __future__ import annotations

import threading
from typing import Any

from api.gateway.intake import DeliveryCallback
from api.sdk.kafka import check_topic, make_producer

POLL_S = 0.05


class KafkaAckSink:
    """Produces to `topic` keyed by tenant; calls each record's `on_delivery` once Kafka acked it.

    With `poll_thread` (the thread-pool server), a daemon thread serves the acks. Without it (the
    grpc.aio server), the event loop calls `poll(0)` itself while records are in flight, so acks
    are handled on the loop's own thread: no GIL hand-offs and no cross-thread wake-ups per ack.
    """

    def __init__(
        self, bootstrap: str, topic: str, connect_timeout_s: float = 5.0, poll_thread: bool = True, **overrides: Any
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.producer = make_producer(bootstrap, **overrides)
        self.partitions = check_topic(self.producer, bootstrap, topic, connect_timeout_s)
        self.needs_polling = not poll_thread
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        if poll_thread:
            self._poller = threading.Thread(target=self._poll, name="gateway-kafka-acks", daemon=True)
            self._poller.start()

    def poll(self, timeout_s: float = 0.0) -> int:
        """Serves the acks that arrived (their callbacks run in the caller's thread)."""
        return int(self.producer.poll(timeout_s))

    def _poll(self) -> None:
        poll = self.producer.poll
        while not self._stop.is_set():
            poll(POLL_S)

    def produce(self, key: bytes, value: bytes, on_delivery: DeliveryCallback) -> None:
        self.producer.produce(self.topic, value=value, key=key, on_delivery=on_delivery)

    def close(self, timeout_s: float = 30.0) -> int:
        """Waits for outstanding acks, stops the poll thread; returns records still unacknowledged."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join()
        return int(self.producer.flush(timeout_s))
