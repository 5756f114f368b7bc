"""Issue #15 on the query API, the gateway and the exports: scopes, reserved names, recorded
refusals, no 500s, security headers, CSV formula cells, time zones, ids with '/', file modes.

The API is served for real (tests/query_app.py: uvicorn over chDB and an in-memory archive).

    .venv/bin/python -m pytest tests/unit/test_query_security.py
"""

from __future__ import annotations

import base64
import csv
import io
import json
import sqlite3
import stat
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import grpc
import pytest

from api.gateway import audit_pb2_grpc
from api.gateway.convert import request_from_event
from api.gateway.intake import EventIntake, MemoryAckSink
from api.gateway.server import GatewayCore, Rejection, _server_options, add_servicer
from api.keys import ApiKeyStore, MissingScopeError, Principal
from api.query.reads import ReadAuditor, RefusalLimiter
from api.sdk.events import wire_event
from pipelines.export import CSV_NEUTRALISED, ExportQuery, build_manifest, neutralise_cell, sign_manifest, verify_export
from pipelines.io.keystore import InMemoryKeyStore
from pipelines.witnessing import LagMetrics, Witness
from schemas.reserved import SERVICE_SIG_HEADER, is_service_record
from schemas.samples import EventGenerator
from tests.query_app import ServedApp, served_app
from transforms.cosignature import CosignatureSigner
from transforms.note import Signer

T = "/api/v1/tenants"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApp]:
    keys = {
        "t_1000": {"tenant_id": "t_1000"},  # read, the default
        "t_1000_write": {"tenant_id": "t_1000", "scopes": ("write",)},
        "t_1000_rw": {"tenant_id": "t_1000", "scopes": ("read", "write")},
        "t_1001": {"tenant_id": "t_1001"},
        "admin": {"scopes": ("admin",)},
    }
    with served_app(tmp_path_factory.mktemp("security"), **keys) as served:
        # These tests count refusal records one by one; the limiter has a test of its own.
        served.services.auditor.refusals = RefusalLimiter(per_actor=10_000, total=10_000)
        yield served


def key_id(token: str) -> str:
    return token.split("_")[1]


# --------------------------------------------------------------------------- 1. scopes


def test_keys_are_made_with_read_scope_by_default_and_scopes_are_listed(tmp_path: Path) -> None:
    store = ApiKeyStore(tmp_path / "keys.sqlite", cache_ttl_s=0)
    reader = store.create(tenant_id="t_1")
    writer = store.create(tenant_id="t_1", scopes=("write",))
    both = store.create(tenant_id="t_1", scopes=("read", "write"))
    admin = store.create(scopes=("admin",))
    assert store.authenticate(reader[1]).scopes == {"read"}
    assert store.authenticate(writer[1]).scopes == {"write"}
    assert store.authenticate(both[1]).scopes == {"read", "write"}
    assert store.authenticate(admin[1]).admin
    assert {k.key_id: k.scope for k in store.list()} == {
        reader[0].key_id: "tenant t_1 read",
        writer[0].key_id: "tenant t_1 write",
        both[0].key_id: "tenant t_1 read+write",
        admin[0].key_id: "admin",
    }
    from api.keys import ApiKeyError

    with pytest.raises(ApiKeyError, match="unknown scope"):
        store.create(tenant_id="t_1", scopes=("delete",))
    with pytest.raises(ApiKeyError, match="admin scope is for keys of no tenant"):
        store.create(tenant_id="t_1", scopes=("admin",))


def test_keys_stored_before_scopes_keep_working_as_they_did(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.executescript(
        """CREATE TABLE api_keys (key_id TEXT PRIMARY KEY, secret_sha256 BLOB NOT NULL, tenant_id TEXT,
        admin INTEGER NOT NULL CHECK (admin IN (0, 1)), label TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL,
        revoked_at TEXT, CHECK ((admin = 1 AND tenant_id IS NULL) OR (admin = 0 AND tenant_id IS NOT NULL)))
        WITHOUT ROWID;"""
    )
    import hashlib

    secret_t, secret_a = "A" * 43, "B" * 43
    old.execute(
        "INSERT INTO api_keys VALUES ('0000000000aa', ?, 't_1', 0, 'old', '2026-01-01T00:00:00Z', NULL)",
        (hashlib.sha256(secret_t.encode()).digest(),),
    )
    old.execute(
        "INSERT INTO api_keys VALUES ('0000000000bb', ?, NULL, 1, 'old', '2026-01-01T00:00:00Z', NULL)",
        (hashlib.sha256(secret_a.encode()).digest(),),
    )
    old.commit()
    old.close()
    store = ApiKeyStore(path, cache_ttl_s=0)
    tenant = store.authenticate(f"alk_0000000000aa_{secret_t}")
    assert tenant.scopes == {"read", "write"}
    tenant.require("read")
    tenant.require("write")
    admin = store.authenticate(f"alk_0000000000bb_{secret_a}")
    assert admin.admin and admin.has_scope("read") and admin.has_scope("write")
    assert store.create(tenant_id="t_2")[0].scopes == {"read"}  # new keys: the new default


def test_cli_scope_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from runners.cli import main

    monkeypatch.setenv("AUDITLOG_APIKEYS_FILE", str(tmp_path / "k.sqlite"))
    assert main(["apikeys", "create", "--tenant", "t_7", "--scope", "write"]) == 0
    token = capsys.readouterr().out.strip()
    assert main(["apikeys", "create", "--tenant", "t_7"]) == 0
    reader = capsys.readouterr().out.strip()
    assert main(["apikeys", "create", "--scope", "admin"]) == 0
    admin = capsys.readouterr().out.strip()
    assert main(["apikeys", "create", "--tenant", "t_7", "--scope", "admin"]) == 2
    assert "admin scope" in capsys.readouterr().err
    assert main(["apikeys", "create"]) == 2
    assert "--tenant" in capsys.readouterr().err
    store = ApiKeyStore(tmp_path / "k.sqlite", cache_ttl_s=0)
    assert store.authenticate(token).scopes == {"write"}
    assert store.authenticate(reader).scopes == {"read"}
    assert store.authenticate(admin).admin


def test_a_write_only_key_cannot_read_and_the_403_names_the_scope(app: ServedApp) -> None:
    status, body, _ = app.get(f"{T}/t_1000/audit-logs?limit=1", app.keys["t_1000_write"])
    assert status == 403 and "read scope" in body["error"] and "--scope read" in body["error"], body
    status, body, _ = app.get("/api/v1/logs/audit.events.p0/checkpoint", app.keys["t_1000_write"])
    assert status == 403 and "read scope" in body["error"]
    for who in ("t_1000", "t_1000_rw", "admin"):
        status, body, _ = app.get(f"{T}/t_1000/audit-logs?limit=1", app.keys[who])
        assert status == 200 and body["records"], (who, body)
    status, body, _ = app.get(f"{T}/t_1001/audit-logs?limit=1", app.keys["admin"])
    assert status == 200 and body["records"]
    status, body, _ = app.get(f"{T}/t_1001/audit-logs?limit=1", app.keys["t_1000"])
    assert status == 403 and "t_1001" in body["error"]


class Gateway:
    def __init__(self, tmp: Path) -> None:
        self.sink = MemoryAckSink()
        self.apikeys = ApiKeyStore(tmp / "gw-keys.sqlite", cache_ttl_s=0)
        self.core = GatewayCore(EventIntake(InMemoryKeyStore(), self.sink), self.apikeys.authenticate)
        self.keys = {
            "read": self.apikeys.create(tenant_id="t_1000")[1],
            "write": self.apikeys.create(tenant_id="t_1000", scopes=("write",))[1],
            "admin": self.apikeys.create(admin=True)[1],
        }

    def start(self, events: list[dict[str, Any]], key: str, batch: bool = False) -> list[Any]:
        results: list[Any] = []
        self.core.start(
            [request_from_event(wire_event(e)) for e in events],
            [("authorization", f"Bearer {self.keys[key]}")],
            batch,
            results.append,
        )
        return results


def events(n: int, tenant: str = "t_1000") -> list[dict[str, Any]]:
    gen = EventGenerator(seed=5, tenants=1)
    out = []
    for _ in range(n):
        event = gen.event()
        event["tenant_id"] = tenant
        out.append(event)
    return out


def test_the_gateway_requires_the_write_scope(tmp_path: Path) -> None:
    gateway = Gateway(tmp_path)
    with pytest.raises(Rejection) as refused:
        gateway.start(events(1), "read")
    assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert "write scope" in refused.value.details and ("auditlog-missing-scope", "write") in refused.value.trailers
    assert gateway.sink.records == []
    assert gateway.start(events(1), "write")[0][0].verification_hash
    assert gateway.start(events(1, "t_9"), "admin")[0][0].verification_hash
    with pytest.raises(MissingScopeError):
        Principal("k", "t", False, frozenset({"read"})).require("write")


@pytest.mark.parametrize(
    ("change", "field", "value"),
    [
        ({"action": "audit_log.search"}, "action", "audit_log.search"),
        ({"action": "audit_log.export"}, "action", "audit_log.export"),
        ({"actor": {"id": "apikey:0123456789ab", "type": "SYSTEM"}}, "actor.id", "apikey:0123456789ab"),
    ],
)
def test_the_gateway_refuses_reserved_names_naming_them(tmp_path: Path, change: dict, field: str, value: str) -> None:
    gateway = Gateway(tmp_path)
    batch = events(3)
    batch[2].update(change)
    for key in ("write", "admin"):
        with pytest.raises(Rejection) as refused:
            gateway.start(batch, key, batch=True)
        assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert f"events[2].{field}" in refused.value.details and repr(value) in refused.value.details
        assert "reserved" in refused.value.details
        assert ("auditlog-field", f"events[2].{field}") in refused.value.trailers
    assert gateway.sink.records == []


def test_the_served_gateway_answers_reserved_names_and_missing_scope(tmp_path: Path) -> None:
    gateway = Gateway(tmp_path)
    server = grpc.server(ThreadPoolExecutor(max_workers=4), options=_server_options(False))
    add_servicer(server, gateway.core, "threads")
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = audit_pb2_grpc.AuditLogServiceStub(channel)
            event = events(1)[0]
            event["action"] = "audit_log.search"
            with pytest.raises(grpc.RpcError) as failed:
                stub.RecordEvent(
                    request_from_event(wire_event(event)), metadata=[("authorization", gateway.keys["write"])]
                )
            assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "'audit_log.search'" in failed.value.details()
            with pytest.raises(grpc.RpcError) as failed:
                stub.RecordEvent(
                    request_from_event(wire_event(events(1)[0])), metadata=[("authorization", gateway.keys["read"])]
                )
            assert failed.value.code() == grpc.StatusCode.PERMISSION_DENIED and "write" in failed.value.details()
    finally:
        server.stop(0).wait()


# --------------------------------------------------------------------------- 2. the read audit's signed records


class CapturingProducer:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def produce(self, topic: str, **kwargs: Any) -> None:
        self.records.append({"topic": topic, **kwargs})

    def flush(self, timeout: float = 0) -> int:
        return 0

    def poll(self, timeout: float = 0) -> int:
        return 0


def test_read_audit_records_go_to_kafka_signed_over_their_exact_value_bytes(tmp_path: Path) -> None:
    signer = Signer.generate("auditlog.test")
    auditor = ReadAuditor(tmp_path / "read-audit.sqlite", None, "audit.events", signer=signer)
    auditor.record("0123456789ab", "search", "t_1000", "AUDIT_LOG", "t_1000", {"returned": 3})
    auditor.record_refusal(None, "search", "t_1000", 401, "no API key", "/api/v1/tenants/t_1000/audit-logs")
    producer = CapturingProducer()
    stats = auditor.forwarder(producer).run(until_empty=True)
    assert stats.forwarded == 2 and auditor.backlog() == 0
    for record in producer.records:
        value = record["value"]
        (name, signature), *rest = record["headers"]
        assert name == SERVICE_SIG_HEADER and rest == []
        assert is_service_record(signer.verifier(), value, signature)
        assert not is_service_record(signer.verifier(), value + b" ", signature)
        assert not is_service_record(Signer.generate("auditlog.test").verifier(), value, signature)
        event = json.loads(value)
        assert event["action"].startswith("audit_log.") and event["actor"]["id"].startswith("apikey:")


def test_the_read_audit_will_not_relay_unsigned(tmp_path: Path) -> None:
    auditor = ReadAuditor(tmp_path / "read-audit.sqlite", "127.0.0.1:1", "audit.events")
    with pytest.raises(RuntimeError, match="signer"):
        auditor.start()


# --------------------------------------------------------------------------- 3. refusals leave a trace


def newest(app: ServedApp, n: int = 1) -> list[dict[str, Any]]:
    return app.outbox_events()[-n:]


def test_a_401_without_a_key_is_recorded_as_a_failure(app: ServedApp) -> None:
    before = len(app.outbox_events())
    status, _, _ = app.get(f"{T}/t_1000/audit-logs")
    assert status == 401
    events_now = app.outbox_events()
    assert len(events_now) == before + 1
    event = events_now[-1]
    assert event["result"] == "FAILURE" and event["tenant_id"] == "t_1000"
    assert event["actor"] == {"id": "apikey:anonymous", "type": "SYSTEM"}
    assert event["action"] == "audit_log.search"
    assert event["metadata"]["status"] == 401 and "no API key" in event["metadata"]["reason"]


def test_a_401_for_an_unknown_key_names_the_key_id_never_the_secret(app: ServedApp) -> None:
    token = "alk_0badc0ffee00_" + "Q" * 43
    status, _, _ = app.get(f"{T}/t_1001/audit-logs/evt_1", token)
    assert status == 401
    (event,) = newest(app)
    assert event["actor"]["id"] == "apikey:0badc0ffee00" and event["tenant_id"] == "t_1001"
    assert event["action"] == "audit_log.event" and "Q" * 43 not in json.dumps(event)
    status, _, _ = app.get(f"{T}/t_1001/audit-logs", "not-a-key")
    assert status == 401
    assert newest(app)[0]["actor"]["id"] == "apikey:malformed"


def test_a_403_is_recorded_with_the_key_the_tenant_asked_and_the_reason(app: ServedApp) -> None:
    status, _, _ = app.get(f"{T}/t_1001/audit-logs", app.keys["t_1000"])
    assert status == 403
    (event,) = newest(app)
    assert event["actor"]["id"] == f"apikey:{key_id(app.keys['t_1000'])}" and event["tenant_id"] == "t_1001"
    assert event["result"] == "FAILURE" and event["metadata"]["status"] == 403
    assert "t_1001" in event["metadata"]["reason"]
    status, _, _ = app.get(f"{T}/t_1000/export", app.keys["t_1000_write"])
    assert status == 403
    (event,) = newest(app)
    assert event["action"] == "audit_log.export" and "read scope" in event["metadata"]["reason"]
    status, _, _ = app.get(f"{T}/a%20b/audit-logs", app.keys["t_1000"])  # not a tenant id: system tenant
    assert status == 403
    (event,) = newest(app)
    assert event["tenant_id"] == "auditlog-system" and event["metadata"]["tenant_asked"] == "a b"


def test_refusal_records_are_bounded_and_the_excess_is_summarised(tmp_path: Path) -> None:
    now = [1_000_000.0]
    limiter = RefusalLimiter(per_actor=3, total=5, window_s=60, clock=lambda: now[0])
    auditor = ReadAuditor(tmp_path / "read-audit.sqlite", None, "audit.events", refusals=limiter)
    recorded = [auditor.record_refusal(None, "search", "t_1", 401, "no key", "/x") for _ in range(1000)]
    recorded += [auditor.record_refusal(f"{i:012x}", "search", "t_1", 401, "unknown", "/x") for i in range(1000)]
    assert sum(r is not None for r in recorded) == 5  # 3 anonymous + 2 more before the total
    assert auditor.backlog() == 5
    now[0] += 60
    assert auditor.record_refusal(None, "search", "t_1", 401, "no key", "/x") is not None
    rows = [
        json.loads(r[0]) for r in sqlite3.connect(auditor.outbox_path).execute("SELECT payload FROM auditlog_outbox")
    ]
    summary = [e for e in rows if e["action"] == "audit_log.refusals_suppressed"]
    assert len(summary) == 1 and summary[0]["metadata"]["suppressed"] == 1995
    assert summary[0]["metadata"]["by_actor"]["apikey:anonymous"] == 997
    assert summary[0]["metadata"]["actors"] == 1 + 998 and len(summary[0]["metadata"]["by_actor"]) == 20
    assert auditor.backlog() == 7
    for _ in range(10):
        auditor.record_refusal(None, "search", "t_1", 401, "no key", "/x")
    auditor.stop()  # the current window's excess is summarised on the way out
    assert auditor.backlog() == 7 + 2 + 1


# --------------------------------------------------------------------------- 4. no 500s: 400 naming the parameter


def cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


BAD = [
    (f"{T}/t_1000/audit-logs?cursor=" + cursor(b'["2026-01-01T00:00:00.000Z","e","l",-1,5]'), "t_1000", "cursor"),
    (f"{T}/t_1000/audit-logs?cursor=" + cursor(b'["2026-01-01T00:00:00.000Z","e","l",1e400,5]'), "t_1000", "cursor"),
    (f"{T}/t_1000/audit-logs?cursor=" + cursor(b'["2026-01-01T00:00:00.000Z","e","l",Infinity,5]'), "t_1000", "cursor"),
    (f"{T}/t_1000/audit-logs?cursor=" + cursor(b'["2026-01-01X00:00:00.000Z","e","l",1,5]'), "t_1000", "cursor"),
    (f"{T}/t_1000/audit-logs?cursor=" + cursor(b"[" * 1500), "t_1000", "cursor"),
    (f"{T}/t_1000/audit-logs?cursor=" + cursor(b'{"a":1}'), "t_1000", "cursor"),
    (f"{T}/t_1000/audit-logs?start_time=2026-12-03X01:05:11.377Z", "t_1000", "start_time"),
    (f"{T}/t_1000/audit-logs?end_time=0001-01-01T00:00:00%2B01:00", "t_1000", "end_time"),
    (f"{T}/t_1000/audit-logs?start_time=0001-01-01T00:00:00Z", "t_1000", "start_time"),
    (f"{T}/t_1000/audit-logs?start_time=9999-12-31T23:59:59-01:00", "t_1000", "start_time"),
    (f"{T}/t_1000/audit-logs?start_time=2026-11-01T08:00:00", "t_1000", "start_time"),
    (f"{T}/t_1000/export?format=csv&start_time=2026-12-03X01:05:11.377Z", "t_1000", "start_time"),
    (f"{T}/t_1000/export?format=csv&end_time=0001-01-01T00:00:00%2B01:00", "t_1000", "end_time"),
    (f"{T}/t_1000/export?format=csv&end_time=2026-11-01T08:00", "t_1000", "end_time"),
    (f"{T}/t_1000/resources/%3Cb%3Ex%20y/r1/history", "t_1000", "resource_type"),
    (f"{T}/t_1000/resources/{'a' * 65}/r1/history", "t_1000", "resource_type"),
    (f"{T}/t_1000/resources/document/{'r' * 257}/history", "t_1000", "resource_id"),
    (f"{T}/a%20b/audit-logs", "admin", "tenant_id"),
    (f"{T}/t%EF%BC%BF1000/audit-logs", "admin", "tenant_id"),
    (f"{T}/{'a' * 65}/audit-logs", "admin", "tenant_id"),
    (f"{T}/a%20b/export", "admin", "tenant_id"),
    (f"{T}/t_1000/audit-logs/evt%20x", "t_1000", "event_id"),
    (f"{T}/t_1000/audit-logs/{'e' * 129}/proof", "t_1000", "event_id"),
    ("/api/v1/logs/a%20b/checkpoint", "t_1000", "log_id"),
    ("/api/v1/logs/../checkpoint", "t_1000", "log_id"),
    ("/api/v1/logs/a..b/checkpoint", "t_1000", "log_id"),
    ("/api/v1/logs/audit.events.p0/consistency?from=1&to=99999999999999999999999", "t_1000", "to"),
    ("/api/v1/logs/audit.events.p0/consistency?from=-1&to=5", "t_1000", "from"),
    ("/api/v1/logs/audit.events.p0/consistency?to=5", "t_1000", "from"),
    ("/api/v1/logs/audit..x/consistency?from=1&to=5", "t_1000", "log_id"),
]


@pytest.mark.parametrize(("path", "who", "parameter"), BAD, ids=[f"{i}-{b[2]}" for i, b in enumerate(BAD)])
def test_bad_input_is_a_400_naming_the_parameter_and_the_rule(
    app: ServedApp, path: str, who: str, parameter: str
) -> None:
    status, body, _ = app.get(path, app.keys[who])
    assert status == 400, (status, body)
    assert body["parameter"] == parameter and parameter in body["error"], body


def test_a_time_without_a_zone_is_refused_not_read_in_the_servers_zone(app: ServedApp) -> None:
    status, body, _ = app.get(f"{T}/t_1000/audit-logs?start_time=2026-11-01T08:00:00", app.keys["t_1000"])
    assert status == 400 and "no time zone" in body["error"] and "'2026-11-01T08:00:00'" in body["error"]
    for fine in ("2026-11-01", "2026-11-01T08:00:00Z", "2026-11-01T09:00:00+01:00", "2026-11-01T08:00Z"):
        status, body, _ = app.get(f"{T}/t_1000/audit-logs?{urlencode({'start_time': fine})}", app.keys["t_1000"])
        assert status == 200, (fine, body)


# --------------------------------------------------------------------------- 5. the smaller ones


@pytest.mark.parametrize("path", ["/", "/ui/app.js", f"{T}/t_1000/audit-logs", "/openapi.json", "/nope"])
def test_every_answer_carries_the_security_headers(app: ServedApp, path: str) -> None:
    _, _, headers = app.get(path, app.keys["t_1000"])
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"
    if path == "/":
        assert "script-src 'self'" in headers["content-security-policy"]
    else:
        assert "default-src 'none'" in headers["content-security-policy"]


def test_docs_and_redoc_are_off(app: ServedApp) -> None:
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        status, _, _ = app.get(path)
        assert status == 404, path
    status, document, _ = app.get("/openapi.json")
    assert status == 200 and document["paths"]


def test_history_of_a_resource_whose_id_holds_a_slash(app: ServedApp) -> None:
    path = f"{T}/t_1000/resources/{quote('document')}/a/b%2Fc/history"
    status, body, _ = app.get(path, app.keys["t_1000"])
    assert status == 200 and body["resource"] == {"type": "document", "id": "a/b/c"}, body
    (event,) = newest(app)
    assert event["action"] == "audit_log.history" and event["resource"] == {"type": "document", "id": "a/b/c"}


def test_the_read_audit_outbox_is_private(app: ServedApp) -> None:
    app.get(f"{T}/t_1000/audit-logs?limit=1", app.keys["t_1000"])
    outbox = app.services.auditor.outbox_path
    for path in (outbox, outbox.with_name(outbox.name + "-wal"), outbox.with_name(outbox.name + "-shm")):
        assert path.exists(), path
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path, oct(path.stat().st_mode))


def test_an_existing_outbox_made_0644_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "read-audit.sqlite"
    sqlite3.connect(path).execute("CREATE TABLE x (a)").connection.commit()
    path.chmod(0o644)
    ReadAuditor(path, None, "audit.events")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1", "'+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("plain", "plain"),
        ("a=b", "a=b"),
        ("", ""),
        (None, None),
        (7, 7),
    ],
)
def test_csv_formula_cells_are_neutralised(value: Any, written: Any) -> None:
    assert neutralise_cell(value) == written


def test_the_csv_export_writes_formulas_quoted_and_the_manifest_says_so(tmp_path: Path) -> None:
    from pipelines.export import _write_csv
    from schemas.present import present_event

    gen = EventGenerator(seed=3, tenants=1)
    event = wire_event(gen.event())
    event["actor"] = {"id": "=cmd|' /C calc'!A0", "type": "USER"}
    event["resource"] = {"id": "@SUM(1+1)", "type": "document"}
    event["metadata"] = {"note": "-x"}
    record = present_event(json.dumps(event).encode(), {"log_id": "l", "leaf_index": 0, "block_index": 0}, None)
    _write_csv(tmp_path / "events.csv", [record])
    (row,) = list(csv.DictReader(io.StringIO((tmp_path / "events.csv").read_text())))
    assert row["actor_id"] == "'=cmd|' /C calc'!A0" and row["resource_id"] == "'@SUM(1+1)"
    assert row["metadata"].startswith("{")  # JSON text is not a formula
    query = ExportQuery("t_1000")
    signer = Signer.generate("auditlog.test")
    manifest = build_manifest(tmp_path, query, ("csv",), 1, 0, {})
    assert manifest["csv"] == CSV_NEUTRALISED
    (tmp_path / "MANIFEST.note").write_text(sign_manifest(manifest, signer))
    assert verify_export(tmp_path, signer.verifier())["csv"]["formula_prefix"] == "'"
    assert "csv" not in build_manifest(tmp_path, query, (), 1, 0, {})


def test_the_api_export_is_neutralised_and_still_verifies(app: ServedApp, tmp_path: Path) -> None:
    status, body, headers = app.get(f"{T}/t_1000/export?format=csv", app.keys["t_1000"])
    assert status == 200 and headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        zf.extractall(tmp_path)
    manifest = verify_export(tmp_path, app.signer.verifier())
    assert manifest["csv"] == CSV_NEUTRALISED
    with (tmp_path / "events.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows and not any(v.startswith(("=", "+", "-", "@", "\t", "\r")) for r in rows for v in r.values())


def test_the_ingest_job_logs_the_signed_read_records_and_dead_letters_them_unsigned(tmp_path: Path) -> None:
    from pipelines.ingest_core import IngestOptions, LogCursor, LogSequencer, MemoryDedupe, SourceRecord, service_sig

    signer = Signer.generate("auditlog.test")
    auditor = ReadAuditor(tmp_path / "read-audit.sqlite", None, "audit.events", signer=signer)
    auditor.record("0123456789ab", "search", "t_1000", "AUDIT_LOG", "t_1000", {"returned": 3})
    auditor.record_refusal(None, "export", "t_1000", 401, "no API key", "/api/v1/tenants/t_1000/export")
    producer = CapturingProducer()
    auditor.forwarder(producer).run(until_empty=True)
    options = IngestOptions(topic="audit.events", origin_prefix="auditlog.test", block_size=10_000)
    sequencer = LogSequencer(options, InMemoryKeyStore(), signer)
    cursor, dedupe = LogCursor(options.log_id(0)), MemoryDedupe()
    for offset, produced in enumerate(producer.records):
        record = SourceRecord(0, offset, 0, produced["key"], produced["value"], service_sig(produced["headers"]))
        assert sequencer.step(cursor, dedupe, record) == []  # accepted, waiting for the block
    unsigned = SourceRecord(0, 9, 0, producer.records[0]["key"], producer.records[0]["value"])
    ((kind, letter),) = sequencer.step(cursor, dedupe, unsigned)
    assert kind == "dlq" and "reserved" in str(letter)
    block = sequencer.seal(cursor)
    assert block is not None and block.tree_size == 2  # both read records are leaves of the log


def test_a_cursor_the_api_hands_out_is_accepted_whatever_fraction_clickhouse_prints() -> None:
    """formatDateTime's %f prints 3 or 6 digits by the server's settings; both must page on."""
    from api.query.store import QueryError, _cursor, encode_cursor

    for occurred in ("2026-05-01T00:00:00.276Z", "2026-05-01T00:00:00.276000Z"):
        cursor = encode_cursor((occurred, "evt_1", "audit.events.p0", 7), 100)
        assert _cursor(cursor) == (occurred, "evt_1", "audit.events.p0", 7, 100)
    for bad in ("2026-13-01T00:00:00.276Z", "2026-05-01T00:00:00Z", "1e400"):
        with pytest.raises(QueryError, match="cursor"):
            _cursor(encode_cursor((bad, "evt_1", "audit.events.p0", 7), 100))


def test_metrics_are_for_admin_keys_and_show_each_witness_lag(app: ServedApp) -> None:
    witness = CosignatureSigner.generate("witness.example/w")
    app.services.metrics = LagMetrics(app.services.archive, [Witness("w", "http://127.0.0.1:9", witness.verifier())])
    try:
        status, body, headers = app.get("/metrics", app.keys["admin"])
        assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4"), (status, body)
        logs = app.services.archive.list_logs()
        samples = {
            line.rsplit(" ", 1)[0]: int(line.rsplit(" ", 1)[1])
            for line in body.decode().splitlines()
            if line[:1] != "#"
        }
        for log_id in logs:  # nothing cosigned: every checkpoint of every log is behind
            labels = f'{{witness="w",log="{log_id}"}}'
            assert samples[f"auditlog_witness_checkpoints_behind{labels}"] == len(
                app.services.archive.list_checkpoints(log_id)
            )
            assert samples[f"auditlog_witness_cosigned_tree_size{labels}"] == -1
        assert logs and len(samples) == 4 * len(logs)
        for who in ("t_1000", "t_1000_rw"):
            status, body, _ = app.get("/metrics", app.keys[who])
            assert status == 403 and "admin scope" in body["error"], body
        assert app.get("/metrics")[0] == 401
    finally:
        app.services.metrics = None
