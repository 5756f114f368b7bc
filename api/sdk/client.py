"""`AuditClient`: one object through which an application records audit events, on three lanes.

    from api.sdk import AuditClient, SEED_LANES

    client = AuditClient(
        kafka_bootstrap="kafka:9092",                 # the direct lane
        gateway="auditlog-gateway:50051", api_key=KEY,  # the gateway lane (optional)
        outbox_dsn="postgresql://app@db/app",          # the outbox lane without an app transaction
        lanes=SEED_LANES,                              # or "lanes.toml" (see api/sdk/lanes.py)
    )
    with conn.transaction():                          # compliance-critical: with the business change
        conn.execute("UPDATE roles ...")
        client.record({"action": "ROLE_UPGRADE", ...}, conn=conn)
    client.record({"action": "document.read", ...})    # high volume: straight to Kafka
    client.flush()                                     # before exit: wait for direct-lane acks

`record` routes by the event's action (`Lanes`):

- `outbox`: into `auditlog_outbox` inside the application's transaction when `conn` is given
  (`record_in_transaction`), else in a transaction of the client's own on `outbox_dsn`,
  committed before `record` returns. `auditlog outbox forward` relays it to Kafka.
- `direct`: produced to Kafka (acks=all, idempotent producer). `record` returns at once; pass
  `wait=True` to wait for the ack, or call `flush()`. A delivery that fails raises from the next
  `record`, `flush` or `close`, naming the event.
- `gateway`: through the gRPC gateway; returns after Kafka's ack, with the verification hash.

Every lane sends the same bytes for the same event (`api.sdk.events.wire_event`), validated
before anything leaves the process, with an `event_id` generated when the application gives none.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from api.sdk.events import Receipt, kafka_record, wire_event
from api.sdk.lanes import DIRECT, GATEWAY, OUTBOX, Lanes
from api.sdk.outbox import connect, record_in_transaction
from transforms.errors import AuditlogError

if TYPE_CHECKING:
    from api.sdk.gateway_client import GatewayClient
    from schemas.settings import Settings

__all__ = ["AuditClient", "DeliveryError", "LaneUnavailable"]


class LaneUnavailable(AuditlogError, RuntimeError):
    """An event's lane is not configured on this client."""


class DeliveryError(AuditlogError, RuntimeError):
    """Kafka did not acknowledge direct-lane events."""


class AuditClient:
    """Records events on the lane their action calls for; see the module docstring."""

    def __init__(
        self,
        *,
        kafka_bootstrap: str | None = None,
        topic: str = "audit.events",
        gateway: str | None = None,
        api_key: str | None = None,
        outbox_dsn: str | None = None,
        lanes: Lanes | str | Path | None = None,
        producer_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.kafka_bootstrap = kafka_bootstrap
        self.topic = topic
        self.gateway_target = gateway
        self.api_key = api_key
        self.outbox_dsn = outbox_dsn
        if isinstance(lanes, str | Path):
            lanes = Lanes.from_file(lanes)
        self.lanes = lanes or Lanes(default=DIRECT if kafka_bootstrap else GATEWAY if gateway else OUTBOX)
        self.producer_config = dict(producer_config or {})
        self._producer: Any = None
        self._gateway: GatewayClient | None = None
        self._outbox_conn: Any = None
        self._lock = threading.Lock()
        self._failures: list[str] = []

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> AuditClient:
        """A client of the deployment `settings` describe: its Kafka, topic and gateway port."""
        options.setdefault("kafka_bootstrap", settings.kafka_bootstrap)
        options.setdefault("topic", settings.topic)
        options.setdefault("gateway", f"{settings.host}:{settings.gateway_port}")
        return cls(**options)

    # ---- lanes

    def lane_for(self, event: Mapping[str, Any]) -> str:
        return self.lanes.lane_for(str(event.get("action", "")))

    def record(self, event: Mapping[str, Any], *, conn: Any = None, wait: bool = False) -> Receipt:
        """Records one event on its lane; returns its receipt (see the module docstring).

        Raises:
            EventValidationError: the event breaks the schema; nothing was recorded.
            LaneUnavailable: its lane is not configured here.
            DeliveryError: earlier (or, with `wait`, this) direct-lane events were not acknowledged.
            GatewayError: the gateway refused the event.
        """
        lane = self.lane_for(event)
        if lane == OUTBOX:
            return self._record_outbox(event, conn)
        if lane == GATEWAY:
            return self._gateway_client().record(event)
        return self._record_direct(event, wait)

    def record_in_transaction(self, conn: Any, event: Mapping[str, Any]) -> Receipt:
        """Writes the event into the outbox inside `conn`'s open transaction, whatever its lane."""
        wire = record_in_transaction(conn, dict(event))
        return Receipt(wire["event_id"], OUTBOX)

    def _record_outbox(self, event: Mapping[str, Any], conn: Any) -> Receipt:
        if conn is not None:
            return self.record_in_transaction(conn, event)
        if not self.outbox_dsn:
            raise LaneUnavailable(
                f"action {event.get('action')!r} goes through the outbox, but no transaction was given "
                "(record(event, conn=conn)) and this client has no outbox_dsn"
            )
        with self._lock:
            if self._outbox_conn is None:
                self._outbox_conn = connect(self.outbox_dsn)
            conn = self._outbox_conn
            try:
                wire = record_in_transaction(conn, dict(event))
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
        return Receipt(wire["event_id"], OUTBOX)

    def _record_direct(self, event: Mapping[str, Any], wait: bool) -> Receipt:
        producer = self._kafka_producer()
        self._raise_failures()
        wire = wire_event(event)
        key, value = kafka_record(wire)
        box: list[tuple[int, int]] = []

        def on_delivery(error: Any, message: Any) -> None:
            if error is not None:
                with self._lock:
                    self._failures.append(f"event {wire['event_id']}: {error}")
            else:
                box.append((message.partition(), message.offset()))

        while True:
            try:
                producer.produce(self.topic, value=value, key=key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        if wait:
            producer.flush(60)
            self._raise_failures()
            if box:
                return Receipt(wire["event_id"], DIRECT, "", box[0][0], box[0][1])
        return Receipt(wire["event_id"], DIRECT)

    # ---- plumbing

    def _kafka_producer(self) -> Any:
        if self._producer is None:
            if not self.kafka_bootstrap:
                raise LaneUnavailable("the direct lane needs kafka_bootstrap; this client has none")
            from api.sdk.kafka import make_producer

            self._producer = make_producer(self.kafka_bootstrap, **self.producer_config)
        return self._producer

    def _gateway_client(self) -> GatewayClient:
        if self._gateway is None:
            if not self.gateway_target:
                raise LaneUnavailable("the gateway lane needs gateway=HOST:PORT; this client has none")
            from api.sdk.gateway_client import GatewayClient  # grpc is imported on first use

            self._gateway = GatewayClient(self.gateway_target, self.api_key)
        return self._gateway

    def _raise_failures(self) -> None:
        with self._lock:
            failures, self._failures = self._failures, []
        if failures:
            raise DeliveryError(f"{len(failures)} event(s) were not acknowledged by Kafka; first: {failures[0]}")

    def flush(self, timeout_s: float = 60.0) -> None:
        """Waits for every direct-lane event's ack; raises DeliveryError for those that failed."""
        if self._producer is not None:
            left = self._producer.flush(timeout_s)
            if left:
                raise DeliveryError(f"{left} event(s) were not acknowledged by Kafka within {timeout_s:.0f} s")
        self._raise_failures()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self._gateway is not None:
                self._gateway.close()
            if self._outbox_conn is not None:
                self._outbox_conn.close()

    def __enter__(self) -> AuditClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
