"""A property-based fuzzer over the served OpenAPI document: no input may give a 5xx.

schemathesis reads `/openapi.json` from the query API served for real (tests/query_app.py:
uvicorn over chDB and an in-memory archive) and generates requests for every operation — valid
ones and ones that break the document's rules — sent with an admin key (which passes
authentication, so the parameters are what is tested) and with a tenant key. Every answer must
be below 500, carry a status the document declares, have the declared content type, conform to
the declared schema (400s are {"error", "parameter"}), and carry the security headers.

    .venv/bin/python -m pytest tests/unit/test_query_api_fuzz.py
    FUZZ_EXAMPLES=500 .venv/bin/python -m pytest tests/unit/test_query_api_fuzz.py   # longer
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.query_app import ServedApp, served_app

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApp]:
    with served_app(tmp_path_factory.mktemp("fuzz")) as served:
        yield served


@pytest.fixture(scope="module")
def api_schema(app: ServedApp) -> Any:
    """The document as served (a test below holds it equal to the committed api/openapi.json)."""
    return schemathesis.openapi.from_url(app.base + "/openapi.json")


def security_headers(ctx: Any, response: Any, case: Any) -> bool:
    headers = {k.lower(): v if isinstance(v, str) else ",".join(v) for k, v in response.headers.items()}
    assert "frame-ancestors 'none'" in headers.get("content-security-policy", ""), headers
    assert headers.get("x-content-type-options") == "nosniff", headers
    return True


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
COMMITTED = json.loads((Path(__file__).parents[2] / "api" / "openapi.json").read_text())
OPERATIONS = sorted(f"{method.upper()} {path}" for path, item in COMMITTED["paths"].items() for method in item)
# An export runs the Beam pipeline (~1 s): fewer examples there.
SLOW = {"GET /api/v1/tenants/{tenant_id}/export": 0.25}


def test_the_served_document_is_the_committed_one(app: ServedApp) -> None:
    status, served, _ = app.get("/openapi.json")
    assert status == 200
    assert served == COMMITTED, "regenerate: auditlog serve --print-openapi > api/openapi.json"
    assert len(OPERATIONS) == 10


# Negative cases break a parameter's rules; the API key headers take any string, so an operation
# with no other parameter (/metrics) has no negative case.
WITH_PARAMETERS = {
    f"{method.upper()} {path}"
    for path, item in COMMITTED["paths"].items()
    for method, operation in item.items()
    if any(parameter["in"] != "header" for parameter in operation.get("parameters", []))
}
CASES = [
    (label, mode)
    for label in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or label in WITH_PARAMETERS
]


@pytest.mark.parametrize("who", ["admin", "t_1000"])
@pytest.mark.parametrize(("label", "mode"), CASES)
def test_no_input_gives_a_5xx_and_every_answer_matches_the_document(
    api_schema: Any, app: ServedApp, label: str, who: str, mode: GenerationMode
) -> None:
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None, label
    key = app.keys[who]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(FUZZ, max_examples=max(5, int(EXAMPLES * SLOW.get(label, 1))))
    def fuzz(case: Any) -> None:
        case.call_and_validate(
            headers={"Authorization": f"Bearer {key}"}, checks=[*CHECKS, security_headers], timeout=120
        )

    fuzz()
