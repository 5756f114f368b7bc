"""The gateway's core, free of gRPC: validate, hash, send to Kafka, answer once acknowledged.

    intake = EventIntake(keystore, KafkaAckSink(settings))
    events = intake.validate(raw_events)            # InvalidEvent(index, EventValidationError)
    intake.submit(events, on_done)                  # on_done(list[Receipt] | IntakeError), once

`submit` seals each event's PII with the key store's keys exactly as the ingest job will
(`api.sdk.events.verification_hash`, the steps of `LogSequencer.step`), so each receipt's
`verification_hash` is the leaf the log stores. It sends the validated event as compact JSON
keyed by tenant, and calls `on_done` from the sink's delivery thread once Kafka acknowledged every
event of the request (acks=all, idempotent producer), or failed.

Idempotency. The ingest job keeps the first occurrence of each (tenant, event_id); a repeat is a
duplicate it drops. The gateway adds, per process, a bounded memory of recent ids
(`recent_capacity`, default 100 000) and of those in flight:

- a repeat of an acknowledged event with the same content gets the original receipt
  (`duplicate=True`) and is not sent again; one still in flight waits for the original's ack;
- a repeat with different content is refused (`EventConflict`, gRPC ALREADY_EXISTS): the log
  keeps the first, so the new hash would never be in it;
- a repeat that this process no longer remembers (evicted, restarted, or another worker) is
  sent again and dropped by the job; its verification_hash is still right if the content is the
  same, because the hash is a function of the content and the subject's keys alone.

Backpressure. At most `max_in_flight` events wait for Kafka at once; a request that would go
beyond it is refused whole with `Backpressure` (gRPC RESOURCE_EXHAUSTED and a retry hint), before
anything is sent. A request larger than the limit alone is admitted when nothing else is in
flight, so that every batch size can make progress.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from api.sdk.events import Receipt, encode_event, verification_hash
from pipelines.ingest_core import native_entry
from schemas.events import EventValidationError, loads_json, pii_subject, validate_event
from schemas.retention import load_policy
from transforms.errors import AuditlogError
from transforms.pii import SubjectErased, SubjectKeys
from transforms.retention import RetentionPolicy

__all__ = [
    "AckSink",
    "Backpressure",
    "DeliveryFailed",
    "EventConflict",
    "EventIntake",
    "IntakeError",
    "InvalidEvent",
    "MemoryAckSink",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_IN_FLIGHT = 50_000
DEFAULT_RECENT_CAPACITY = 100_000
DEFAULT_RETRY_AFTER_MS = 200
LANE = "gateway"


class IntakeError(AuditlogError):
    """Why a request was not accepted; each subclass maps to one gRPC status."""


class InvalidEvent(IntakeError):
    """Event `index` of the request broke the schema (INVALID_ARGUMENT)."""

    def __init__(self, index: int, error: EventValidationError) -> None:
        self.index = index
        self.error = error
        super().__init__(str(error))


class Backpressure(IntakeError):
    """Too many events wait for Kafka (RESOURCE_EXHAUSTED); retry after `retry_after_ms`."""

    def __init__(self, in_flight: int, asked: int, limit: int, retry_after_ms: int) -> None:
        self.retry_after_ms = retry_after_ms
        super().__init__(
            f"{in_flight} events are waiting for Kafka and this request adds {asked}, over the limit of "
            f"{limit}: retry after {retry_after_ms} ms (with backoff)"
        )


class EventConflict(IntakeError):
    """An event id was recorded with other content (ALREADY_EXISTS)."""


class DeliveryFailed(IntakeError):
    """Kafka did not acknowledge an event (UNAVAILABLE): nothing is known to be durable; retry."""


class SubjectKeySource(Protocol):
    def get_or_create(self, tenant_id: str, subject_id: str) -> SubjectKeys: ...


class KafkaMessage(Protocol):
    def partition(self) -> int: ...

    def offset(self) -> int: ...


DeliveryCallback = Callable[[Any, Any], None]
"""confluent_kafka's `on_delivery(error, message)`; message has partition() and offset()."""


class AckSink(Protocol):
    """Where events go: Kafka, or memory in tests. `produce` raises BufferError when full.

    `needs_polling`: acks arrive only while the owner calls `poll` (no thread of the sink's own).
    """

    needs_polling: bool

    def produce(self, key: bytes, value: bytes, on_delivery: DeliveryCallback) -> None: ...

    def poll(self, timeout_s: float = 0.0) -> int: ...

    def close(self, timeout_s: float = 30.0) -> int: ...


class ValidEvent:
    """An event that passed `validate_event`, or the compiled core's parse; `index` is its place in the request.

    From the compiled core: `event` is the request's event as it came (the core checked it), or
    None when the core read the request's wire bytes (`read_request`); `value` its JSON, which goes
    to Kafka as it is, and `parsed` the core's reading of it. (A slotted class: a request makes
    hundreds, and a frozen dataclass costs a microsecond each.)
    """

    __slots__ = ("index", "event", "value", "parsed")

    def __init__(self, index: int, event: dict[str, Any] | None, value: bytes | None = None, parsed: Any = None):
        self.index = index
        self.event = event
        self.value = value
        self.parsed = parsed

    def as_dict(self) -> dict[str, Any]:
        """The event as a dict (parsed from `value` when the core read the wire bytes)."""
        if self.event is not None:
            return self.event
        assert self.value is not None, "a ValidEvent holds its event or its value"
        event: dict[str, Any] = loads_json(self.value.decode("utf-8"), self.value)
        return event


class _Waiter:
    """One request: its receipts, filled as acks arrive; `on_done` fires once."""

    __slots__ = ("results", "remaining", "error", "on_done")

    def __init__(self, size: int, on_done: Callable[[list[Receipt] | IntakeError], None]) -> None:
        self.results: list[Receipt | None] = [None] * size
        self.remaining = size
        self.error: IntakeError | None = None
        self.on_done = on_done


class _Delivery:
    """One event sent and not yet acknowledged, and the requests waiting for it."""

    __slots__ = ("intake", "key", "digest", "waiters")

    def __init__(self, intake: EventIntake, key: tuple[str, str], digest: str) -> None:
        self.intake = intake
        self.key = key
        self.digest = digest  # the verification_hash its receipt will carry
        self.waiters: list[tuple[_Waiter, int]] = []

    def acked(self, error: Any, message: Any) -> None:  # the sink's delivery thread
        self.intake._settle(self, error, message)


class EventIntake:
    """Validates, hashes and sends events; thread-safe; see the module docstring."""

    def __init__(
        self,
        keys: SubjectKeySource,
        sink: AckSink,
        *,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        recent_capacity: int = DEFAULT_RECENT_CAPACITY,
        retry_after_ms: int = DEFAULT_RETRY_AFTER_MS,
        retention: RetentionPolicy | None = None,
        core: Any = None,
    ) -> None:
        self.keys = keys
        # The compiled event core (schemas/native.py `event_core`), or None for the Python reference.
        self.core = core
        # Must be the ingest job's policy: the retention stamp is part of the hashed bytes.
        self.retention = retention or load_policy()
        self.sink = sink
        self.max_in_flight = max_in_flight
        self.recent_capacity = recent_capacity
        self.retry_after_ms = retry_after_ms
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], _Delivery] = {}
        self._recent: OrderedDict[tuple[str, str], Receipt] = OrderedDict()
        self._in_flight = 0
        self.sent = 0
        self.duplicates = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def validate(self, events: Iterable[dict[str, Any]]) -> list[ValidEvent]:
        """Validates and normalises every event; the first bad one raises InvalidEvent."""
        valid = []
        for index, event in enumerate(events):
            if self.core is not None:
                value = encode_event(event)
                parsed = self.core.parse(value)
                if parsed is not None:
                    valid.append(ValidEvent(index, event, value, parsed))
                    continue
            try:
                valid.append(ValidEvent(index, validate_event(event)))
            except EventValidationError as exc:
                raise InvalidEvent(index, exc) from None
        return valid

    def read_request(self, raw: bytes, batch: bool = True) -> list[ValidEvent] | None:
        """A request's events from its wire bytes, read by the compiled core in one call.

        The bytes are a `RecordEventsRequest`, or one `RecordEventRequest` when not `batch`.
        None when there is no compiled core or it refers the request (anything it cannot prove it
        reads as `event_from_request`, `encode_event` and `core.parse` do): the caller then takes
        the Python path, which names what is wrong. Events read here passed the schema and carry
        no reserved name (the core refers those).
        """
        if self.core is None:
            return None
        events = self.core.request_events(raw, batch)
        if events is None:
            return None
        return [ValidEvent(index, None, value, parsed) for index, (value, parsed) in enumerate(events)]

    def submit(self, events: Sequence[ValidEvent], on_done: Callable[[list[Receipt] | IntakeError], None]) -> None:
        """Sends what needs sending; `on_done` gets the receipts in request order, or the error.

        Raises (before anything is sent, and without calling `on_done`):
            InvalidEvent: an event's canonical entry would exceed 65,535 bytes (docs/design.md §13).
            EventConflict: an event id already recorded or in flight with other content.
            Backpressure: over `max_in_flight`.
        An erased actor's events are logged as the job logs them: PII marked erased, no key made.
        """
        prepared = []
        for valid in events:
            made = native_entry(self.core, self.keys, self.retention, valid.parsed) if valid.parsed else None
            if made is not None and valid.value is not None:
                key, value, digest = (valid.parsed.tenant_id, valid.parsed.event_id), valid.value, made[1].hex()
            else:
                try:
                    # A record the core parsed but would not make an entry of: the reference names why.
                    event = valid.as_dict() if valid.parsed is None else validate_event(valid.as_dict())
                    try:
                        keys: SubjectKeys | None = self.keys.get_or_create(event["tenant_id"], pii_subject(event))
                    except SubjectErased:
                        keys = None
                    digest = verification_hash(event, keys, self.retention).hex()
                except EventValidationError as exc:  # e.g. an entry too large to log (docs/design.md §13)
                    raise InvalidEvent(valid.index, exc) from None
                value = encode_event(event)
                key = (event["tenant_id"], event["event_id"])
            prepared.append((valid.index, key, digest, value))
        waiter = _Waiter(len(prepared), on_done)
        to_send: list[tuple[_Delivery, bytes]] = []
        done: list[Receipt] | None = None
        recent, pending = self._recent, self._pending
        with self._lock:
            fresh: dict[tuple[str, str], str] = {}  # the request's new keys and their digests
            for _, key, digest, _ in prepared:
                receipt = recent.get(key)
                delivery = pending.get(key) if receipt is None else None
                if receipt is not None:
                    known = receipt.verification_hash
                elif delivery is not None:
                    known = delivery.digest
                else:
                    known = fresh.setdefault(key, digest)  # an id twice in one request: the first counts
                if known != digest:
                    raise EventConflict(
                        f"event {key[1]} of tenant {key[0]} was already recorded with other content "
                        f"(verification_hash {known}); the log keeps the first, so give "
                        "a changed event a new event_id"
                    )
            new = len(fresh)
            if new and self._in_flight and self._in_flight + new > self.max_in_flight:
                raise Backpressure(self._in_flight, new, self.max_in_flight, self.retry_after_ms)
            for slot, (_, key, digest, value) in enumerate(prepared):
                receipt = recent.get(key)
                if receipt is not None:
                    recent.move_to_end(key)
                    waiter.results[slot] = Receipt(
                        receipt.event_id, LANE, receipt.verification_hash, receipt.partition, receipt.offset, True
                    )
                    waiter.remaining -= 1
                    self.duplicates += 1
                    continue
                delivery = pending.get(key)
                if delivery is None:
                    delivery = _Delivery(self, key, digest)
                    pending[key] = delivery
                    self._in_flight += 1
                    to_send.append((delivery, value))
                delivery.waiters.append((waiter, slot))
            if waiter.remaining == 0:
                done = [r for r in waiter.results if r is not None]
        if done is not None:
            on_done(done)
        for number, (delivery, value) in enumerate(to_send):
            try:
                self.sink.produce(delivery.key[0].encode(), value, delivery.acked)
            except BufferError:
                # The producer's own queue is full (sized above max_in_flight, so rare): fail the rest.
                error = Backpressure(self._in_flight, len(to_send) - number, self.max_in_flight, self.retry_after_ms)
                for unsent, _ in to_send[number:]:
                    self._settle(unsent, error, None)
                return
        self.sent += len(to_send)

    def _settle(self, delivery: _Delivery, error: Any, message: Any) -> None:
        finished: list[_Waiter] = []
        with self._lock:
            self._pending.pop(delivery.key, None)
            self._in_flight -= 1
            if error is None:
                receipt = Receipt(delivery.key[1], LANE, delivery.digest, message.partition(), message.offset())
                self._recent[delivery.key] = receipt
                if len(self._recent) > self.recent_capacity:
                    self._recent.popitem(last=False)
            else:
                failure = (
                    error
                    if isinstance(error, IntakeError)
                    else DeliveryFailed(
                        f"Kafka did not acknowledge event {delivery.key[1]} of tenant {delivery.key[0]}: {error}; "
                        "nothing from this request is known to be durable, retry it (repeats are idempotent)"
                    )
                )
            for waiter, slot in delivery.waiters:
                if waiter.remaining <= 0:
                    continue
                if error is None:
                    waiter.results[slot] = receipt
                    waiter.remaining -= 1
                    if waiter.remaining == 0:
                        finished.append(waiter)
                else:
                    waiter.remaining = 0
                    waiter.error = failure
                    finished.append(waiter)
        for waiter in finished:
            try:
                waiter.on_done(waiter.error or [r for r in waiter.results if r is not None])
            except Exception:  # noqa: BLE001 - a broken callback must not kill the delivery thread
                log.exception("gateway: a request's completion callback failed")

    def close(self, timeout_s: float = 30.0) -> int:
        """Waits for outstanding acks (up to `timeout_s`); returns how many are still unacknowledged."""
        return self.sink.close(timeout_s)


class _MemoryMessage:
    __slots__ = ("_partition", "_offset")

    def __init__(self, partition: int, offset: int) -> None:
        self._partition = partition
        self._offset = offset

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


class MemoryAckSink:
    """An AckSink in memory, for tests: records (key, value); acks at once or on `release()`.

    With `hold=True`, deliveries wait until `release(error=...)` acks (or fails) them all, which
    lets tests look at in-flight states and backpressure.
    """

    needs_polling = False

    def __init__(self, partitions: int = 4, hold: bool = False) -> None:
        self.partitions = partitions
        self.hold = hold
        self.records: list[tuple[bytes, bytes]] = []
        self._held: list[tuple[DeliveryCallback, int]] = []
        self._lock = threading.Lock()

    def produce(self, key: bytes, value: bytes, on_delivery: DeliveryCallback) -> None:
        with self._lock:
            self.records.append((key, value))
            offset = len(self.records) - 1
        partition = sum(key) % self.partitions
        if self.hold:
            with self._lock:
                self._held.append((on_delivery, offset))
        else:
            on_delivery(None, _MemoryMessage(partition, offset))

    def poll(self, timeout_s: float = 0.0) -> int:
        return 0

    def release(self, error: Any = None) -> int:
        with self._lock:
            held, self._held = self._held, []
        for on_delivery, offset in held:
            on_delivery(error, _MemoryMessage(0, offset))
        return len(held)

    def close(self, timeout_s: float = 30.0) -> int:
        return len(self._held)
