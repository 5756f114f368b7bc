"""A small synchronous client of the gRPC gateway (`auditlog gateway`).

    client = GatewayClient("127.0.0.1:50051", api_key="alk_...")
    receipt = client.record(event)          # waits for Kafka's ack; receipt.verification_hash
    receipts = client.record_many(events)   # one RecordEvents call, all or nothing

RESOURCE_EXHAUSTED (the gateway's backpressure) and UNAVAILABLE are retried with exponential
backoff up to `retries` times, honouring the server's `retry-after-ms` hint; a repeat is
idempotent because every event carries its event_id. Other errors raise `GatewayError` with the
status code and the gateway's message (which names the offending field).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Mapping
from typing import Any

import grpc

from api.sdk.events import Receipt, wire_event
from transforms.errors import AuditlogError

__all__ = ["GatewayClient", "GatewayError"]

RETRYABLE = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)


class GatewayError(AuditlogError, RuntimeError):
    """The gateway refused a call: `code` is the gRPC status, `field` the offending field if any."""

    def __init__(self, code: grpc.StatusCode, details: str, field: str = "") -> None:
        self.code = code
        self.details = details
        self.field = field
        super().__init__(f"{code.name}: {details}")


def _trailer(error: grpc.RpcError, name: str) -> str:
    for metadatum in error.trailing_metadata() or ():
        if metadatum.key == name:
            return str(metadatum.value)
    return ""


class GatewayClient:
    """Records events through the gateway; thread-safe (one gRPC channel)."""

    def __init__(
        self,
        target: str,
        api_key: str | None = None,
        *,
        timeout_s: float = 30.0,
        retries: int = 5,
        backoff_s: float = 0.05,
    ) -> None:
        from api.gateway import audit_pb2_grpc

        self.target = target
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self.channel = grpc.insecure_channel(target)
        self.stub = audit_pb2_grpc.AuditLogServiceStub(self.channel)

    def _call(self, method: Any, request: Any) -> Any:
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return method(request, metadata=self.metadata, timeout=self.timeout_s)
            except grpc.RpcError as error:
                code = error.code()
                if code in RETRYABLE and attempt < self.retries:
                    hint = _trailer(error, "retry-after-ms")
                    wait = max(delay, int(hint) / 1000 if hint.isdigit() else 0)
                    time.sleep(wait * (0.5 + random.random()))
                    delay *= 2
                    continue
                raise GatewayError(code, error.details() or "", _trailer(error, "auditlog-field")) from None
        raise AssertionError("unreachable")

    def record(self, event: Mapping[str, Any]) -> Receipt:
        """Records one event (an `event_id` is generated if missing); returns once Kafka acked it."""
        from api.gateway.convert import receipt_from_response, request_from_event

        response = self._call(self.stub.RecordEvent, request_from_event(wire_event(event)))
        return receipt_from_response(response)

    def record_many(self, events: Iterable[Mapping[str, Any]]) -> list[Receipt]:
        """Records events in one RecordEvents call; receipts in the same order."""
        from api.gateway import audit_pb2
        from api.gateway.convert import receipt_from_response, request_from_event

        request = audit_pb2.RecordEventsRequest(events=[request_from_event(wire_event(e)) for e in events])
        response = self._call(self.stub.RecordEvents, request)
        return [receipt_from_response(r) for r in response.results]

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
