"""The Compliance UI in headless Chromium (Debian's chromium, driven by playwright-core from npm).

The browser loads the UI from `auditlog serve`, searches, opens an event and verifies its
inclusion proof and checkpoint signature itself (WebCrypto SHA-256 and Ed25519): "verified".
Then the event's row is rewritten in ClickHouse: after a reload the page still shows and verifies
the logged bytes (the proof's bytes come from the log's entry bundle, not from the index) and says
the index's record differs from them.

Witnesses: the deployment lists one witness (AUDITLOG_WITNESSES) whose cosignatures on each log's
newest checkpoint are stored in the archive the way the publisher stores them
(pipelines/witnessing/), made with transforms/cosignature.py's signer (the reference the Go
interop test checks) rather than a running litewitness, which tests/integration/test_witness.py
covers. The browser checks them against the witness key pinned in the page; a flipped byte in a
cosignature, a wrong key for the witness, or only another witness pinned shows "not verified"
naming the witness. UI_SCREENSHOT_DIR=DIR keeps a screenshot of each page.
The verifier's own tests under node (no browser, no stack) are tests/unit/test_ui_verifier.py.

    .venv/bin/python -m pytest tests/integration/test_ui_browser.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.ingest_config import archive_spec
from pipelines.io.archive import open_archive
from pipelines.witnessing import cosigned_key
from tests.integration.served import ServedDeployment
from transforms.cosignature import CosignatureSigner, add_cosignatures, split_note

pytestmark = pytest.mark.integration

BROWSER_DIR = Path(__file__).resolve().parents[1] / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
WITNESS = "witness.test/w1"
COSIGNED_AT = 1767225600  # 2026-01-01T00:00:00Z


def _node(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", *args],
        cwd=BROWSER_DIR.parents[1],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "CHROMIUM": CHROMIUM},
    )


@pytest.fixture(scope="module")
def browser_ready() -> None:
    if shutil.which("node") is None or not Path(CHROMIUM).exists():
        pytest.fail(f"node and {CHROMIUM} are needed (make setup installs them from Debian)", pytrace=False)
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=BROWSER_DIR,
            capture_output=True,
            text=True,
            env={**os.environ, "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"},
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture(scope="module")
def witness() -> CosignatureSigner:
    return CosignatureSigner.generate(WITNESS)


def _cosign_newest_checkpoints(deployment: ServedDeployment, witness: CosignatureSigner) -> None:
    """Stores `witness`'s cosignature on each log's newest checkpoint where the publisher would."""
    archive = open_archive(**archive_spec(deployment.settings))
    for log_id in archive.list_logs():
        size = archive.list_checkpoints(log_id)[-1]
        note = archive.get_checkpoint(log_id, size)
        text, _ = split_note(note)
        cosigned = add_cosignatures(note, [witness.cosign(text, COSIGNED_AT)])
        archive.put_immutable(cosigned_key(log_id, size, witness.verifier()), cosigned.encode())


@pytest.fixture(scope="module")
def served(stack, stack_settings, tmp_path_factory, browser_ready, witness) -> Iterator[ServedDeployment]:
    deployment = ServedDeployment(stack_settings, tmp_path_factory.mktemp("served-ui"), "ui-browser")
    deployment.build()
    _cosign_newest_checkpoints(deployment, witness)
    # the API lists the witness's key beside the log's (`name URL VKEY`; nothing calls the URL here)
    deployment.env["AUDITLOG_WITNESSES"] = f"{WITNESS} http://127.0.0.1:9 {witness.verifier().encode()}"
    deployment.start()
    try:
        yield deployment
    finally:
        deployment.stop()


def _event_at(served: ServedDeployment, admin: str, log_id: str, leaf: int) -> dict:
    for tenant in ("t_1000", "t_1001", "t_1002"):
        status, body, _ = served.get(f"/api/v1/tenants/{tenant}/audit-logs?limit=1000", admin)
        assert status == 200
        for record in body["records"]:
            if record["log_id"] == log_id and record["leaf_index"] == leaf:
                return record
    raise AssertionError(f"no event at {log_id} leaf {leaf}")


def ui_check(served: ServedDeployment, key: str, tenant: str, event_id: str, expect: str, *extra: str) -> dict:
    shots = os.environ.get("UI_SCREENSHOT_DIR")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        extra += ("--screenshot", str(Path(shots) / f"ui-{time.monotonic_ns()}.png"))
    done = _node(
        str(BROWSER_DIR / "ui_check.mjs"),
        "--base",
        served.base,
        "--key",
        key,
        "--tenant",
        tenant,
        "--event",
        event_id,
        "--expect",
        expect,
        *extra,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(lines[-1])


def test_search_open_an_event_see_verified_then_tamper_and_see_not_verified(served):
    admin = served.api_key("--admin")
    event = _event_at(served, admin, "audit.events.p0", 7)
    tenant = event["tenant_id"]
    key = served.api_key("--tenant", tenant)
    seen = ui_check(served, key, tenant, event["event_id"], "verified")
    assert seen["state"] == "verified" and seen["event_id"] == event["event_id"]
    assert f"{event['retention']['class']}, kept until {event['retention']['until']}" in seen["fields"]
    # nothing pinned: the witness key the API lists is used, and its cosignature verifies
    assert seen["witness_state"] == "witnessed", seen

    assert seen["index_consistent"] == "true", seen

    served.stop()  # the server holds embedded chDB; the tampering needs it
    served.tamper("rewrite_event")
    served.start()
    # The page shows and verifies the logged bytes (read from the log's entry bundle, not from the
    # index), and says the index's rewritten record differs from them, naming the field.
    seen = ui_check(served, key, tenant, event["event_id"], "verified")
    assert seen["state"] == "verified", seen
    assert seen["index_consistent"] == "false", seen
    assert "The index record differs from the verified event" in seen["index_text"] and "result:" in seen["index_text"]


def _other_key_named(name: str) -> str:
    """A cosignature/v1 verifier key with `name` that is not the witness's."""
    return CosignatureSigner.generate(name).verifier().encode()


def test_witness_cosignatures_checked_in_the_browser_against_pinned_witness_keys(served, witness):
    admin = served.api_key("--admin")
    event = _event_at(served, admin, "audit.events.p1", 3)
    tenant, event_id = event["tenant_id"], event["event_id"]
    key = served.api_key("--tenant", tenant)
    wkey = witness.verifier().encode()

    # the witness key pinned in the page: the cosignature verifies, with its time
    seen = ui_check(served, key, tenant, event_id, "verified", "--pin-witness", wkey)
    assert seen["witness_state"] == "witnessed", seen
    assert seen["witness_text"].startswith("witnessed: 1 of 1 trusted witness cosigned this checkpoint")
    assert seen["witnesses"] == [
        {"name": WITNESS, "state": "verified", "text": f"{WITNESS} cosigned at 2026-01-01T00:00:00Z: verified"}
    ]

    # one byte of the cosignature flipped between the API and the page
    seen = ui_check(
        served, key, tenant, event_id, "not-verified", "--pin-witness", wkey, "--tamper-cosignature", WITNESS
    )
    assert seen["tampered"] == WITNESS and seen["witness_state"] == "not-witnessed", seen
    assert f"not witnessed as required ({WITNESS})" in seen["text"]
    assert f"witness {WITNESS}: its cosignature does not verify over this checkpoint" in seen["witness_text"]
    assert seen["witnesses"][0]["state"] == "not-verified"
    assert seen["witnesses"][0]["text"].startswith(f"{WITNESS} not verified: its cosignature does not verify")

    # a wrong key pinned for the witness (same name, another key): the key id check names it
    seen = ui_check(served, key, tenant, event_id, "not-verified", "--pin-witness", _other_key_named(WITNESS))
    assert seen["witness_state"] == "not-witnessed", seen
    assert seen["witnesses"][0]["name"] == WITNESS and seen["witnesses"][0]["state"] == "not-verified"
    assert f"its cosignature is by key id {witness.key_id:08x}, not the trusted key's" in seen["witnesses"][0]["text"]

    # the witness not pinned, another one is: its cosignature is unchecked, the pinned one missing
    other = "witness.test/other"
    seen = ui_check(served, key, tenant, event_id, "not-verified", "--pin-witness", _other_key_named(other))
    by_name = {w["name"]: w for w in seen["witnesses"]}
    assert by_name[other]["state"] == "missing" and f"no cosignature from {other}" in by_name[other]["text"]
    assert by_name[WITNESS]["state"] == "not-verified" and "is not pinned" in by_name[WITNESS]["text"]
    assert "only 0 of the required 1 witness cosignature(s) verify" in seen["witness_text"]

    # both pinned, one required: enough
    seen = ui_check(
        served,
        key,
        tenant,
        event_id,
        "verified",
        "--pin-witness",
        wkey,
        "--pin-witness",
        _other_key_named(other),
        "--min-witnesses",
        "1",
    )
    assert seen["witness_state"] == "witnessed", seen
    assert seen["witness_text"].startswith("witnessed: 1 of 2 trusted witnesses cosigned this checkpoint (required: 1)")
