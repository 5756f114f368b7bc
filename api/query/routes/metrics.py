"""Operational gauges for a monitoring system (Prometheus text format), for admin keys.

Today: each configured witness's lag on each log (pipelines/witnessing/lag.py `lag_metrics`), read
from the archive at most every 15 s. A scrape names no tenant's data, so unlike the reads of
events it is not itself written to the audit log (a scraper every 15 s would fill it).
"""

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from api.query.deps import Caller, ServicesDep
from api.query.errors import ERRORS, NotFound

router = APIRouter()

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorBody"}


@router.get(
    "/metrics",
    tags=["operations"],
    response_class=PlainTextResponse,
    # The gauges are text; a refusal is the API's one JSON error shape, as on every other route.
    responses={
        code: {"description": spec["description"], "content": {"application/json": {"schema": ERROR_SCHEMA}}}
        for code, spec in ERRORS.items()
    }
    | {
        403: {"description": "the key lacks the admin scope", "content": {"application/json": {"schema": ERROR_SCHEMA}}}
    },
)
def metrics(who: Caller, services: ServicesDep) -> PlainTextResponse:
    """Each witness's lag on each log as Prometheus gauges (`auditlog_witness_*`); an admin key is needed."""
    who.require("admin")
    if services.metrics is None:
        raise NotFound("this server keeps no metrics (it was started without an archive)")
    return PlainTextResponse(services.metrics(), media_type=PROMETHEUS_TEXT)
