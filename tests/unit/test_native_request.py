"""The compiled core's reading of a RecordEventsRequest (transforms/native/src/proto.rs) against the Python path.

For every request the core reads, each event's Kafka value is byte for byte what
`encode_event(event_from_request(message))` makes of the message protobuf decodes, and its parsed
event is what `core.parse` makes of that value; a request it refers, the Python path reads (or
refuses, naming why). Checked on generated requests (every field, both time forms, Unicode and
control characters, metadata formatted every way json.dumps can), on requests made hostile
(duplicated fields, flipped bytes, unknown fields, random bytes), and through the gateway itself.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.gateway import audit_pb2
from api.gateway.convert import event_from_request
from api.gateway.intake import EventIntake, MemoryAckSink
from api.gateway.server import GatewayCore, Rejection
from api.sdk.events import Receipt, encode_event
from pipelines.io.keystore import InMemoryKeyStore
from schemas.events import EventValidationError
from schemas.native import event_core
from schemas.samples import EventGenerator
from tests.unit.test_native_core import METADATA, PRINTED, TEXT, TIMES

CORE = event_core("native")  # fails here, naming why, when `make native` has not built it
request_values = __import__("auditlog_native").request_values


def python_values(raw: bytes, batch: bool = True) -> list[bytes] | None:
    """The Python path's Kafka values of a request (a RecordEventRequest if not `batch`), or None if refused."""
    try:
        if batch:
            messages = list(audit_pb2.RecordEventsRequest.FromString(raw).events)
        else:
            messages = [audit_pb2.RecordEventRequest.FromString(raw)]
        return [encode_event(event_from_request(m)) for m in messages]
    except (DecodeError, EventValidationError):
        return None


def check(raw: bytes) -> bool:
    """Asserts the compiled reading is the Python one, or refers; True if the core read the request."""
    values = request_values(raw)
    if values is not None:
        assert values == python_values(raw)
    events = CORE.request_events(raw)
    if events is None:
        return False
    assert values is not None and [v for v, _ in events] == values
    for value, parsed in events:
        alone = CORE.parse(value)
        assert alone is not None
        fields = ("tenant_id", "event_id", "subject", "action", "occurred_at")
        assert [getattr(parsed, f) for f in fields] == [getattr(alone, f) for f in fields]
        stamp = ("standard", "2030-01-01T00:00:00.000Z")
        keys = (b"e" * 32, b"m" * 32, "k1")
        assert CORE.entry(parsed, keys, *stamp) == CORE.entry(alone, keys, *stamp)
    return True


OPTIONAL = st.sampled_from(["", "", "x"]) | PRINTED | TEXT
ASCII_ID = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,20}", fullmatch=True)
RESERVED = st.sampled_from(["audit_log.search", "AUDIT_LOG.x", " Audit_Log.read"])


def either(valid: bool, good: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return good if valid else good | other


@st.composite
def messages(draw: st.DrawFn, valid: bool = False) -> audit_pb2.RecordEventRequest:
    """Requests' events; with `valid`, from values the schema takes (so the core reads most of them)."""
    message = audit_pb2.RecordEventRequest(
        event_id=draw(either(valid, ASCII_ID, st.just("") | TEXT)),
        tenant_id=draw(either(valid, st.sampled_from(["t_1", "acme.eu-1"]), TEXT)),
        action=draw(either(valid, st.sampled_from(["user.login", "billing.plan"]), RESERVED | TEXT)),
        result=draw(either(valid, st.sampled_from(["SUCCESS", "FAILURE"]), st.just("maybe"))),
        client_ip=draw(either(valid, st.sampled_from(["", "10.0.0.1", "::1"]), TEXT)),
        user_agent=draw(either(valid, PRINTED, OPTIONAL)),
        request_id=draw(either(valid, PRINTED, OPTIONAL)),
    )
    if valid or draw(st.booleans()):
        ids = st.sampled_from(["u_1", "u 2", "svc:batch"])
        message.actor.id = draw(either(valid, ids, st.sampled_from(["apikey:a", "ü_3"]) | TEXT))
        message.actor.type = draw(either(valid, st.sampled_from(["USER", "SYSTEM"]), st.just("robot")))
        message.actor.email = draw(st.sampled_from(["", "a@example.com", " Mixed.Case@Example.COM", "ü@ex.de"]))
        message.actor.name = draw(either(valid, PRINTED, OPTIONAL))
    if valid or draw(st.booleans()):
        message.resource.id = draw(either(valid, st.sampled_from(["r_1", "doc 2"]), st.just("") | TEXT))
        message.resource.type = draw(st.sampled_from(["DOCUMENT", "ROLE"]))
    which = draw(st.sampled_from(["text", "millis"] if valid else ["text", "millis", "millis-far", "none"]))
    if which == "text":
        message.occurred_at = draw(either(valid, TIMES, TEXT))
    elif which == "millis":
        message.occurred_at_timestamp = draw(st.integers(-62_135_596_800_000, 253_402_300_799_999))
    elif which == "millis-far":
        message.occurred_at_timestamp = draw(st.integers(-(2**63), 2**63 - 1))
    values = METADATA if valid else METADATA | st.floats(allow_nan=False)
    metadata = draw(st.none() | st.dictionaries(TEXT, values, max_size=4) | either(valid, st.nothing(), METADATA))
    if metadata is not None:
        message.metadata_json = json.dumps(
            metadata,
            ensure_ascii=draw(st.booleans()),
            indent=draw(st.sampled_from([None, 2, "\t"])),
            separators=draw(st.sampled_from([None, (",", ":"), (" ,", " : ")])),
        )
    elif not valid and draw(st.booleans()):
        message.metadata_json = draw(st.sampled_from(["{", "[]", '{"a":1,"a":2}', '{"n":1e3}', "{} "]) | TEXT)
    return message


def request_bytes(events: list[audit_pb2.RecordEventRequest]) -> bytes:
    return audit_pb2.RecordEventsRequest(events=events).SerializeToString()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages(), min_size=1, max_size=4))
def test_generated_requests_read_the_same_or_are_referred(events: list[audit_pb2.RecordEventRequest]) -> None:
    check(request_bytes(events))


READ = {"all": 0, "read": 0}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages(valid=True), min_size=1, max_size=2))
def test_generated_valid_requests_read_the_same(events: list[audit_pb2.RecordEventRequest]) -> None:
    READ["all"] += 1
    READ["read"] += check(request_bytes(events))


def test_generated_valid_requests_mostly_take_the_compiled_path() -> None:
    if READ["all"] < 100:
        pytest.skip("runs after test_generated_valid_requests_read_the_same")
    assert READ["read"] > READ["all"] // 4, READ  # the rest: times or Unicode the core refers by design


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(messages(), min_size=1, max_size=2),
    st.lists(st.tuples(st.integers(0, 5_000), st.integers(0, 255)), max_size=3),
    st.binary(max_size=12),
    st.booleans(),
)
def test_hostile_requests_read_the_same_or_are_referred(
    events: list[audit_pb2.RecordEventRequest], flips: list[tuple[int, int]], tail: bytes, twice: bool
) -> None:
    data = bytearray(request_bytes(events))
    if twice:  # a message's fields repeated: protobuf merges, the core refers
        first = events[0].SerializeToString()
        data += b"\x0a" + bytes([len(first)]) + first if len(first) < 128 else b""
    for at, byte in flips:
        if data:
            data[at % len(data)] = byte
    check(bytes(data) + tail)


@settings(max_examples=1000)
@given(st.binary(max_size=300))
def test_random_bytes_read_the_same_or_are_referred(raw: bytes) -> None:
    check(raw)
    one = request_values(raw, False)  # the same bytes as one RecordEventRequest
    assert one is None or one == python_values(raw, False)


def test_fields_set_twice_unknown_fields_and_groups() -> None:
    message = audit_pb2.RecordEventRequest(
        event_id="e-1", tenant_id="t_1", action="user.login", result="SUCCESS", occurred_at="2026-01-02T03:04:05Z"
    )
    message.actor.id, message.actor.type = "u_1", "USER"
    message.resource.id, message.resource.type = "r_1", "DOCUMENT"
    one = message.SerializeToString()
    raw = b"\x0a" + bytes([len(one)]) + one
    assert check(raw)
    assert request_values(raw + b"\xa8\x06\x01") is not None  # unknown field 101 of the request: ignored
    inner_unknown = one + b"\xa8\x06\x07"  # unknown field 101 inside the event
    assert request_values(b"\x0a" + bytes([len(inner_unknown)]) + inner_unknown) == python_values(raw)
    twice = one + b"\x0a\x03t_2"  # tenant_id again: protobuf keeps the last, the core refers
    assert request_values(b"\x0a" + bytes([len(twice)]) + twice) is None
    both = one + b"\x50\x01"  # occurred_at_timestamp as well as occurred_at
    assert request_values(b"\x0a" + bytes([len(both)]) + both) is None
    long_tag = b"\x8a\x80\x80\x80\x80\x00"  # field 1 as a 6-byte tag: protobuf refuses it
    assert python_values(long_tag + bytes([len(one)]) + one) is None
    assert request_values(long_tag + bytes([len(one)]) + one) is None
    inner_long = one + b"\xa0\x81\x80\x80\x80\x80\x00\x01"  # an unknown field with a 6-byte tag
    assert request_values(b"\x0a" + bytes([len(inner_long)]) + inner_long) is None
    group = one + b"\xab\x06\xac\x06"  # a group (wire types 3 and 4)
    assert request_values(b"\x0a" + bytes([len(group)]) + group) is None


def test_unix_milliseconds_at_the_ends_of_the_range() -> None:
    for millis in (-62_135_596_800_000, -1, 0, 1, 951_782_400_000, 253_402_300_799_999):
        message = audit_pb2.RecordEventRequest(event_id="e", tenant_id="t", occurred_at_timestamp=millis)
        assert check(request_bytes([message])) is False  # the schema refers it (no actor), values checked
        assert request_values(request_bytes([message])) is not None
    for millis in (-62_135_596_800_001, 253_402_300_800_000):
        message = audit_pb2.RecordEventRequest(event_id="e", tenant_id="t", occurred_at_timestamp=millis)
        assert request_values(request_bytes([message])) is None


def test_generated_sample_requests_take_the_compiled_path() -> None:
    from api.gateway.convert import request_from_event

    gen = EventGenerator(seed=3, tenants=5)
    requests = [request_bytes([request_from_event(gen.event()) for _ in range(50)]) for _ in range(20)]
    assert sum(check(raw) for raw in requests) == len(requests)


# --------------------------------------------------------------------------- through the gateway


def start_batch(core: GatewayCore, raw: bytes, batch: bool = True) -> Any:
    box: list[Any] = []
    core.start_wire(raw, None, batch, box.append)
    return box[0]


def test_the_gateway_sends_and_answers_the_same_either_way() -> None:
    """Wire bytes read by the core, the messages read by protobuf, and the Python reference alone."""
    from api.gateway.convert import request_from_event

    gen = EventGenerator(seed=5, tenants=2)
    events = [gen.event() for _ in range(30)]
    messages = [request_from_event(e) for e in events]
    raw = request_bytes(messages)
    sinks, receipts = [], []
    for core, wire in ((CORE, True), (CORE, False), (None, True)):
        sink = MemoryAckSink()
        gateway = GatewayCore(EventIntake(InMemoryKeyStore(key_seed=b"k" * 32), sink, core=core), None)
        if wire:
            receipts.append(start_batch(gateway, raw))
        else:
            box: list[Any] = []
            gateway.start(messages, None, True, box.append)
            receipts.append(box[0])
        sinks.append(sink.records)
    assert sinks[0] == sinks[1]  # the Python reference sends the event normalised: same leaf, other bytes
    assert receipts[0] == receipts[1] == receipts[2]
    assert [r.event_id for r in receipts[0]] == [e["event_id"] for e in events]


def test_the_gateway_refuses_what_the_compiled_path_refers_naming_the_field() -> None:
    gateway = GatewayCore(EventIntake(InMemoryKeyStore(), MemoryAckSink(), core=CORE), None)
    good = audit_pb2.RecordEventRequest(
        event_id="e-1", tenant_id="t_1", action="user.login", result="SUCCESS", occurred_at="2026-01-02T03:04:05Z"
    )
    good.actor.id, good.actor.type = "u_1", "USER"
    good.resource.id, good.resource.type = "r_1", "DOCUMENT"
    reserved = audit_pb2.RecordEventRequest()
    reserved.CopyFrom(good)
    reserved.event_id, reserved.action = "e-2", "Audit_Log.search"
    with pytest.raises(Rejection) as refused:
        start_batch(gateway, request_bytes([good, reserved]))
    assert refused.value.details.startswith("events[1].action:") and "reserved" in refused.value.details
    bad_meta = audit_pb2.RecordEventRequest()
    bad_meta.CopyFrom(good)
    bad_meta.metadata_json = "[1, 2]"
    with pytest.raises(Rejection) as refused:
        start_batch(gateway, request_bytes([bad_meta]))
    assert refused.value.details.startswith("events[0].metadata_json:")
    with pytest.raises(Rejection) as refused:
        start_batch(gateway, b"\x0a\xff\xff\xff\xff\x0f")
    assert refused.value.code.name == "INVALID_ARGUMENT" and "not a RecordEventsRequest" in refused.value.details
    with pytest.raises(Rejection) as refused:
        start_batch(gateway, b"")
    assert "holds no event" in refused.value.details


RECEIPTS = st.lists(
    st.builds(
        Receipt,
        event_id=st.just("") | TEXT,
        lane=st.just("gateway"),
        verification_hash=st.just("") | st.binary(min_size=32, max_size=32).map(bytes.hex),
        partition=st.integers(-(2**31), 2**31 - 1),
        offset=st.integers(-(2**63), 2**63 - 1),
        duplicate=st.booleans(),
    ),
    max_size=20,
)


@given(RECEIPTS)
def test_the_compiled_response_is_protobufs(receipts: list[Receipt]) -> None:
    from api.gateway.convert import response_from_receipt

    expected = audit_pb2.RecordEventsResponse(results=[response_from_receipt(r) for r in receipts])
    assert CORE.encode_receipts(receipts) == expected.SerializeToString()
    for receipt in receipts:
        assert CORE.encode_receipt(receipt) == response_from_receipt(receipt).SerializeToString()


def test_field_numbers_beyond_protobufs_range_are_referred() -> None:
    assert python_values(b"\x80\x80\x80\x80\x10\x00") is None  # field 2**29: protobuf refuses it
    assert request_values(b"\x80\x80\x80\x80\x10\x00") is None
    assert request_values(b"\xf8\xff\xff\xff\x0f\x00") == python_values(b"\xf8\xff\xff\xff\x0f\x00") == []


def test_one_event_reads_as_a_request_of_one() -> None:
    """RecordEvent's bytes read as one event, as a RecordEventsRequest holding it reads."""
    from api.gateway.convert import request_from_event

    event = EventGenerator(seed=9).event()
    message = request_from_event(event)
    big = audit_pb2.RecordEventRequest()
    big.CopyFrom(message)
    big.metadata_json = json.dumps({"pad": "x" * 300})  # a length of two varint bytes
    for one in (message, big):
        alone = request_values(one.SerializeToString(), False)
        assert alone is not None and alone == request_values(request_bytes([one])) == python_values(
            request_bytes([one])
        )
        read = CORE.request_events(one.SerializeToString(), False)
        assert read is not None and [v for v, _ in read] == alone
    assert request_values(b"\xff", False) is None
    answers = []
    for core in (CORE, None):
        sink = MemoryAckSink()
        gateway = GatewayCore(EventIntake(InMemoryKeyStore(key_seed=b"k" * 32), sink, core=core), None)
        answers.append(start_batch(gateway, message.SerializeToString(), batch=False))
    assert answers[0] == answers[1] and answers[0][0].event_id == event["event_id"]
    gateway = GatewayCore(EventIntake(InMemoryKeyStore(), MemoryAckSink(), core=CORE), None)
    with pytest.raises(Rejection) as refused:
        start_batch(gateway, b"\xff", batch=False)
    assert "not a RecordEventRequest" in refused.value.details


def test_an_event_over_the_metadata_cap_is_refused_naming_the_limit() -> None:
    """Metadata over its cap (49,152 bytes, which keeps every entry within a bundle's 65,535)."""
    from api.gateway.convert import request_from_event

    event = EventGenerator(seed=7).event()
    event["metadata"] = {"note": "x" * 49_200}
    raw = request_bytes([request_from_event(EventGenerator(seed=8).event()), request_from_event(event)])
    sink = MemoryAckSink()
    gateway = GatewayCore(EventIntake(InMemoryKeyStore(), sink, core=CORE), None)
    with pytest.raises(Rejection) as refused:
        start_batch(gateway, raw)
    assert refused.value.code.name == "INVALID_ARGUMENT"
    assert refused.value.details.startswith("events[1].") and "larger than 49152 bytes" in refused.value.details
    assert sink.records == []  # nothing of the request was sent
