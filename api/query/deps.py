"""What the query API's routes depend on: the services `auditlog serve` builds, the caller, the audit.

`create_app` (api/query/app.py) keeps the `Services` in `app.state.services`; routes take them
as a FastAPI dependency (`ServicesDep`), and the caller as `Caller` (any tenant the key may read)
or `TenantCaller` (the path's tenant, checked).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi import Path as PathParam

from api.keys import ApiKeyStore, Principal
from api.query.reads import ReadAuditor
from api.query.store import QueryStore, Search
from pipelines.prover import Prover


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
    metrics: Callable[[], str] | None = None  # Prometheus text for /metrics (pipelines.witnessing.LagMetrics)


def services_of(request: Request) -> Services:
    """The `Services` of the app that took `request` (set by `create_app`)."""
    services: Services = request.app.state.services
    return services


async def get_services(request: Request) -> Services:  # async: no I/O, so no trip to the thread pool
    return services_of(request)


ServicesDep = Annotated[Services, Depends(get_services)]


# ---- auth
#
# Both are async although they call synchronous code: a key's check is a hash and a dict lookup
# (a SQLite point read on a cache miss), and a sync dependency would cost each request a trip to
# the thread pool and back (two for TenantCaller), more than the check itself.


async def principal(
    services: ServicesDep,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> Principal:
    who = services.apikeys.authenticate(authorization or x_api_key)
    who.require("read")
    return who


Caller = Annotated[Principal, Depends(principal)]


async def tenant_reader(tenant_id: Annotated[str, PathParam()], who: Caller) -> Principal:
    who.authorize(tenant_id)
    return who


TenantCaller = Annotated[Principal, Depends(tenant_reader)]


# ---- every read is an audit event


def audit(
    services: Services, who: Principal, what: str, tenant: str | None, rtype: str, rid: str, **details: Any
) -> None:
    services.auditor.record(who.key_id, what, tenant, rtype, rid, {k: v for k, v in details.items() if v is not None})


def query_details(query: Search) -> dict[str, Any]:
    # The email itself is PII: the read's audit event says only that one was searched for.
    return {
        "filters": dict(query.filters) or None,
        "by_email": True if query.actor_email else None,
        "start_time": query.start,
        "end_time": query.end,
    }
