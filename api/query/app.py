"""The query API and the Compliance UI: one FastAPI app, served by `auditlog serve` on loopback.

    GET /api/v1/tenants/{tenant_id}/audit-logs                      search (filters, time range, cursor)
    GET /api/v1/tenants/{tenant_id}/audit-logs/{event_id}           one event
    GET /api/v1/tenants/{tenant_id}/audit-logs/{event_id}/proof     canonical bytes + tlog-proof@v1
    GET /api/v1/tenants/{tenant_id}/resources/{type}/{id}/history   one resource, newest first
    GET /api/v1/tenants/{tenant_id}/export?format=csv|jsonl|parquet a zip: the file + signed MANIFEST.note
    GET /api/v1/logs/{log_id}/checkpoint                            the newest signed checkpoint
    GET /api/v1/logs/{log_id}/consistency?from=&to=                 RFC 9162 consistency proof
    GET /openapi.json   GET /   (the UI)

Keys (api/keys.py) come as `Authorization: Bearer <key>` or `x-api-key`: 401 without a valid one,
403 for another tenant's data (admin keys read every tenant). Bad parameters get 400 naming the
parameter. Every read is recorded as an audit event before the response leaves (api/query/reads.py).
"""

import base64
import io
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from api.keys import ApiKeyStore, AuthenticationError, PermissionDeniedError, Principal
from api.query.reads import ReadAuditor
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


class NotFound(LookupError):
    pass


def create_app(services: Services) -> FastAPI:
    app = FastAPI(
        title="auditlog query API",
        version=API_VERSION,
        description="Search, resource history, proofs, checkpoints and exports of a tamper-evident audit log. "
        "Every read is itself recorded as an audit event.",
    )

    # ---- errors: one JSON shape, {"error": ..., "parameter"?: ...}

    @app.exception_handler(QueryError)
    async def bad_parameter(_: Request, exc: QueryError) -> JSONResponse:
        return JSONResponse({"error": str(exc), "parameter": exc.parameter}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        name = str(first.get("loc", ["", "?"])[-1])
        return JSONResponse({"error": f"{name}: {first.get('msg', 'invalid')}", "parameter": name}, status_code=400)

    @app.exception_handler(AuthenticationError)
    async def unauthenticated(_: Request, exc: AuthenticationError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(PermissionDeniedError)
    async def forbidden(_: Request, exc: PermissionDeniedError) -> JSONResponse:
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
        return services.apikeys.authenticate(authorization or x_api_key)

    Caller = Annotated[Principal, Depends(principal)]

    def tenant_reader(tenant_id: str, who: Caller) -> Principal:
        who.authorize(tenant_id)
        return who

    TenantCaller = Annotated[Principal, Depends(tenant_reader)]

    def audit(who: Principal, what: str, tenant: str | None, rtype: str, rid: str, **details: Any) -> None:
        services.auditor.record(
            who.key_id, what, tenant, rtype, rid, {k: v for k, v in details.items() if v is not None}
        )

    # ---- routes

    filters_doc = "exact match; combine freely"

    @app.get("/api/v1/tenants/{tenant_id}/audit-logs", tags=["search"])
    def search(
        tenant_id: str,
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

    @app.get("/api/v1/tenants/{tenant_id}/resources/{resource_type}/{resource_id}/history", tags=["search"])
    def history(
        tenant_id: str,
        resource_type: str,
        resource_id: str,
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
    def event(tenant_id: str, event_id: str, who: TenantCaller) -> dict[str, Any]:
        """One event's record."""
        record = services.store.event(tenant_id, event_id)
        audit(who, "event", tenant_id, "AUDIT_EVENT", event_id, found=record is not None)
        if record is None:
            raise NotFound(f"no event {event_id!r} for tenant {tenant_id!r}")
        return {"record": record}

    @app.get("/api/v1/tenants/{tenant_id}/audit-logs/{event_id}/proof", tags=["evidence"])
    def proof(tenant_id: str, event_id: str, who: TenantCaller) -> dict[str, Any]:
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
            "origin": f"{services.origin_prefix}/{p.log_id}",
        }

    @app.get("/api/v1/logs/{log_id}/checkpoint", tags=["evidence"])
    def checkpoint(log_id: str, who: Caller) -> dict[str, Any]:
        """The log's newest signed checkpoint (C2SP signed note), from the WORM archive."""
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
        }

    @app.get("/api/v1/logs/{log_id}/consistency", tags=["evidence"])
    def consistency(
        log_id: str,
        who: Caller,
        from_size: Annotated[int, Query(alias="from", ge=0, description="the older tree size")],
        to_size: Annotated[int, Query(alias="to", ge=1, description="the newer tree size")],
    ) -> dict[str, Any]:
        """RFC 9162 consistency proof between two tree sizes, with both roots and the covering checkpoint."""
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

    @app.get("/api/v1/tenants/{tenant_id}/export", tags=["export"], response_class=Response)
    def export(
        tenant_id: str,
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
    return app


def query_details(query: Search) -> dict[str, Any]:
    # The email itself is PII: the read's audit event says only that one was searched for.
    return {
        "filters": dict(query.filters) or None,
        "by_email": True if query.actor_email else None,
        "start_time": query.start,
        "end_time": query.end,
    }
