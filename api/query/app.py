"""The query API and the Compliance UI: one FastAPI app, served by `auditlog serve` on loopback.

    GET /api/v1/tenants/{tenant_id}/audit-logs                      search (filters, time range, cursor)
    GET /api/v1/tenants/{tenant_id}/audit-logs/{event_id}           one event
    GET /api/v1/tenants/{tenant_id}/audit-logs/{event_id}/proof     canonical bytes + tlog-proof@v1
    GET /api/v1/tenants/{tenant_id}/resources/{type}/{id}/history   one resource, newest first (id may hold '/')
    GET /api/v1/tenants/{tenant_id}/export?format=csv|jsonl|parquet a zip: the file + signed MANIFEST.note
    GET /api/v1/logs/{log_id}/checkpoint                            the newest signed checkpoint
    GET /api/v1/logs/{log_id}/consistency?from=&to=                 RFC 9162 consistency proof
    GET /openapi.json   GET /   (the UI)          (/docs and /redoc are off: they load scripts from a CDN)

Keys (api/keys.py) come as `Authorization: Bearer <key>` or `x-api-key`: 401 without a valid one,
403 for another tenant's data or a key without the read scope (admin keys read every tenant).
Every 401 and 403 is recorded as a FAILURE audit event, within bounds (api/query/reads.py).
Bad parameters get 400 naming the parameter, the value and the rule; no input is a 500.
Every read is recorded as an audit event before the response leaves (api/query/reads.py).
Every answer carries Content-Security-Policy (frame-ancestors 'none'), X-Frame-Options: DENY and
X-Content-Type-Options: nosniff.

The app is put together here; its parts are modules of their own: the routes (api/query/routes/:
search, evidence, export), what they depend on (deps.py: the services, the caller, the audit),
the parameters' rules (params.py), the errors (errors.py) and the security headers (security.py).
"""

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from api.query.deps import Services
from api.query.errors import ERRORS, install_error_handlers
from api.query.routes import evidence, export, metrics, search, tiles
from api.query.security import SecurityHeaders

__all__ = ["API_VERSION", "UI_DIR", "Services", "create_app"]

UI_DIR = Path(__file__).with_name("ui")
API_VERSION = "1"


def create_app(services: Services) -> FastAPI:
    app = FastAPI(
        title="auditlog query API",
        version=API_VERSION,
        description="Search, resource history, proofs, checkpoints and exports of a tamper-evident audit log. "
        "Every read is itself recorded as an audit event, and so is every refusal (401, 403).",
        docs_url=None,  # Swagger UI and ReDoc load their scripts from a CDN: off (the CSP would block them too)
        redoc_url=None,
        responses=ERRORS,
    )
    app.state.services = services  # the routes' `ServicesDep` (api/query/deps.py)
    app.add_middleware(SecurityHeaders)
    install_error_handlers(app)
    for routes in (search, evidence, export, metrics, tiles):
        app.include_router(routes.router)
    _serve_ui(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _serve_ui(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    def ui_index() -> FileResponse:
        return FileResponse(UI_DIR / "index.html", media_type="text/html")

    if UI_DIR.is_dir():
        app.mount("/ui", StaticFiles(directory=UI_DIR), name="ui")


def _openapi(app: FastAPI) -> dict[str, Any]:
    # Bad parameters are 400 (ErrorBody), not FastAPI's 422: drop what FastAPI documents by default.
    if app.openapi_schema is None:
        document = FastAPI.openapi(app)
        for item in document.get("paths", {}).values():
            for operation in item.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            document.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = document
    return app.openapi_schema
