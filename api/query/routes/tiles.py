"""Every log as a C2SP tlog-tiles log over HTTP: its checkpoint, hash tiles and entry bundles.

    GET /logs/{log_id}/checkpoint                  the newest signed checkpoint (a signed note)
    GET /logs/{log_id}/tile/{L}/{N}[.p/{W}]        a hash tile
    GET /logs/{log_id}/tile/entries/{N}[.p/{W}]    an entry bundle: the events' canonical bytes

Any tlog client (torchwood, golang.org/x/mod/sumdb/tlog, Sunlight's or Tessera's) reads a log with
the base URL `/logs/{log_id}/` and checks every tile against the checkpoint itself, so it need not
trust this server. The bytes are the archive's (pipelines/io/archive/tiles.py): hash tiles read
through the Prover's bounded tile caches, entry bundles from the archive itself (one that
retention removed is gone, not served from a cache).

Who may read: checkpoints and hash tiles hold only hashes, so any key that reads; entry bundles
hold every tenant's events of the log (PII sealed), so only admin keys, and each bundle read is
itself an audit event. Caching: a full tile never changes (`max-age` a year, `immutable`); a
partial tile's bytes never change either, but it is superseded as the log grows (`max-age=60`);
the checkpoint moves with every block (`no-cache`).
"""

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from api.query.deps import Caller, ServicesDep, audit
from api.query.params import LogId, check_log_id
from api.query.store import QueryError
from transforms.tiles import TileFormatError, parse_tile_path

router = APIRouter()

IMMUTABLE = "max-age=31536000, immutable"
PARTIAL = "max-age=60"
CHECKPOINT_MAX_AGE_S = 1.0  # how stale the checkpoint served may be (the archive is listed at most this often)
BINARY: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
}
NOTE: dict[int | str, dict[str, Any]] = {200: {"content": {"text/plain": {"schema": {"type": "string"}}}}}


@router.get("/logs/{log_id}/checkpoint", tags=["tlog-tiles"], response_class=Response, responses=NOTE)
def checkpoint(log_id: LogId, who: Caller, services: ServicesDep) -> Response:
    """The log's newest signed checkpoint (c2sp.org/tlog-checkpoint), checked against its tiles."""
    check_log_id(log_id)
    head = services.prover.head(log_id, max_age=CHECKPOINT_MAX_AGE_S)
    return Response(head.note, media_type="text/plain; charset=utf-8", headers={"Cache-Control": "no-cache"})


@router.get("/logs/{log_id}/tile/{path:path}", tags=["tlog-tiles"], response_class=Response, responses=BINARY)
def tile(log_id: LogId, path: str, who: Caller, services: ServicesDep) -> Response:
    """A hash tile or entry bundle of the log (c2sp.org/tlog-tiles); entry bundles need an admin key."""
    check_log_id(log_id)
    try:
        wanted = parse_tile_path(f"tile/{path}")
    except TileFormatError as exc:
        raise QueryError("path", str(exc)) from None
    if wanted.is_bundle:
        who.require("admin")
        audit(services, who, "entries", None, "AUDIT_LOG", log_id, tile=wanted.path)
    data = services.prover.tiles.get(log_id, wanted, cached=not wanted.is_bundle)
    cache = IMMUTABLE if wanted.is_full else PARTIAL
    return Response(data, media_type="application/octet-stream", headers={"Cache-Control": cache})
