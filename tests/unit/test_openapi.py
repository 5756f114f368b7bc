"""The committed OpenAPI document (api/openapi.json) is what `auditlog serve --print-openapi` prints.

No services: the app is built, not served.
"""

from __future__ import annotations

import json
import subprocess
import sys

from schemas.settings import REPO_ROOT


def test_the_committed_openapi_document_is_current() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "runners.cli", "serve", "--print-openapi"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    committed = json.loads((REPO_ROOT / "api" / "openapi.json").read_text())
    assert printed["paths"], "the printed document lists no paths"
    assert printed == committed, "regenerate: auditlog serve --print-openapi > api/openapi.json"
