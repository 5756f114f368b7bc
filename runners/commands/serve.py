"""`auditlog serve`: the query API and the Compliance UI, and (by default) the archive indexer.

On the embedded default, chDB can be open in one process only, so `auditlog serve` owns it: it
follows the WORM archive and loads new blocks while it answers queries, and `auditlog ingest`
started beside it sees the directory taken and leaves the indexing to it. Events appear in the
UI a block latency after they were produced.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import threading
from pathlib import Path
from typing import Any

from runners.argtypes import UsageError
from runners.deployment import load_or_create_signer, with_master_key
from schemas.settings import Settings
from transforms.errors import AuditlogError
from transforms.note import Signer, Verifier


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "serve",
        help="serve the query API and the Compliance UI (and index the archive)",
        description="Serves the REST query API (/api/v1/…, OpenAPI at /openapi.json) and the Compliance UI "
        "(/) on loopback. API keys: `auditlog apikeys create --tenant T` (read scope) or `--scope admin`. Every "
        "read, and every 401/403, is recorded as an audit event (relayed to Kafka through a local outbox, each "
        "record signed with the deployment's checkpoint key). Unless --no-index, it also "
        "follows the WORM archive into ClickHouse, so run it beside `auditlog ingest` to watch events arrive.",
    )
    p.add_argument("--port", type=int, help="port (default AUDITLOG_API_PORT, 8480)")
    p.add_argument("--host", help="interface (default AUDITLOG_HOST, 127.0.0.1)")
    p.add_argument("--no-index", action="store_true", help="do not follow the archive into ClickHouse")
    p.add_argument("--no-kafka", action="store_true", help="keep read-audit events in the local outbox")
    p.add_argument("--print-openapi", action="store_true", help="print the OpenAPI document and exit")
    p.set_defaults(handler=run)


SERVE_THREADS = 64
"""Worker threads the routes run on (they block on ClickHouse and S3), and S3 connections to match."""


class ServeError(AuditlogError, RuntimeError):
    """The server cannot start as configured; the message says what to do."""


def local_caches(settings: Settings) -> tuple[Any, Any]:
    """The place index and the disk tile cache proofs read first, under `home`/api (both disposable).

    Each file names the deployment it is of (hashed: a ClickHouse URL may carry a password) and
    empties itself when opened for another (pipelines/io/places.py, pipelines/io/archive/tilecache.py).
    """
    from pipelines.io.archive.tilecache import DiskTileCache
    from pipelines.io.places import PlaceIndex

    archive = hashlib.sha256(f"{settings.s3_endpoint}/{settings.bucket}".encode()).hexdigest()
    index = hashlib.sha256(f"{settings.effective_clickhouse_url}|{archive}".encode()).hexdigest()
    return (
        PlaceIndex(settings.home / "api" / "places.sqlite", identity=index),
        DiskTileCache(settings.home / "api" / "tiles.sqlite", identity=archive),
    )


def build_services(settings: Settings, kafka: bool = True) -> tuple[Any, list[Any]]:
    """Opens everything the app needs; returns (Services, closers)."""
    from api.keys import ApiKeyStore
    from api.query.app import Services
    from api.query.reads import ReadAuditor
    from api.query.store import QueryStore
    from pipelines.ingest_config import archive_spec
    from pipelines.io.archive import open_archive
    from pipelines.io.archive.tiles import TileStore
    from pipelines.io.clickhouse import open_clickhouse
    from pipelines.io.keystore import open_keystore
    from pipelines.prover import Prover
    from pipelines.witnessing import LagMetrics, witnesses_from_settings

    settings = with_master_key(settings)
    verifier_key = settings.verifier_key_file.read_text().strip()
    # The read audit's records use reserved names (schemas/reserved.py): the job accepts them only
    # signed by the deployment's checkpoint signer, so relaying them needs that key.
    signer = None
    if settings.signer_key_file.exists():
        signer = Signer.from_key(settings.signer_key_file.read_text())
    elif kafka:
        raise ServeError(
            f"no signer key at {settings.signer_key_file}: the query service signs its read-audit records with the "
            "deployment's checkpoint key (the ingest job dead-letters them unsigned); copy it there, or serve with "
            "--no-kafka to keep the records in the local outbox"
        )
    clickhouse = open_clickhouse(settings.effective_clickhouse_url)
    clickhouse.ensure_schema()
    keystore = open_keystore(settings)
    archive = open_archive(**archive_spec(settings), connections=SERVE_THREADS)
    places, disk = local_caches(settings)
    tiles = TileStore(archive, disk=disk)
    prover = Prover(archive, clickhouse, Verifier.from_key(verifier_key), settings.origin, tiles=tiles, places=places)
    stop_places = threading.Event()
    place_sync = threading.Thread(target=places.follow, args=(clickhouse, stop_places), daemon=True, name="place-index")
    place_sync.start()
    auditor = ReadAuditor(
        settings.home / "api" / "read-audit.sqlite",
        settings.kafka_bootstrap if kafka else None,
        settings.topic,
        signer=signer,
    )
    services = Services(
        store=QueryStore(clickhouse, keystore),
        prover=prover,
        apikeys=ApiKeyStore.open(settings),
        auditor=auditor,
        archive=archive,
        verifier_key=verifier_key,
        origin_prefix=settings.origin,
        export=_Exporter(settings, archive),
        witness_keys=tuple(w.vkey for w in settings.witness_list),
        metrics=LagMetrics(archive, witnesses_from_settings(settings)),
    )

    def stop_place_sync() -> None:
        stop_places.set()
        place_sync.join(30)

    return services, [stop_place_sync, auditor.stop, keystore.close, clickhouse.close]


class _Exporter:
    """Runs the export pipeline (pipelines/export.py) for the API, in this process (it holds chDB)."""

    def __init__(self, settings: Settings, archive: Any):
        self.settings = settings
        self.archive = archive

    def __call__(self, query: Any, fmt: str, out: Path) -> None:
        from pipelines.export import ExportQuery, archive_heads, run_export
        from runners.commands.export import KeystoreOpener

        signer = load_or_create_signer(self.settings.keys_dir, self.settings.origin)
        heads = archive_heads(self.archive)
        export_query = ExportQuery(query.tenant_id, query.start, query.end, dict(query.filters))
        run_export(
            export_query,
            out,
            (fmt,),
            self.settings.effective_clickhouse_url,
            signer,
            heads,
            keystore_opener=KeystoreOpener(self.settings),
        )


def run(args: argparse.Namespace, settings: Settings) -> int:
    import anyio.to_thread
    import uvicorn

    from api.query.app import create_app

    if args.print_openapi:
        print(json.dumps(openapi_document(), indent=2, sort_keys=True))
        return 0
    if not settings.verifier_key_file.exists():
        raise UsageError(
            f"no verifier key at {settings.verifier_key_file}: run the ingest job once (it makes the "
            "deployment's keys), or copy the .vkey there"
        )
    services, closers = build_services(settings, kafka=not args.no_kafka)
    follower = None
    if not args.no_index:
        from pipelines.indexer import ArchiveIndexer, IndexerThread

        indexer = ArchiveIndexer(
            services.archive,
            services.store.clickhouse,
            Verifier.from_key(services.verifier_key),
            settings.origin,
            settings.core,
        )
        follower = IndexerThread(indexer)
        follower.start()
    services.auditor.start()
    host, port = args.host or settings.host, args.port or settings.api_port
    app = create_app(services)

    @app.on_event("startup")
    async def more_threads() -> None:
        # Routes are synchronous (the ClickHouse client blocks, and releases the GIL): allow
        # enough worker threads for the concurrency the API is benchmarked at.
        anyio.to_thread.current_default_thread_limiter().total_tokens = SERVE_THREADS

    print(f"auditlog serve: API and UI on http://{host}:{port}/ (OpenAPI: /openapi.json)", file=sys.stderr, flush=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        if follower:
            follower.stop()
        for close in closers:
            close()
    return 0


def openapi_document() -> dict[str, Any]:
    """The API's OpenAPI document (committed as api/openapi.json; a test keeps them equal)."""
    from api.query.app import Services, create_app

    app = create_app(Services(None, None, None, None, None, "", ""))  # type: ignore[arg-type]
    return app.openapi()
