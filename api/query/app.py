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
"""

import base64
import io
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.keys import ApiKeyStore, AuthenticationError, PermissionDeniedError, Principal, presented_key_id
from api.query.reads import MALFORMED, ReadAuditor
from api.query.store import QueryError, QueryStore, Search
from pipelines.prover import EventNotFound, Prover
from transforms.checkpoint import open_checkpoint
from transforms.errors import VerificationError

UI_DIR = Path(__file__).with_name("ui")
API_VERSION = "1"


@dataclass
class Services:
    """Everything the routes use; `auditlog serve` builds it from the settings."""

    store: QueryStore
    prover: Prover
    apikeys: ApiKeyStore
    auditor: ReadAuditor
    archive: Any
    verifier_key: str
    origin_prefix: str
    export: Any = None  # callable(tenant, fmt, search) -> Path of a finished export dir; None disables export
    witness_keys: tuple[str, ...] = ()  # the configured witnesses' cosignature/v1 verifier keys


class NotFound(LookupError):
    pass


class ErrorBody(BaseModel):
    """Every answer that is not 2xx: what was wrong, and for a 400 which parameter."""

    error: str
    parameter: str | None = None


# The rules of path parameters: the event schema's (schemas/audit_event.schema.json) and the archive's.
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
EVENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
RESOURCE_TYPE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
LOG_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._=-]{0,127}$"  # and no '..' (check_log_id)
MAX_TREE_SIZE = 2**53 - 1  # exact in JSON; far beyond any log
RULES = {
    "tenant_id": "1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit",
    "event_id": "1-128 of A-Z a-z 0-9 . _ : -, starting with a letter or digit",
    "resource_type": "1-64 of A-Z a-z 0-9 _ . : -, starting with a letter or digit",
    "resource_id": "1-256 characters",
    "log_id": "1-128 of A-Z a-z 0-9 . _ = -, starting with a letter or digit, no '..'",
    "from": f"a whole number 0..{MAX_TREE_SIZE}",
    "to": f"a whole number 1..{MAX_TREE_SIZE}",
}
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "a parameter is wrong; `parameter` names it"},
    401: {"model": ErrorBody, "description": "no API key, or not a valid one"},
    403: {"model": ErrorBody, "description": "another tenant's data, or the key lacks the read scope"},
    404: {"model": ErrorBody, "description": "not found"},
    409: {"model": ErrorBody, "description": "the index disagrees with the signed log"},
}

API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
UI_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class SecurityHeaders:
    """Adds CSP (frame-ancestors 'none'), X-Frame-Options and X-Content-Type-Options to every answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        csp = UI_CSP if path == "/" or path.startswith("/ui/") else API_CSP

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _SECURITY_HEADER_NAMES]
                headers += [
                    (b"content-security-policy", csp.encode()),
                    (b"x-frame-options", b"DENY"),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


_SECURITY_HEADER_NAMES = {b"content-security-policy", b"x-frame-options", b"x-content-type-options", b"referrer-policy"}


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
    app.add_middleware(SecurityHeaders)

    # ---- errors: one JSON shape, {"error": ..., "parameter"?: ...}

    @app.exception_handler(QueryError)
    async def bad_parameter(_: Request, exc: QueryError) -> JSONResponse:
        return JSONResponse({"error": str(exc), "parameter": exc.parameter}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = first.get("loc") or ("", "?")
        name = str(loc[-1])
        value = first.get("input")
        shown = "" if value is None or isinstance(value, dict) else f" {str(value)[:64]!r}"
        rule = RULES.get(name, first.get("msg", "invalid"))
        if first.get("type") == "missing":
            message = f"{name} is required ({rule})"
        else:
            message = f"{name}{shown} is not valid: {rule}"
        return JSONResponse({"error": message, "parameter": name}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    def refused(request: Request, status: int, exc: Exception) -> None:
        """Records a 401/403 (bounded; see api/query/reads.py); never stops the answer itself."""
        try:
            header = request.headers.get("authorization") or request.headers.get("x-api-key")
            key_id = presented_key_id(header) if header else None
            if header and key_id is None:
                key_id = MALFORMED
            route = request.scope.get("route")
            what = getattr(getattr(route, "endpoint", None), "__name__", "request")
            tenant = request.path_params.get("tenant_id")
            services.auditor.record_refusal(key_id, what, tenant, status, str(exc), request.url.path)
        except Exception:  # noqa: BLE001 - the refusal is answered even if its record fails
            import logging

            logging.getLogger(__name__).exception("query API: a refusal could not be recorded")

    @app.exception_handler(AuthenticationError)
    async def unauthenticated(request: Request, exc: AuthenticationError) -> JSONResponse:
        refused(request, 401, exc)
        return JSONResponse({"error": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(PermissionDeniedError)
    async def forbidden(request: Request, exc: PermissionDeniedError) -> JSONResponse:
        refused(request, 403, exc)
        return JSONResponse({"error": str(exc)}, status_code=403)

    @app.exception_handler(LookupError)
    async def not_found(_: Request, exc: LookupError) -> JSONResponse:
        return JSONResponse({"error": str(exc.args[0]) if exc.args else "not found"}, status_code=404)

    @app.exception_handler(VerificationError)
    async def disagreement(_: Request, exc: VerificationError) -> JSONResponse:
        return JSONResponse(
            {"error": f"the index disagrees with the signed log: {exc}; run `auditlog verify`"}, status_code=409
        )

    # ---- auth

    def principal(
        authorization: Annotated[str | None, Header()] = None,
        x_api_key: Annotated[str | None, Header()] = None,
    ) -> Principal:
        who = services.apikeys.authenticate(authorization or x_api_key)
        who.require("read")
        return who

    Caller = Annotated[Principal, Depends(principal)]

    def tenant_reader(tenant_id: Annotated[str, PathParam()], who: Caller) -> Principal:
        who.authorize(tenant_id)
        return who

    Tenant = Annotated[str, PathParam(pattern=TENANT_PATTERN, description=RULES["tenant_id"])]
    EventId = Annotated[str, PathParam(pattern=EVENT_ID_PATTERN, description=RULES["event_id"])]
    LogId = Annotated[str, PathParam(pattern=LOG_ID_PATTERN, description=RULES["log_id"])]

    TenantCaller = Annotated[Principal, Depends(tenant_reader)]

    def audit(who: Principal, what: str, tenant: str | None, rtype: str, rid: str, **details: Any) -> None:
        services.auditor.record(
            who.key_id, what, tenant, rtype, rid, {k: v for k, v in details.items() if v is not None}
        )

    # ---- routes

    filters_doc = "exact match; combine freely"

    @app.get("/api/v1/tenants/{tenant_id}/audit-logs", tags=["search"])
    def search(
        tenant_id: Tenant,
        who: TenantCaller,
        actor_id: Annotated[str | None, Query(description=filters_doc)] = None,
        action: Annotated[str | None, Query(description=filters_doc)] = None,
        resource_id: Annotated[str | None, Query(description=filters_doc)] = None,
        resource_type: Annotated[str | None, Query(description=filters_doc)] = None,
        result: Annotated[str | None, Query(description="SUCCESS or FAILURE")] = None,
        actor_email: Annotated[str | None, Query(description="the actor's email (matched by keyed hash)")] = None,
        start_time: Annotated[str | None, Query(description="ISO-8601, included")] = None,
        end_time: Annotated[str | None, Query(description="ISO-8601, excluded")] = None,
        limit: Annotated[str | None, Query(description="1..1000, default 100")] = None,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    ) -> dict[str, Any]:
        """A tenant's events, newest first, filtered; pages follow `next_cursor`."""
        params = dict(
            actor_id=actor_id,
            action=action,
            resource_id=resource_id,
            resource_type=resource_type,
            result=result,
            actor_email=actor_email,
            start_time=start_time,
            end_time=end_time,
            limit=limit,
            cursor=cursor,
        )
        query = Search.parse(tenant_id, params)
        page = services.store.search(query)
        audit(who, "search", tenant_id, "AUDIT_LOG", tenant_id, returned=len(page.records), **query_details(query))
        return {
            "tenant_id": tenant_id,
            "total_records": page.total,
            "records": page.records,
            "next_cursor": page.next_cursor,
        }

    @app.get("/api/v1/tenants/{tenant_id}/resources/{resource_type}/{resource_id:path}/history", tags=["search"])
    def history(
        tenant_id: Tenant,
        resource_type: Annotated[str, PathParam(pattern=RESOURCE_TYPE_PATTERN, description=RULES["resource_type"])],
        resource_id: Annotated[
            str, PathParam(min_length=1, max_length=256, description=RULES["resource_id"] + "; may hold '/'")
        ],
        who: TenantCaller,
        limit: Annotated[str | None, Query(description="1..1000, default 100")] = None,
        cursor: Annotated[str | None, Query()] = None,
    ) -> dict[str, Any]:
        """One resource's history, newest first."""
        query = Search.parse(
            tenant_id, {"resource_type": resource_type, "resource_id": resource_id, "limit": limit, "cursor": cursor}
        )
        page = services.store.search(query)
        audit(who, "history", tenant_id, resource_type, resource_id, returned=len(page.records))
        return {
            "tenant_id": tenant_id,
            "resource": {"type": resource_type, "id": resource_id},
            "total_records": page.total,
            "records": page.records,
            "next_cursor": page.next_cursor,
        }

    @app.get("/api/v1/tenants/{tenant_id}/audit-logs/{event_id}", tags=["events"])
    def event(tenant_id: Tenant, event_id: EventId, who: TenantCaller) -> dict[str, Any]:
        """One event's record."""
        record = services.store.event(tenant_id, event_id)
        audit(who, "event", tenant_id, "AUDIT_EVENT", event_id, found=record is not None)
        if record is None:
            raise NotFound(f"no event {event_id!r} for tenant {tenant_id!r}")
        return {"record": record}

    @app.get("/api/v1/tenants/{tenant_id}/audit-logs/{event_id}/proof", tags=["evidence"])
    def proof(tenant_id: Tenant, event_id: EventId, who: TenantCaller) -> dict[str, Any]:
        """The event's canonical bytes and a tlog-proof@v1 bundle, checkable offline with the verifier key."""
        found = services.store.clickhouse.find_event(tenant_id, event_id)
        audit(who, "proof", tenant_id, "AUDIT_EVENT", event_id, found=found is not None)
        if found is None:
            raise EventNotFound(f"no event {event_id!r} for tenant {tenant_id!r}")
        # The stored bytes are handed out as they are: the client checks them against the proof.
        p = services.prover.proof_at(
            tenant_id, event_id, found["log_id"], found["leaf_index"], found["canonical"], check=False
        )
        return {
            "event_id": event_id,
            "tenant_id": tenant_id,
            "log_id": p.log_id,
            "leaf_index": p.leaf_index,
            "canonical": p.canonical.decode("utf-8"),
            "proof": p.text,
            "checkpoint": {"size": p.checkpoint.size, "root": base64.b64encode(p.checkpoint.root).decode()},
            "verifier_key": services.verifier_key,
            "witness_keys": list(services.witness_keys),
            "origin": f"{services.origin_prefix}/{p.log_id}",
        }

    @app.get("/api/v1/logs/{log_id}/checkpoint", tags=["evidence"])
    def checkpoint(log_id: LogId, who: Caller) -> dict[str, Any]:
        """The log's newest signed checkpoint (C2SP signed note), from the WORM archive."""
        check_log_id(log_id)
        audit(who, "checkpoint", who.tenant_id, "AUDIT_LOG", log_id)
        latest = services.archive.latest_checkpoint(log_id)
        if latest is None:
            raise NotFound(f"log {log_id!r} has no signed checkpoint")
        origin = f"{services.origin_prefix}/{log_id}"
        body = open_checkpoint(latest[1], services.prover.verifier, origin=origin)
        return {
            "log_id": log_id,
            "origin": origin,
            "size": body.size,
            "root": base64.b64encode(body.root).decode(),
            "note": latest[1],
            "verifier_key": services.verifier_key,
            "witness_keys": list(services.witness_keys),
        }

    @app.get("/api/v1/logs/{log_id}/consistency", tags=["evidence"])
    def consistency(
        log_id: LogId,
        who: Caller,
        from_size: Annotated[int, Query(alias="from", ge=0, le=MAX_TREE_SIZE, description="the older tree size")],
        to_size: Annotated[int, Query(alias="to", ge=1, le=MAX_TREE_SIZE, description="the newer tree size")],
    ) -> dict[str, Any]:
        """RFC 9162 consistency proof between two tree sizes, with both roots and the covering checkpoint."""
        check_log_id(log_id)
        if from_size > to_size:
            raise QueryError("from", f"from {from_size} is larger than to {to_size}")
        audit(who, "consistency", who.tenant_id, "AUDIT_LOG", log_id, from_size=from_size, to_size=to_size)
        tree, note = services.prover.tree_for(log_id, to_size)
        return {
            "log_id": log_id,
            "from": from_size,
            "to": to_size,
            "old_root": base64.b64encode(tree.root(from_size)).decode(),
            "new_root": base64.b64encode(tree.root(to_size)).decode(),
            "proof": [base64.b64encode(h).decode() for h in tree.consistency_proof(from_size, to_size)],
            "checkpoint": note,
        }

    @app.get(
        "/api/v1/tenants/{tenant_id}/export",
        tags=["export"],
        response_class=Response,
        responses={200: {"content": {"application/zip": {}}, "description": "the zip"}},
    )
    def export(
        tenant_id: Tenant,
        who: TenantCaller,
        format: Annotated[str, Query(description="csv, jsonl or parquet")] = "jsonl",  # noqa: A002
        actor_id: Annotated[str | None, Query()] = None,
        action: Annotated[str | None, Query()] = None,
        resource_id: Annotated[str | None, Query()] = None,
        resource_type: Annotated[str | None, Query()] = None,
        result: Annotated[str | None, Query()] = None,
        start_time: Annotated[str | None, Query()] = None,
        end_time: Annotated[str | None, Query()] = None,
    ) -> Response:
        """A zip of events.<format> and its signed MANIFEST.note (check it with `auditlog verify-export`)."""
        if format not in ("csv", "jsonl", "parquet"):
            raise QueryError("format", f"format {format!r} must be csv, jsonl or parquet")
        params = dict(
            actor_id=actor_id,
            action=action,
            resource_id=resource_id,
            resource_type=resource_type,
            result=result,
            start_time=start_time,
            end_time=end_time,
        )
        query = Search.parse(tenant_id, params)
        if services.export is None:
            raise NotFound("exports are not enabled on this server")
        audit(who, "export", tenant_id, "AUDIT_LOG", tenant_id, format=format, **query_details(query))
        with tempfile.TemporaryDirectory(prefix="auditlog-export-") as tmp:
            out = Path(tmp) / "export"
            services.export(query, format, out)
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
                for path in sorted(out.iterdir()):
                    if path.is_file():
                        zf.write(path, path.name)
        name = f"auditlog-{tenant_id}-export.zip"
        return Response(
            buffer.getvalue(),
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    # ---- the UI

    @app.get("/", include_in_schema=False)
    def ui_index() -> FileResponse:
        return FileResponse(UI_DIR / "index.html", media_type="text/html")

    if UI_DIR.is_dir():
        app.mount("/ui", StaticFiles(directory=UI_DIR), name="ui")

    def openapi() -> dict[str, Any]:
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

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def check_log_id(log_id: str) -> None:
    if ".." in log_id:
        raise QueryError("log_id", f"log_id {log_id[:64]!r} is not valid: {RULES['log_id']}")


def query_details(query: Search) -> dict[str, Any]:
    # The email itself is PII: the read's audit event says only that one was searched for.
    return {
        "filters": dict(query.filters) or None,
        "by_email": True if query.actor_email else None,
        "start_time": query.start,
        "end_time": query.end,
    }
