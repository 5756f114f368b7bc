"""The query API's errors: one JSON shape, {"error": ..., "parameter"?: ...}, for every answer not 2xx.

A bad parameter is 400 naming it (not FastAPI's 422), no valid key 401, another tenant's data or no
read scope 403 (both recorded as audit events, within bounds: api/query/reads.py), not found 404,
an index that disagrees with the signed log 409.
"""

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.keys import AuthenticationError, PermissionDeniedError, presented_key_id
from api.query.deps import services_of
from api.query.params import RULES
from api.query.reads import MALFORMED
from api.query.store import QueryError
from transforms.errors import AuditlogError, VerificationError


class NotFound(AuditlogError, LookupError):
    pass


class ErrorBody(BaseModel):
    """Every answer that is not 2xx: what was wrong, and for a 400 which parameter."""

    error: str
    parameter: str | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "a parameter is wrong; `parameter` names it"},
    401: {"model": ErrorBody, "description": "no API key, or not a valid one"},
    403: {"model": ErrorBody, "description": "another tenant's data, or the key lacks the read scope"},
    404: {"model": ErrorBody, "description": "not found"},
    409: {"model": ErrorBody, "description": "the index disagrees with the signed log"},
}


async def bad_parameter(_: Request, exc: QueryError) -> JSONResponse:
    return JSONResponse({"error": str(exc), "parameter": exc.parameter}, status_code=400)


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
        services_of(request).auditor.record_refusal(key_id, what, tenant, status, str(exc), request.url.path)
    except Exception:  # noqa: BLE001 - the refusal is answered even if its record fails
        logging.getLogger(__name__).exception("query API: a refusal could not be recorded")


async def unauthenticated(request: Request, exc: AuthenticationError) -> JSONResponse:
    refused(request, 401, exc)
    return JSONResponse({"error": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Bearer"})


async def forbidden(request: Request, exc: PermissionDeniedError) -> JSONResponse:
    refused(request, 403, exc)
    return JSONResponse({"error": str(exc)}, status_code=403)


async def not_found(_: Request, exc: LookupError) -> JSONResponse:
    return JSONResponse({"error": str(exc.args[0]) if exc.args else "not found"}, status_code=404)


async def disagreement(_: Request, exc: VerificationError) -> JSONResponse:
    return JSONResponse(
        {"error": f"the index disagrees with the signed log: {exc}; run `auditlog verify`"}, status_code=409
    )


def install_error_handlers(app: FastAPI) -> None:
    """Answers every error of `app` in the one JSON shape."""
    handlers: list[tuple[type[Exception], Any]] = [
        (QueryError, bad_parameter),
        (RequestValidationError, invalid),
        (StarletteHTTPException, http_error),
        (AuthenticationError, unauthenticated),
        (PermissionDeniedError, forbidden),
        (LookupError, not_found),
        (VerificationError, disagreement),
    ]
    for kind, handler in handlers:
        app.add_exception_handler(kind, handler)
