"""The Compliance UI in headless Chromium (Debian's chromium, driven by playwright-core from npm).

The browser loads the UI from `auditlog serve`, searches, opens an event and verifies its
inclusion proof and checkpoint signature itself (WebCrypto SHA-256 and Ed25519): "verified".
Then the event's row is rewritten in ClickHouse; after a reload the same page says "not verified".

    .venv/bin/python -m pytest tests/integration/test_ui_browser.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.served import ServedDeployment

pytestmark = pytest.mark.integration

BROWSER_DIR = Path(__file__).resolve().parents[1] / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


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
def served(stack, stack_settings, tmp_path_factory, browser_ready) -> Iterator[ServedDeployment]:
    deployment = ServedDeployment(stack_settings, tmp_path_factory.mktemp("served-ui"), "ui-browser")
    deployment.build()
    deployment.start()
    try:
        yield deployment
    finally:
        deployment.stop()


def test_the_browsers_own_verifier_on_real_and_tampered_bundles():
    done = _node("--test", str(BROWSER_DIR / "verify_test.mjs"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def _event_at(served: ServedDeployment, admin: str, log_id: str, leaf: int) -> dict:
    for tenant in ("t_1000", "t_1001", "t_1002"):
        status, body, _ = served.get(f"/api/v1/tenants/{tenant}/audit-logs?limit=1000", admin)
        assert status == 200
        for record in body["records"]:
            if record["log_id"] == log_id and record["leaf_index"] == leaf:
                return record
    raise AssertionError(f"no event at {log_id} leaf {leaf}")


def ui_check(served: ServedDeployment, key: str, tenant: str, event_id: str, expect: str) -> dict:
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

    served.stop()  # the server holds embedded chDB; the tampering needs it
    served.tamper("rewrite_event")
    served.start()
    seen = ui_check(served, key, tenant, event["event_id"], "not-verified")
    assert seen["state"] == "not-verified" and seen["text"].startswith("not verified")
