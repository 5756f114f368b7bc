"""The evidence a reader checks offline: an event's inclusion proof, a log's checkpoint, consistency."""

import base64
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from api.query.deps import Caller, ServicesDep, TenantCaller, audit
from api.query.errors import NotFound
from api.query.params import MAX_TREE_SIZE, EventId, LogId, Tenant, check_log_id
from api.query.store import QueryError
from pipelines.io.archive.tiles import NotLocal, local_only
from pipelines.prover import EventNotFound
from transforms.checkpoint import open_checkpoint

router = APIRouter()
T = TypeVar("T")


async def _local_first(step: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Runs `step` on the event loop if all it reads is cached (memory and local SQLite), else in the pool.

    A proof whose place, head and tiles are cached costs ~0.35 ms of CPU, and the hop to the thread
    pool and back cost a sync route a large part of that again. What needs the archive or ClickHouse
    raises NotLocal within `local_only()` and is run again, whole, on a pool thread.
    """
    try:
        with local_only():
            return step(*args, **kwargs)
    except NotLocal:
        return await run_in_threadpool(step, *args, **kwargs)


@router.get("/api/v1/tenants/{tenant_id}/audit-logs/{event_id}/proof", tags=["evidence"], response_model=dict[str, Any])
async def proof(tenant_id: Tenant, event_id: EventId, who: TenantCaller, services: ServicesDep) -> Response:
    """The event's canonical bytes and a tlog-proof@v1 bundle, checkable offline with the verifier key."""
    try:
        log_id, index, canonical = await _local_first(services.prover.find, tenant_id, event_id)
    except EventNotFound:
        audit(services, who, "proof", tenant_id, "AUDIT_EVENT", event_id, found=False)
        raise
    audit(services, who, "proof", tenant_id, "AUDIT_EVENT", event_id, found=True)
    # The stored bytes are handed out as they are: the client checks them against the proof.
    p = await _local_first(services.prover.proof_at, tenant_id, event_id, log_id, index, canonical, check=False)
    # Encoded here, not by FastAPI's response validation (which walks the dict and re-encodes it,
    # ~6% of a proof's CPU): the body is plain strings and integers.
    body = {
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
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/api/v1/logs/{log_id}/checkpoint", tags=["evidence"])
def checkpoint(log_id: LogId, who: Caller, services: ServicesDep) -> dict[str, Any]:
    """The log's newest signed checkpoint (C2SP signed note), from the WORM archive."""
    check_log_id(log_id)
    audit(services, who, "checkpoint", who.tenant_id, "AUDIT_LOG", log_id)
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


@router.get("/api/v1/logs/{log_id}/consistency", tags=["evidence"])
def consistency(
    log_id: LogId,
    who: Caller,
    services: ServicesDep,
    from_size: Annotated[int, Query(alias="from", ge=0, le=MAX_TREE_SIZE, description="the older tree size")],
    to_size: Annotated[int, Query(alias="to", ge=1, le=MAX_TREE_SIZE, description="the newer tree size")],
) -> dict[str, Any]:
    """RFC 9162 consistency proof between two tree sizes, with both roots and the covering checkpoint."""
    check_log_id(log_id)
    if from_size > to_size:
        raise QueryError("from", f"from {from_size} is larger than to {to_size}")
    audit(services, who, "consistency", who.tenant_id, "AUDIT_LOG", log_id, from_size=from_size, to_size=to_size)
    proof = services.prover.consistency(log_id, from_size, to_size)
    return {
        "log_id": log_id,
        "from": from_size,
        "to": to_size,
        "old_root": base64.b64encode(proof.old_root).decode(),
        "new_root": base64.b64encode(proof.new_root).decode(),
        "proof": [base64.b64encode(h).decode() for h in proof.proof],
        "checkpoint": proof.note,
    }
