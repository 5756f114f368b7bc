"""The query API against a real deployment (SeaweedFS + chDB) served by `auditlog serve`.

.venv/bin/python -m pytest tests/integration/test_query_api.py
"""

from __future__ import annotations

import base64
import io
import json
import sqlite3
import zipfile
from collections.abc import Iterator
from urllib.parse import quote, urlencode

import pytest

from tests.integration.served import AUDITLOG, ServedDeployment, serving
from transforms.checkpoint import open_checkpoint
from transforms.merkle import verify_consistency
from transforms.note import Verifier
from transforms.tlogproof import verify_proof

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(stack, stack_settings, tmp_path_factory) -> Iterator[ServedDeployment]:
    keys = {"t_1000": ("--tenant", "t_1000"), "t_1001": ("--tenant", "t_1001"), "admin": ("--admin",)}
    with serving(stack_settings, tmp_path_factory.mktemp("served-api"), "query-api", **keys) as deployment:
        yield deployment


def key(served: ServedDeployment, who: str) -> str:
    return served.keys[who]


def search(served: ServedDeployment, who: str = "t_1000", tenant: str = "t_1000", **params: object) -> tuple[int, dict]:
    status, body, _ = served.get(f"/api/v1/tenants/{tenant}/audit-logs?{urlencode(params)}", key(served, who))
    return status, body


def test_without_a_key_401_and_another_tenants_data_403(served):
    status, body, headers = served.get("/api/v1/tenants/t_1000/audit-logs")
    assert status == 401 and "error" in body and headers.get("www-authenticate") == "Bearer"
    status, body, _ = served.get("/api/v1/tenants/t_1000/audit-logs", "alk_000000000000_" + "A" * 43)
    assert status == 401
    status, body = search(served, who="t_1001", tenant="t_1000")
    assert status == 403 and "t_1001" in body["error"]
    status, body = search(served, who="admin", tenant="t_1000", limit=1)
    assert status == 200 and body["records"]


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"limit": 1001}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"start_time": "yesterday"}, "start_time"),
        ({"start_time": "2026-06-01T00:00:00Z", "end_time": "2026-05-01T00:00:00Z"}, "start_time"),
        ({"result": "MAYBE"}, "result"),
        ({"cursor": "not-a-cursor"}, "cursor"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(served, params, parameter):
    status, body = search(served, **params)
    assert status == 400 and body["parameter"] == parameter, body


def test_pages_cover_every_record_once_in_a_stable_newest_first_order(served):
    seen: list[dict] = []
    cursor = None
    total = None
    while True:
        params = {"limit": 37, **({"cursor": cursor} if cursor else {})}
        status, body = search(served, **params)
        assert status == 200
        total = body["total_records"]
        seen.extend(body["records"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == total > 37
    assert len({r["event_id"] for r in seen}) == total
    keys = [(r["occurred_at"], r["event_id"]) for r in seen]
    assert keys == sorted(keys, reverse=True)
    assert all(r["tenant_id"] == "t_1000" for r in seen)
    first = seen[0]
    assert set(first) >= {
        "event_id",
        "actor",
        "action",
        "resource",
        "result",
        "client_ip",
        "occurred_at",
        "block_index",
        "block_hash",
        "leaf_index",
        "log_id",
    }
    assert set(first["actor"]) >= {"id", "type", "email_hash"}
    assert first["retention"]["class"] in {"billing", "security", "admin-view", "session", "standard"}


def ids(records: list[dict]) -> set[str]:
    return {r["event_id"] for r in records}


def test_filters_and_time_window_are_applied_and_values_never_reach_the_sql(served):
    _, everything = search(served, limit=1000)
    records = everything["records"]
    assert len(records) == everything["total_records"] > 5  # one page holds all of the tenant's events
    sample = records[5]

    status, body = search(served, actor_id=sample["actor"]["id"], action=sample["action"], limit=1000)
    matching = [r for r in records if r["actor"]["id"] == sample["actor"]["id"] and r["action"] == sample["action"]]
    assert status == 200 and sample in matching
    assert ids(body["records"]) == ids(matching)  # exactly those: none missing, none other

    # [start_time, end_time): the sample's own time is in a window that starts there ...
    status, body = search(served, start_time=sample["occurred_at"], end_time="2100-01-01", limit=1000)
    later = [r for r in records if r["occurred_at"] >= sample["occurred_at"]]
    assert status == 200 and sample in later and len(later) < len(records)
    assert ids(body["records"]) == ids(later)
    # ... and not in one that ends there.
    status, body = search(served, start_time="2000-01-01", end_time=sample["occurred_at"], limit=1000)
    earlier = [r for r in records if r["occurred_at"] < sample["occurred_at"]]
    assert status == 200 and earlier and sample not in earlier
    assert ids(body["records"]) == ids(earlier)

    status, body = search(served, actor_id="x' OR '1'='1", limit=5)
    assert status == 200 and body["total_records"] == 0 and body["records"] == []


def test_resource_history_is_that_resource_newest_first(served):
    _, everything = search(served, limit=1000)
    resource = everything["records"][0]["resource"]
    path = f"/api/v1/tenants/t_1000/resources/{quote(resource['type'])}/{quote(resource['id'])}/history"
    status, body, _ = served.get(path, key(served, "t_1000"))
    assert status == 200 and body["records"]
    assert all(r["resource"] == resource for r in body["records"])
    times = [r["occurred_at"] for r in body["records"]]
    assert times == sorted(times, reverse=True)


def test_the_proof_endpoint_hands_out_a_bundle_that_verifies_offline(served, tmp_path):
    _, everything = search(served, limit=3)
    event = everything["records"][2]
    status, body, _ = served.get(f"/api/v1/tenants/t_1000/audit-logs/{event['event_id']}/proof", key(served, "t_1000"))
    assert status == 200
    verifier = Verifier.from_key(body["verifier_key"])
    verify_proof(body["proof"], verifier, entry=body["canonical"].encode())
    (tmp_path / "entry.json").write_bytes(body["canonical"].encode())
    (tmp_path / "proof.tlog-proof").write_text(body["proof"])
    (tmp_path / "key.vkey").write_text(body["verifier_key"])
    done = served.run(*AUDITLOG, "verify-proof", str(tmp_path), "--key", str(tmp_path / "key.vkey"))
    assert done.stdout.startswith("verified")
    status, _, _ = served.get("/api/v1/tenants/t_1000/audit-logs/evt_nope/proof", key(served, "t_1000"))
    assert status == 404


def test_checkpoint_and_consistency_proofs_verify(served):
    log_id = "audit.events.p0"
    status, cp, _ = served.get(f"/api/v1/logs/{log_id}/checkpoint", key(served, "t_1001"))
    assert status == 200
    verifier = Verifier.from_key(cp["verifier_key"])
    head = open_checkpoint(cp["note"], verifier, origin=cp["origin"])
    assert head.size == cp["size"] == 300
    status, body, _ = served.get(f"/api/v1/logs/{log_id}/consistency?from=117&to={head.size}", key(served, "t_1000"))
    assert status == 200
    proof = [base64.b64decode(h) for h in body["proof"]]
    new_root = base64.b64decode(body["new_root"])
    assert new_root == head.root
    verify_consistency(117, head.size, proof, base64.b64decode(body["old_root"]), new_root)
    status, body, _ = served.get(f"/api/v1/logs/{log_id}/consistency?from=200&to=100", key(served, "t_1000"))
    assert status == 400 and body["parameter"] == "from"


def test_export_is_a_zip_with_a_signed_manifest(served, tmp_path):
    status, body, headers = served.get("/api/v1/tenants/t_1000/export?format=csv", key(served, "t_1000"))
    assert status == 200 and headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        zf.extractall(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["MANIFEST.note", "events.csv"]
    vkey = served.settings.verifier_key_file
    done = served.run(*AUDITLOG, "verify-export", str(tmp_path), "--key", str(vkey))
    assert "verified: 1 file(s)" in done.stdout
    _, everything = search(served, limit=1)
    rows = (tmp_path / "events.csv").read_text().count("\n") - 1
    assert rows == everything["total_records"]


def test_every_read_is_recorded_as_an_audit_event(served):
    outbox = served.settings.home / "api" / "read-audit.sqlite"
    before = sqlite3.connect(outbox).execute("SELECT count(*) FROM auditlog_outbox").fetchone()[0]
    search(served, limit=2, action="user.login")
    rows = (
        sqlite3.connect(outbox)
        .execute("SELECT tenant_id, payload FROM auditlog_outbox ORDER BY id DESC LIMIT 1")
        .fetchall()
    )
    after = sqlite3.connect(outbox).execute("SELECT count(*) FROM auditlog_outbox").fetchone()[0]
    assert after == before + 1
    tenant, payload = rows[0]
    event = json.loads(payload)
    t1000_key_id = key(served, "t_1000").split("_")[1]
    assert tenant == "t_1000"
    assert event["actor"] == {"id": f"apikey:{t1000_key_id}", "type": "SYSTEM"}
    assert event["action"] == "audit_log.search"
    assert event["metadata"]["filters"] == {"action": "user.login"}
