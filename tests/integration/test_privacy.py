"""Erasure by crypto-shredding and master-key rotation, on a real deployment (SeaweedFS, chDB, Kafka).

.venv/bin/python -m pytest tests/integration/test_privacy.py
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest

from tests.integration.served import AUDITLOG, ServedDeployment, serving

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(stack, stack_settings, tmp_path_factory) -> Iterator[ServedDeployment]:
    with serving(
        stack_settings, tmp_path_factory.mktemp("served-privacy"), "privacy", admin=("--admin",)
    ) as deployment:
        yield deployment


def records(served: ServedDeployment, tenant: str, **params: object) -> tuple[int, list[dict]]:
    status, body, _ = served.get(
        f"/api/v1/tenants/{tenant}/audit-logs?{urlencode({'limit': 1000, **params})}",
        served.keys["admin"],
    )
    assert status == 200, body
    return body["total_records"], body["records"]


def consume_erasures(served: ServedDeployment, subject: str) -> list[dict]:
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": served.settings.kafka_bootstrap,
            "group.id": f"privacy-test-{subject}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([served.settings.topic])
    found: list[dict] = []
    try:
        for _ in range(60):
            message = consumer.poll(1.0)
            if message is None:
                if found:
                    break
                continue
            if message.error() or not message.value() or not message.value().startswith(b"{"):
                continue
            event = json.loads(message.value())
            if event.get("action") == "privacy.subject.erase" and event["resource"]["id"] == subject:
                found.append(event)
    finally:
        consumer.close()
    return found


def test_erasing_a_subject_hides_their_pii_everywhere_and_every_proof_still_verifies(served, tmp_path):
    _, before = records(served, "t_1000")
    person = next(r for r in before if r["actor"]["type"] == "USER" and "@" in (r["actor"]["email"] or ""))
    subject, email = person["actor"]["id"], person["actor"]["email"]
    theirs = [r for r in before if r["actor"]["id"] == subject]
    total, found = records(served, "t_1000", actor_email=email)
    assert total == len(theirs) > 0 and {r["actor"]["id"] for r in found} == {subject}

    erased = served.run(*AUDITLOG, "erase", "--tenant", "t_1000", "--subject", subject, "--reason", "GDPR ticket 42")
    assert f"erased {subject} of t_1000" in erased.stdout
    again = served.run(*AUDITLOG, "erase", "--tenant", "t_1000", "--subject", subject, "--reason", "again")
    assert "already erased" in again.stdout
    events = consume_erasures(served, subject)
    assert len(events) == 1 and events[0]["metadata"] == {"reason": "GDPR ticket 42"}

    _, after = records(served, "t_1000")
    for r in after:
        if r["actor"]["id"] == subject:
            assert r["actor"]["email"] == r["actor"]["name"] == "[erased]"
            assert r.get("client_ip") in ("[erased]", None) and email not in json.dumps(r)
        elif r["actor"]["type"] == "USER":
            assert "@" in r["actor"]["email"]  # nobody else's PII went with it
    total, found = records(served, "t_1000", actor_email=email)
    assert total == 0 and found == []

    status, body, _ = served.get("/api/v1/tenants/t_1000/export?format=jsonl", served.keys["admin"])
    assert status == 200
    exported = zipfile.ZipFile(io.BytesIO(body)).read("events.jsonl").decode()
    assert email not in exported and "[erased]" in exported

    event_id = theirs[0]["event_id"]
    status, proof, _ = served.get(f"/api/v1/tenants/t_1000/audit-logs/{event_id}/proof", served.keys["admin"])
    assert status == 200 and email not in proof["canonical"]
    (tmp_path / "entry.json").write_text(proof["canonical"])
    (tmp_path / "proof.tlog-proof").write_text(proof["proof"])
    (tmp_path / "k.vkey").write_text(proof["verifier_key"])
    assert served.run(*AUDITLOG, "verify-proof", str(tmp_path), "--key", str(tmp_path / "k.vkey")).returncode == 0

    served.stop()  # verify opens the embedded chDB the server holds
    try:
        done = served.run(*AUDITLOG, "verify", "--json", check=False)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert json.loads(done.stdout)["ok"]
    finally:
        served.start()


def test_the_master_key_rotates_without_losing_a_key_and_a_retired_key_is_refused(served, tmp_path):
    _, before = records(served, "t_1001")
    new_key = tmp_path / "master-2.key"
    served.run(*AUDITLOG, "keys", "master", "generate", "--out", str(new_key))
    master_file = served.settings.keys_dir / "master.key"
    old_text = master_file.read_text()
    rotated = served.run(*AUDITLOG, "keys", "master", "rotate", "--new", str(new_key))
    old_id = rotated.stdout.split("auditlog keys master retire ")[1].split()[0]
    # The running server still holds only the old key, and keeps answering with PII opened.
    _, during = records(served, "t_1001")
    assert during == before
    master_file.write_text(new_key.read_text() + old_text)  # new first, old second
    served.stop()
    served.start()
    _, after_restart = records(served, "t_1001")
    assert after_restart == before
    served.run(*AUDITLOG, "keys", "master", "retire", old_id)
    master_file.write_text(old_text)  # only the retired key: refused, never silent plaintext
    served.stop()
    refused = served.run(*AUDITLOG, "erase", "--tenant", "t_1001", "--subject", "x", "--reason", "r", check=False)
    assert refused.returncode == 2 and "retired" in refused.stderr
    master_file.write_text(new_key.read_text())
    served.start()
    _, final = records(served, "t_1001")
    assert final == before
