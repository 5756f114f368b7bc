"""Reads of the search index: a tenant's events, one resource's history, one event."""

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi import Path as PathParam

from api.query.deps import ServicesDep, TenantCaller, audit, query_details
from api.query.errors import NotFound
from api.query.params import RESOURCE_TYPE_PATTERN, RULES, EventId, Tenant
from api.query.store import Search

router = APIRouter()

filters_doc = "exact match; combine freely"


@router.get("/api/v1/tenants/{tenant_id}/audit-logs", tags=["search"])
def search(
    tenant_id: Tenant,
    who: TenantCaller,
    services: ServicesDep,
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
    audit(
        services, who, "search", tenant_id, "AUDIT_LOG", tenant_id, returned=len(page.records), **query_details(query)
    )
    return {
        "tenant_id": tenant_id,
        "total_records": page.total,
        "records": page.records,
        "next_cursor": page.next_cursor,
    }


@router.get("/api/v1/tenants/{tenant_id}/resources/{resource_type}/{resource_id:path}/history", tags=["search"])
def history(
    tenant_id: Tenant,
    resource_type: Annotated[str, PathParam(pattern=RESOURCE_TYPE_PATTERN, description=RULES["resource_type"])],
    resource_id: Annotated[
        str, PathParam(min_length=1, max_length=256, description=RULES["resource_id"] + "; may hold '/'")
    ],
    who: TenantCaller,
    services: ServicesDep,
    limit: Annotated[str | None, Query(description="1..1000, default 100")] = None,
    cursor: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    """One resource's history, newest first."""
    query = Search.parse(
        tenant_id, {"resource_type": resource_type, "resource_id": resource_id, "limit": limit, "cursor": cursor}
    )
    page = services.store.search(query)
    audit(services, who, "history", tenant_id, resource_type, resource_id, returned=len(page.records))
    return {
        "tenant_id": tenant_id,
        "resource": {"type": resource_type, "id": resource_id},
        "total_records": page.total,
        "records": page.records,
        "next_cursor": page.next_cursor,
    }


@router.get("/api/v1/tenants/{tenant_id}/audit-logs/{event_id}", tags=["events"])
def event(tenant_id: Tenant, event_id: EventId, who: TenantCaller, services: ServicesDep) -> dict[str, Any]:
    """One event's record."""
    record = services.store.event(tenant_id, event_id)
    audit(services, who, "event", tenant_id, "AUDIT_EVENT", event_id, found=record is not None)
    if record is None:
        raise NotFound(f"no event {event_id!r} for tenant {tenant_id!r}")
    return {"record": record}
