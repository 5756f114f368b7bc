"""A tenant's events as a zip: events.<format> and its signed MANIFEST.note."""

import io
import tempfile
import zipfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from api.query.deps import ServicesDep, TenantCaller, audit, query_details
from api.query.errors import NotFound
from api.query.params import Tenant
from api.query.store import QueryError, Search

router = APIRouter()


@router.get(
    "/api/v1/tenants/{tenant_id}/export",
    tags=["export"],
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}, "description": "the zip"}},
)
def export(
    tenant_id: Tenant,
    who: TenantCaller,
    services: ServicesDep,
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
    audit(services, who, "export", tenant_id, "AUDIT_LOG", tenant_id, format=format, **query_details(query))
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
