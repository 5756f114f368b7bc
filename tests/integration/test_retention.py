"""Retention classes and legal holds on the real stack: SeaweedFS Object Lock, embedded chDB, Kafka.

A deployment is built under a policy whose default class lasts 40 s (billing events a year), so
retention ends while the test runs. Then, with the real commands:

- a legal hold on one tenant (an audit event in Kafka, a record in the archive, an Object Lock
  legal hold on its blocks, an exemption in ClickHouse) keeps its events through `auditlog expire`;
- everything else whose retention ended is expired: ClickHouse rows by TTL, archive blocks
  replaced by their leaf hashes, and `auditlog verify` reports them as expired by policy and passes;
- a retained event's proof still verifies offline; a held row deleted by hand is "deleted";
- `auditlog rebuild` restores from the archive; `auditlog hold --release` lets the rest expire.

    .venv/bin/python -m pytest tests/integration/test_retention.py
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from schemas.settings import REPO_ROOT, Settings
from transforms.retention import parse_time

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).with_name("retention_store.py")
AUDITLOG = [sys.executable, "-m", "runners.cli"]
SHORT_SECONDS = 40
POLICY = f"""
default = "short"

[classes]
short = "{SHORT_SECONDS}s"
long = "1y"

[[rules]]
actions = ["billing.plan.update"]
class = "long"
"""
HELD = "t_1000"
OTHER = "t_1001"


def _run(cmd: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def ok(cmd: list[str], env: dict[str, str]) -> str:
    done = _run(cmd, env)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def state(env: dict[str, str]) -> dict:
    return json.loads(ok([sys.executable, str(SCRIPT), "state"], env))


def verify(env: dict[str, str]) -> tuple[int, dict]:
    done = _run([*AUDITLOG, "verify", "--json", "--no-witness"], env)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    return done.returncode, json.loads(done.stdout)


def kafka_actions(settings: Settings, prefix: str) -> list[dict]:
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"retention-test-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([settings.topic])
    found: list[dict] = []
    idle = 0
    try:
        while idle < 5:
            message = consumer.poll(1.0)
            if message is None:
                idle += 1
                continue
            idle = 0
            value = message.value()
            if message.error() or not value or not value.startswith(b"{"):
                continue
            event = json.loads(value)
            if event.get("action", "").startswith(prefix):
                found.append(event)
    finally:
        consumer.close()
    return found


@pytest.fixture
def deployment(stack, stack_settings: Settings, tmp_path: Path) -> tuple[dict[str, str], Settings, float]:
    policy = tmp_path / "retention.toml"
    policy.write_text(POLICY)
    settings = stack_settings.replace(
        home=tmp_path / "home",
        bucket=f"retention-{time.time_ns() % 10**9}",
        origin="auditlog.test",
        retention_policy_file=str(policy),
    )
    env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(REPO_ROOT)}
    started = time.time()
    built = json.loads(ok([sys.executable, str(SCRIPT), "build"], env))
    assert built["events"] == 60
    return env, settings, started


def test_holds_keep_what_expiry_removes_and_every_proof_still_verifies(deployment, tmp_path):
    env, settings, built_at = deployment
    rc, report = verify(env)
    assert rc == 0 and report["ok"] and report["expired_by_policy"] == 0
    # Each block object is locked exactly until its longest-kept event's retention ends.
    locks = [o for k, o in state(env)["objects"].items() if "/blocks/" in k]
    assert locks
    for o in locks:  # S3 keeps retain-until dates to the second
        assert abs((parse_time(o["retain_until"]) - parse_time(o["longest_event"])).total_seconds()) < 1, o

    # A hold on one tenant, placed while every event is still retained.
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    placed = ok([*AUDITLOG, "hold", "--tenant", HELD, "--until", until, "--reason", "case 7"], env)
    assert f"on tenant {HELD} until" in placed and "archived blocks put on legal hold" in placed
    first = state(env)["rows"]
    # ... and one on a single subject of another tenant.
    subject = next(r for r in first if r["tenant"] == OTHER and r["class"] == "short")["actor"]
    placed = ok(
        [*AUDITLOG, "hold", "--tenant", OTHER, "--subject", subject, "--until", until, "--reason", "case 8"], env
    )
    assert f"on tenant {OTHER} subject {subject} until" in placed
    listed = ok([*AUDITLOG, "hold", "--list"], env)
    assert listed.count(" active ") == 2, listed
    before = state(env)
    rows = before["rows"]
    assert rows and all(r["held"] == (r["tenant"] == HELD or r["actor"] == subject) for r in rows)
    held_blocks = {(r["log_id"], r["block"]) for r in rows if r["tenant"] == HELD}
    for log_id, index in held_blocks:
        assert before["objects"][f"logs/{log_id}/blocks/{index:012d}.block"]["legal_hold"]
    # Nobody can delete a held block version, retention or not.
    log_id, index = sorted(held_blocks)[0]
    assert ok([sys.executable, str(SCRIPT), "delete-block", log_id, str(index)], env).startswith("refused")

    # Let the short class end for every event, then expire.
    time.sleep(max(0.0, built_at + SHORT_SECONDS + 3 - time.time()))
    expired = ok([*AUDITLOG, "expire"], env)
    assert "archive: expired" in expired and "expired rows removed" in expired
    after = state(env)
    by_class = {(r["tenant"], r["class"]) for r in after["rows"]}
    assert {c for t, c in by_class if t != HELD} == {"long", "short"}
    kept = [r for r in rows if r["tenant"] == HELD or r["actor"] == subject or r["class"] == "long"]
    assert {r["event_id"] for r in kept} == {r["event_id"] for r in after["rows"]}, "unheld short events must go"
    # Hash tiles are evidence: they stay, so every tree head and retained event's proof still verify.
    hash_tiles = {k for k in before["objects"] if "/tile/" in k and "/tile/entries/" not in k}
    assert hash_tiles and hash_tiles <= set(after["objects"])
    gone_blocks = [k for k in before["objects"] if "/blocks/" in k and k not in after["objects"]]
    assert gone_blocks, "some blocks held only expired, unheld events"
    for key in gone_blocks:
        assert key.replace("/blocks/", "/expired/").replace(".block", ".leaves") in after["objects"]

    rc, report = verify(env)
    assert rc == 0 and report["ok"], report
    assert report["events"] == 60 and report["expired_by_policy"] > 0
    assert sum(log["expired_by_policy"]["blocks"] for log in report["logs"]) == len(gone_blocks)

    # A retained event's proof still verifies offline, with only the public key.
    long_row = next(r for r in after["rows"] if r["class"] == "long")
    out = tmp_path / "proof"
    ok([*AUDITLOG, "proof", "--tenant", long_row["tenant"], long_row["event_id"], "--out", str(out)], env)
    ok([*AUDITLOG, "verify-proof", str(out), "--key", str(settings.verifier_key_file)], env)

    # A held row that disappears is tampering, not expiry.
    victim = next(r for r in after["rows"] if r["tenant"] == HELD and r["class"] == "short")
    ok([sys.executable, str(SCRIPT), "delete-row", HELD, victim["event_id"]], env)
    # ... and an edited copy hidden among expired rows (TTL kept off it) is not a hiding place.
    forged = next(r for r in after["rows"] if r["class"] == "long")
    ok([sys.executable, str(SCRIPT), "forge-expired", forged["tenant"], forged["event_id"]], env)
    rc, report = verify(env)
    found = sorted((f["store"], f["kind"], f["event_id"]) for log in report["logs"] for f in log["findings"])
    assert rc == 1 and found == sorted(
        [("clickhouse", "deleted", victim["event_id"]), ("clickhouse", "modified", forged["event_id"])]
    ), found
    rebuilt = ok([*AUDITLOG, "rebuild"], env)
    assert "rebuilt: 60 events" in rebuilt
    rc, report = verify(env)
    assert rc == 0 and report["ok"], report
    assert any(r["event_id"] == victim["event_id"] and r["held"] for r in state(env)["rows"])

    # Releasing the hold lets the held tenant's expired events go too.
    released = ok([*AUDITLOG, "hold", "--release", "--tenant", HELD, "--reason", "case 7 closed"], env)
    assert "released hold_" in released
    released = ok(
        [*AUDITLOG, "hold", "--release", "--tenant", OTHER, "--subject", subject, "--reason", "case 8 closed"], env
    )
    assert "released hold_" in released
    ok([*AUDITLOG, "expire"], env)
    final = state(env)
    # An entry bundle goes once every event it holds has expired (here: every partial bundle of a
    # log that starts with such events), from the bucket itself; the hash tiles still all stay.
    bundles = {k for k in before["objects"] if "/tile/entries/" in k}
    left = {k for k in final["objects"] if "/tile/entries/" in k}
    assert left < bundles, "entry bundles whose events all expired must go"
    assert hash_tiles <= set(final["objects"])
    assert {r["class"] for r in final["rows"]} == {"long"}
    for log_id, index in held_blocks:
        key = f"logs/{log_id}/blocks/{index:012d}.block"
        assert key not in final["objects"] or not final["objects"][key]["legal_hold"]
    rc, report = verify(env)
    assert rc == 0 and report["ok"], report

    # Both changes to the hold are audit events of their own.
    actions = [e["action"] for e in kafka_actions(settings, "compliance.legal_hold.")]
    assert actions.count("compliance.legal_hold.place") >= 2 and actions.count("compliance.legal_hold.release") >= 2


def test_hold_refuses_bad_requests_with_the_value(deployment):
    env, _, _ = deployment
    done = _run([*AUDITLOG, "hold", "--tenant", HELD, "--until", "2001-01-01", "--reason", "x"], env)
    assert done.returncode == 2 and "--until 2001-01-01T00:00:00.000Z is not in the future" in done.stderr
    done = _run([*AUDITLOG, "hold", "--tenant", HELD, "--until", "2099-01-01"], env)
    assert done.returncode == 2 and "--reason is missing" in done.stderr
    done = _run([*AUDITLOG, "hold", "--release", "--tenant", "t_nobody", "--reason", "x"], env)
    assert done.returncode == 1 and "no active hold on tenant t_nobody" in done.stderr
