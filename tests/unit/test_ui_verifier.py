"""The Compliance UI's in-browser verifier (api/query/ui/verify.js) under node's own test runner.

No services and no browser: tests/browser/verify_test.mjs runs in node against committed proof
bundles. The checks in a real browser, against a served deployment, are
tests/integration/test_ui_browser.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from schemas.settings import REPO_ROOT

TEST_FILE = REPO_ROOT / "tests" / "browser" / "verify_test.mjs"


def test_the_browsers_own_verifier_on_real_and_tampered_bundles() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is needed (make setup installs it from Debian)", pytrace=False)
    done = subprocess.run([node, "--test", str(TEST_FILE)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    passed = re.search(r"^# pass (\d+)$", done.stdout, re.M)
    assert passed and int(passed[1]) > 0, done.stdout[-3000:]  # node ran tests, and they passed
