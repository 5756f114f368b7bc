"""The gateway without Kafka: the leaf it returns is the log's, status codes, keys, idempotency, backpressure.

The servers run in-process on a loopback port with `MemoryAckSink` in place of Kafka; every test
that talks gRPC runs against both the grpc.aio and the thread-pool server.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from api.gateway import audit_pb2, audit_pb2_grpc
from api.gateway.convert import event_from_request, request_from_event
from api.gateway.intake import EventIntake, MemoryAckSink
from api.gateway.server import GatewayCore, _server_options, add_servicer
from api.keys import ApiKeyStore, AuthenticationError, PermissionDeniedError
from api.sdk.events import encode_event, verification_hash, wire_event
from api.sdk.gateway_client import GatewayClient, GatewayError
from pipelines.ingest_core import IngestOptions, LogCursor, LogSequencer, MemoryDedupe, SourceRecord
from pipelines.io.keystore import InMemoryKeyStore
from schemas.events import EventValidationError
from schemas.native import event_core
from schemas.retention import load_policy
from schemas.samples import EventGenerator
from transforms.blocks import decode_block_object
from transforms.merkle import leaf_hash
from transforms.note import Signer

SIGNER = Signer.generate("auditlog.test")


def sample_events(n: int, seed: int = 7, tenants: int = 3) -> list[dict[str, Any]]:
    gen = EventGenerator(seed=seed, tenants=tenants)
    return [gen.event() for _ in range(n)]


def log_leaves(records: list[tuple[bytes, bytes]], keys: Any) -> dict[str, str]:
    """Runs the ingest job's LogSequencer over Kafka records; returns event_id -> hex leaf hash.

    With the Python reference: a receipt from the compiled core must be the leaf either core makes.
    """
    options = IngestOptions(topic="audit.events", origin_prefix="auditlog.test", block_size=10_000, core="python")
    sequencer = LogSequencer(options, keys, SIGNER)
    cursor, dedupe = LogCursor(options.log_id(0)), MemoryDedupe()
    for offset, (key, value) in enumerate(records):
        assert sequencer.step(cursor, dedupe, SourceRecord(0, offset, 0, key, value)) == []
    block = sequencer.seal(cursor)
    assert block is not None
    _, entries = decode_block_object(block.block_object)
    return {json.loads(e)["event_id"]: leaf_hash(e).hex() for e in entries}


# --------------------------------------------------------------------------- the core, no gRPC


def submit(intake: EventIntake, events: list[dict[str, Any]]) -> Any:
    box: list[Any] = []
    done = threading.Event()
    intake.submit(intake.validate(events), lambda r: (box.append(r), done.set()))
    assert done.wait(5)
    return box[0]


CORES = [None, event_core("native")]  # the Python reference, and the compiled core (`make native` builds it)


@pytest.mark.parametrize("core", CORES, ids=["python", "native"])
def test_verification_hash_is_the_leaf_the_ingest_job_stores(core: Any) -> None:
    keys = InMemoryKeyStore()
    sink = MemoryAckSink()
    intake = EventIntake(keys, sink, core=core)
    events = sample_events(300)

    receipts = submit(intake, events)

    assert len(sink.records) == 300
    leaves = log_leaves(sink.records, keys)
    assert {r.event_id: r.verification_hash for r in receipts} == leaves
    assert all(r.partition >= 0 and r.offset >= 0 and not r.duplicate for r in receipts)


@pytest.mark.parametrize("core", CORES, ids=["python", "native"])
def test_events_with_every_optional_field_and_unicode_hash_the_same_as_the_job(core: Any) -> None:
    keys = InMemoryKeyStore()
    sink = MemoryAckSink()
    event = {
        "event_id": "evt-ü-1".replace("ü", "u"),
        "tenant_id": "t_9823",
        "actor": {"id": "u_2913", "type": "USER", "email": "Zoë@example.org", "name": "Zoë Ångström"},
        "action": "ROLE_UPGRADE",
        "resource": {"id": "res_admin_role", "type": "ROLE"},
        "result": "SUCCESS",
        "client_ip": "2001:db8::1",
        "user_agent": "Mozilla/5.0 ☃",
        "request_id": "req-1",
        "metadata": {"reason": "on-call 🚨", "n": 1.5, "nested": {"b": [1, 2, {"z": None}], "a": True}},
        "occurred_at": "2026-05-22T19:44:00.123456+02:00",
    }
    (receipt,) = submit(EventIntake(keys, sink, core=core), [event])
    assert log_leaves(sink.records, keys) == {event["event_id"]: receipt.verification_hash}
    if core is None:  # the reference sends the normalised event (the core refers this one to it too)
        assert json.loads(sink.records[0][1])["occurred_at"] == "2026-05-22T17:44:00.123Z"


def test_the_compiled_core_takes_ordinary_events_and_sends_them_as_they_came() -> None:
    sink = MemoryAckSink()
    events = sample_events(200)
    submit(EventIntake(InMemoryKeyStore(), sink, core=CORES[1]), events)
    # The request's JSON goes to Kafka as it is (the job reads it to the leaf the receipt names,
    # test_verification_hash_is_the_leaf_the_ingest_job_stores): most events take that path.
    as_sent = sum(value == encode_event(event) for (_, value), event in zip(sink.records, events, strict=True))
    assert as_sent >= 150


def test_a_repeat_is_answered_from_memory_and_not_sent_again() -> None:
    sink = MemoryAckSink()
    intake = EventIntake(InMemoryKeyStore(), sink)
    event = sample_events(1)[0]
    (first,) = submit(intake, [event])
    (again,) = submit(intake, [dict(event)])
    assert again.duplicate and not first.duplicate
    assert again.verification_hash == first.verification_hash and again.offset == first.offset
    assert len(sink.records) == 1


def test_a_repeat_while_the_first_is_in_flight_waits_for_its_ack() -> None:
    sink = MemoryAckSink(hold=True)
    intake = EventIntake(InMemoryKeyStore(), sink)
    event = sample_events(1)[0]
    results: list[Any] = []
    for _ in range(2):
        intake.submit(intake.validate([event]), results.append)
    assert results == [] and len(sink.records) == 1 and intake.in_flight == 1
    sink.release()
    assert len(results) == 2 and results[0][0].verification_hash == results[1][0].verification_hash
    assert intake.in_flight == 0


def test_a_batch_repeating_an_event_sends_it_once() -> None:
    sink = MemoryAckSink()
    event = sample_events(1)[0]
    receipts = submit(EventIntake(InMemoryKeyStore(), sink), [event, dict(event)])
    assert len(receipts) == 2 and receipts[0].verification_hash == receipts[1].verification_hash
    assert len(sink.records) == 1


def test_a_batch_repeating_an_event_id_with_other_content_is_refused_whole() -> None:
    from api.gateway.intake import EventConflict

    sink = MemoryAckSink()
    event = sample_events(1)[0]
    changed = dict(event, action="document.delete")
    intake = EventIntake(InMemoryKeyStore(), sink)
    with pytest.raises(EventConflict, match=f"event {event['event_id']} of tenant"):
        intake.submit(intake.validate([event, changed]), lambda r: None)
    assert sink.records == [] and intake.in_flight == 0


# --------------------------------------------------------------------------- gRPC servers in-process


class Running:
    def __init__(self, port: int, sink: MemoryAckSink, keys: InMemoryKeyStore, apikeys: ApiKeyStore) -> None:
        self.port = port
        self.sink = sink
        self.keys = keys
        self.apikeys = apikeys
        self.tenant_key = apikeys.create(tenant_id="t_1000", scopes=("write",))[1]
        self.admin_key = apikeys.create(admin=True)[1]

    def client(self, key: str | None = "tenant", retries: int = 0) -> GatewayClient:
        token = {"tenant": self.tenant_key, "admin": self.admin_key}.get(key or "", key)
        return GatewayClient(f"127.0.0.1:{self.port}", token, retries=retries, timeout_s=10)

    def stub(self) -> audit_pb2_grpc.AuditLogServiceStub:
        return audit_pb2_grpc.AuditLogServiceStub(grpc.insecure_channel(f"127.0.0.1:{self.port}"))


@pytest.fixture
def hold() -> bool:
    """Whether Kafka acks wait for `sink.release()`; tests parametrize it to True."""
    return False


class PollingSink(MemoryAckSink):
    """Like KafkaAckSink without its thread: acks arrive only when the owner polls."""

    needs_polling = True

    def __init__(self) -> None:
        super().__init__(hold=True)
        self.polls = 0

    def poll(self, timeout_s: float = 0.0) -> int:
        self.polls += 1
        return self.release()


@pytest.fixture(params=["aio", "threads", "aio-polling"])
def gateway(request: pytest.FixtureRequest, tmp_path: Path, hold: bool) -> Iterator[Running]:
    kind = request.param
    if kind == "aio-polling" and hold:
        pytest.skip("acks are released by polling here, not by the test")
    max_in_flight = 3 if hold else 50_000
    sink = PollingSink() if kind == "aio-polling" else MemoryAckSink(hold=hold)
    keys = InMemoryKeyStore()
    apikeys = ApiKeyStore(tmp_path / "apikeys.sqlite")
    # The compiled core reads RecordEvents' wire bytes on aio and threads; aio-polling runs the Python path.
    compiled = None if kind == "aio-polling" else event_core("native")
    core = GatewayCore(EventIntake(keys, sink, max_in_flight=max_in_flight, core=compiled), apikeys.authenticate)
    if kind == "threads":
        server = grpc.server(ThreadPoolExecutor(max_workers=16), options=_server_options(False))
        add_servicer(server, core, "threads")
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        try:
            yield Running(port, sink, keys, apikeys)
        finally:
            sink.release()
            server.stop(0).wait()
        return
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, Any] = {}

    async def main() -> None:
        server = grpc.aio.server(options=_server_options(False))
        add_servicer(server, core, "aio")  # both aio kinds
        holder["port"] = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        holder["stop"] = asyncio.Event()
        started.set()
        await holder["stop"].wait()
        await server.stop(0)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield Running(holder["port"], sink, keys, apikeys)
    finally:
        sink.release()
        loop.call_soon_threadsafe(holder["stop"].set)
        thread.join(10)
        loop.close()


def test_record_event_over_grpc_returns_the_leaf_the_log_stores(gateway: Running) -> None:
    events = [e for e in sample_events(40, tenants=1)]
    with gateway.client() as client:
        one = client.record(events[0])
        many = client.record_many(events[1:])
    leaves = log_leaves(gateway.sink.records, gateway.keys)
    assert {r.event_id: r.verification_hash for r in [one, *many]} == leaves
    assert [r.event_id for r in many] == [e["event_id"] for e in events[1:]]


def test_the_sdk_generates_an_event_id_and_time_when_missing(gateway: Running) -> None:
    event = sample_events(1, tenants=1)[0]
    del event["event_id"], event["occurred_at"]
    with gateway.client() as client:
        receipt = client.record(event)
    sent = json.loads(gateway.sink.records[0][1])
    assert sent["event_id"] == receipt.event_id and len(receipt.event_id) == 36
    assert sent["occurred_at"].endswith("Z")


def _request(**changes: Any) -> audit_pb2.RecordEventRequest:
    event = wire_event(sample_events(1, tenants=1)[0])
    request = request_from_event(event)
    for name, value in changes.items():
        target = request
        *parents, last = name.split(".")
        for part in parents:
            target = getattr(target, part)
        setattr(target, last, value)
    return request


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"event_id": ""}, "event_id", "event_id"),
        ({"actor.type": "ROBOT"}, "actor.type", "ROBOT"),
        ({"actor.email": "not-an-email"}, "actor.email", "not-an-email"),
        ({"occurred_at": "2026-13-01T00:00:00Z"}, "occurred_at", "not a valid ISO-8601 time"),
        ({"metadata_json": "[1, 2]"}, "metadata_json", "not a JSON object"),
        ({"metadata_json": "{oops"}, "metadata_json", "not JSON"),
        ({"result": "MAYBE"}, "result", "MAYBE"),
        ({"client_ip": "nope"}, "client_ip", "nope"),
    ],
)
def test_invalid_argument_names_the_field(gateway: Running, change: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        gateway.stub().RecordEvent(_request(**change), metadata=(("authorization", f"Bearer {gateway.tenant_key}"),))
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(f"{field}: ") and words in error.details()
    assert ("auditlog-field", field) in error.trailing_metadata()
    assert gateway.sink.records == []


def test_a_batch_is_all_or_nothing_and_names_the_event(gateway: Running) -> None:
    good = [request_from_event(wire_event(e)) for e in sample_events(3, tenants=1)]
    request = audit_pb2.RecordEventsRequest(events=[*good[:2], _request(**{"actor.type": "ROBOT"}), good[2]])
    with pytest.raises(grpc.RpcError) as caught:
        gateway.stub().RecordEvents(request, metadata=(("authorization", f"Bearer {gateway.tenant_key}"),))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("auditlog-field", "events[2].actor.type") in caught.value.trailing_metadata()
    assert gateway.sink.records == []


def test_missing_time_and_millis_time(gateway: Running) -> None:
    request = _request()
    request.ClearField("occurred")
    with pytest.raises(GatewayError) as caught:
        gateway.client()._call(gateway.client().stub.RecordEvent, request)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT and caught.value.field == "occurred_at"
    request.occurred_at_timestamp = 1779421200123
    gateway.client()._call(gateway.client().stub.RecordEvent, request)
    assert json.loads(gateway.sink.records[0][1])["occurred_at"] == "2026-05-22T03:40:00.123Z"


def test_unauthenticated_without_a_valid_key(gateway: Running) -> None:
    event = sample_events(1, tenants=1)[0]
    for key in (None, "alk_nope", "alk_0123456789ab_" + "A" * 43):
        with pytest.raises(GatewayError) as caught:
            gateway.client(key).record(event) if key else GatewayClient(f"127.0.0.1:{gateway.port}").record(event)
        assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED, key
    assert gateway.apikeys.revoke(gateway.tenant_key.split("_")[1])
    with pytest.raises(GatewayError) as caught:
        gateway.client().record(event)
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED and "revoked" in caught.value.details
    assert gateway.sink.records == []


def test_permission_denied_for_another_tenant_and_admin_may_write_any(gateway: Running) -> None:
    other = sample_events(1, tenants=2)[0]
    other["tenant_id"] = "t_other"
    with pytest.raises(GatewayError) as caught:
        gateway.client().record(other)
    assert caught.value.code == grpc.StatusCode.PERMISSION_DENIED and "t_other" in caught.value.details
    assert gateway.client("admin").record(other).verification_hash


def test_a_reused_event_id_with_other_content_is_already_exists(gateway: Running) -> None:
    event = sample_events(1, tenants=1)[0]
    with gateway.client() as client:
        first = client.record(event)
        assert client.record(event).duplicate
        changed = {**event, "result": "FAILURE" if event["result"] == "SUCCESS" else "SUCCESS"}
        with pytest.raises(GatewayError) as caught:
            client.record(changed)
    assert caught.value.code == grpc.StatusCode.ALREADY_EXISTS and first.verification_hash in caught.value.details
    assert len(gateway.sink.records) == 1


@pytest.mark.parametrize("hold", [True])
def test_resource_exhausted_with_a_retry_hint_when_kafka_lags(gateway: Running) -> None:
    events = sample_events(4, tenants=1)
    client = gateway.client()
    with ThreadPoolExecutor(3) as pool:
        waiting = [pool.submit(client.record, e) for e in events[:3]]
        deadline = threading.Event()
        while len(gateway.sink.records) < 3 and not deadline.wait(0.02):
            pass
        with pytest.raises(grpc.RpcError) as caught:
            gateway.stub().RecordEvent(
                request_from_event(wire_event(events[3])),
                metadata=(("authorization", f"Bearer {gateway.tenant_key}"),),
            )
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        trailers = dict(caught.value.trailing_metadata())
        assert trailers["retry-after-ms"] == "200" and "retry after 200 ms" in caught.value.details()
        gateway.sink.release()
        assert all(f.result(10).verification_hash for f in waiting)
    gateway.sink.hold = False
    assert client.record(events[3]).verification_hash  # admitted again once the acks came back


@pytest.mark.parametrize("hold", [True])
def test_unavailable_when_kafka_does_not_acknowledge(gateway: Running) -> None:
    event = sample_events(1, tenants=1)[0]
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(gateway.client().record, event)
        while not gateway.sink.records:
            threading.Event().wait(0.02)
        gateway.sink.release(error="KafkaError{code=_MSG_TIMED_OUT}")
        with pytest.raises(GatewayError) as caught:
            future.result(10)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE and "retry" in caught.value.details


# --------------------------------------------------------------------------- conversion


def test_request_and_event_round_trip() -> None:
    for event in sample_events(50):
        wire = wire_event(event)
        assert wire_event(event_from_request(request_from_event(wire))) == wire


def test_out_of_range_millis_is_refused() -> None:
    request = _request()
    request.occurred_at_timestamp = 10**17
    with pytest.raises(EventValidationError, match="occurred_at_timestamp"):
        event_from_request(request)


def test_verification_hash_depends_on_the_subject_keys() -> None:
    event = wire_event(sample_events(1)[0])
    store_a, store_b = InMemoryKeyStore(), InMemoryKeyStore()
    policy = load_policy()
    a = verification_hash(event, store_a.get_or_create(event["tenant_id"], event["actor"]["id"]), policy)
    b = verification_hash(event, store_b.get_or_create(event["tenant_id"], event["actor"]["id"]), policy)
    has_pii = any(k in event for k in ("client_ip", "user_agent")) or "email" in event["actor"]
    assert (a != b) == has_pii


# --------------------------------------------------------------------------- API keys


def test_api_keys_are_stored_hashed_scoped_and_revocable(tmp_path: Path) -> None:
    store = ApiKeyStore(tmp_path / "keys.sqlite", cache_ttl_s=0)
    record, token = store.create(tenant_id="t_1", label="billing")
    admin_record, admin_token = store.create(admin=True)
    assert token.startswith(f"alk_{record.key_id}_") and len(token) == 4 + 12 + 1 + 43
    secret = token.rsplit("_", 1)[1]
    assert secret.encode() not in (tmp_path / "keys.sqlite").read_bytes()
    assert (tmp_path / "keys.sqlite").stat().st_mode & 0o077 == 0

    principal = store.authenticate(f"Bearer {token}")
    assert (principal.tenant_id, principal.admin) == ("t_1", False)
    principal.authorize("t_1")
    with pytest.raises(PermissionDeniedError, match="t_2"):
        principal.authorize("t_2")
    admin = store.authenticate(admin_token)
    assert admin.admin and admin.tenant_id is None
    admin.authorize("anything")

    wrong = token[:-1] + ("A" if token[-1] != "A" else "B")
    for header in (None, "", "Bearer", "Basic abc", wrong, token.replace(record.key_id, "0" * 12)):
        with pytest.raises(AuthenticationError):
            store.authenticate(header)
    assert store.revoke(record.key_id) and not store.revoke(record.key_id)
    with pytest.raises(AuthenticationError, match="revoked"):
        store.authenticate(token)
    assert {k.key_id: k.active for k in store.list()} == {record.key_id: False, admin_record.key_id: True}
    assert [k.key_id for k in store.list(include_revoked=False)] == [admin_record.key_id]


def test_api_key_scope_must_be_one_of_tenant_or_admin(tmp_path: Path) -> None:
    store = ApiKeyStore(tmp_path / "keys.sqlite")
    from api.keys import ApiKeyError

    with pytest.raises(ApiKeyError):
        store.create()
    with pytest.raises(ApiKeyError):
        store.create(tenant_id="t", admin=True)
    with pytest.raises(ApiKeyError, match="not valid"):
        store.create(tenant_id="bad tenant")


def test_revocation_reaches_other_processes_within_the_cache_ttl(tmp_path: Path) -> None:
    gateway_view = ApiKeyStore(tmp_path / "keys.sqlite", cache_ttl_s=0.2)
    admin_cli = ApiKeyStore(tmp_path / "keys.sqlite")
    record, token = admin_cli.create(tenant_id="t_1")
    gateway_view.authenticate(token)
    admin_cli.revoke(record.key_id)
    gateway_view.authenticate(token)  # still cached
    threading.Event().wait(0.25)
    with pytest.raises(AuthenticationError):
        gateway_view.authenticate(token)


def test_cli_apikeys_create_list_revoke(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from runners.cli import main

    monkeypatch.setenv("AUDITLOG_APIKEYS_FILE", str(tmp_path / "k.sqlite"))
    assert main(["apikeys", "create", "--tenant", "t_7", "--label", "svc"]) == 0
    token = capsys.readouterr().out.strip()
    key_id = token.split("_")[1]
    assert main(["apikeys", "list"]) == 0
    listing = capsys.readouterr().out
    assert key_id in listing and "tenant t_7" in listing and "svc" in listing and token not in listing
    assert main(["apikeys", "revoke", key_id]) == 0
    assert main(["apikeys", "revoke", key_id]) == 1
    assert main(["apikeys", "create", "--admin"]) == 0


def test_the_gateway_refuses_to_start_without_kafka(tmp_path: Path) -> None:
    import base64
    import os
    import socket
    import subprocess
    import sys

    from schemas.settings import REPO_ROOT, Settings

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    settings = Settings.from_env(
        home=tmp_path,
        host="127.0.0.1",
        kafka_port=free_port(),  # nobody listens there
        gateway_port=free_port(),
        master_key=base64.b64encode(os.urandom(32)).decode(),
        keystore_file=str(tmp_path / "keystore.sqlite"),
        apikeys_file=str(tmp_path / "apikeys.sqlite"),
    )
    done = subprocess.run(
        [sys.executable, "-m", "runners.cli", "gateway"],
        env={**os.environ, **settings.to_env()},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert f"{settings.kafka_bootstrap} did not answer" in done.stderr and "auditlog stack up" in done.stderr
