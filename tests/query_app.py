"""The query API served for real (uvicorn on a loopback port, in a thread) over a small in-process deployment.

No services: the archive is `InMemoryArchive`, ClickHouse is embedded chDB in a temporary directory,
PII keys live in memory, and the logs are built by the ingest job's own per-log code
(tests/synthetic.py). The app is `create_app` exactly as `auditlog serve` builds it, so the
answers, headers and the OpenAPI document are the served ones.

    with served_app(tmp_path) as app:
        status, body, headers = app.get("/api/v1/tenants/t_1000/audit-logs", app.keys["t_1000"])

chDB hosts one directory per process: one `served_app` at a time per test process.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from api.keys import ApiKeyStore
from api.query.app import Services, create_app
from api.query.reads import ReadAuditor
from api.query.store import QueryStore
from pipelines.io.archive.testing import InMemoryArchive
from pipelines.io.clickhouse import open_clickhouse
from pipelines.io.keystore import InMemoryKeyStore
from pipelines.prover import Prover
from tests.synthetic import ORIGIN, build_logs
from transforms.note import Signer

TENANTS = ("t_1000", "t_1001")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServedApp:
    base: str
    port: int
    services: Services
    signer: Signer
    home: Path
    keys: dict[str, str] = field(default_factory=dict)

    def request(
        self, method: str, path: str, key: str | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, dict[str, str]]:
        """One request with `path` sent exactly as given (no normalisation of `..` or escapes)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            sent = dict(headers or {})
            if key:
                sent["Authorization"] = f"Bearer {key}"
            conn.request(method, path, headers=sent)
            response = conn.getresponse()
            body = response.read()
            found = {k.lower(): v for k, v in response.getheaders()}
        finally:
            conn.close()
        if found.get("content-type", "").startswith("application/json"):
            return response.status, json.loads(body), found
        return response.status, body, found

    def get(self, path: str, key: str | None = None, **headers: str) -> tuple[int, Any, dict[str, str]]:
        return self.request("GET", path, key, {k.replace("_", "-"): v for k, v in headers.items()})

    def outbox_events(self) -> list[dict[str, Any]]:
        """Every read-audit event waiting in the local outbox, oldest first."""
        import sqlite3

        conn = sqlite3.connect(self.services.auditor.outbox_path)
        try:
            rows = conn.execute("SELECT payload FROM auditlog_outbox ORDER BY id").fetchall()
        finally:
            conn.close()
        return [json.loads(r[0]) for r in rows]


class _Exporter:
    """The API's export, run in this process against the same chDB (as `auditlog serve` does)."""

    def __init__(self, url: str, signer: Signer, archive: Any, keys: Any) -> None:
        self.url, self.signer, self.archive, self.keys = url, signer, archive, keys

    def __call__(self, query: Any, fmt: str, out: Path) -> None:
        from pipelines.export import ExportQuery, archive_heads, run_export

        export_query = ExportQuery(query.tenant_id, query.start, query.end, dict(query.filters))
        run_export(export_query, out, (fmt,), self.url, self.signer, archive_heads(self.archive))


@contextlib.contextmanager
def served_app(home: Path, events: int = 240, **key_scopes: dict[str, Any]) -> Iterator[ServedApp]:
    """Builds the deployment under `home`, makes API keys (name -> ApiKeyStore.create kwargs), serves it."""
    import uvicorn

    signer = Signer.generate(ORIGIN)
    archive = InMemoryArchive()
    url = f"chdb://{(home / 'chdb').resolve()}"
    clickhouse = open_clickhouse(url)
    try:
        clickhouse.ensure_schema()
        keystore = InMemoryKeyStore(key_seed=b"auditlog-query-app")
        build_logs(archive, clickhouse, events, logs=2, block_size=40, tenants=3, signer=signer, keys=keystore)
        apikeys = ApiKeyStore(home / "apikeys.sqlite", cache_ttl_s=0)
        auditor = ReadAuditor(home / "api" / "read-audit.sqlite", None, "audit.events")
        services = Services(
            store=QueryStore(clickhouse, keystore),
            prover=Prover(archive, clickhouse, signer.verifier(), ORIGIN),
            apikeys=apikeys,
            auditor=auditor,
            archive=archive,
            verifier_key=signer.verifier().encode(),
            origin_prefix=ORIGIN,
            export=_Exporter(url, signer, archive, keystore),
        )
        keys = {}
        for name, kwargs in (key_scopes or DEFAULT_KEYS).items():
            keys[name] = apikeys.create(label=name, **kwargs)[1]
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(services), host="127.0.0.1", port=port, log_level="warning", access_log=False)
        )
        thread = threading.Thread(target=server.run, daemon=True, name="query-api")
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise AssertionError("the query API did not start within 30 s")
            time.sleep(0.05)
        try:
            yield ServedApp(f"http://127.0.0.1:{port}", port, services, signer, home, keys)
        finally:
            server.should_exit = True
            thread.join(15)
            auditor.stop()
            apikeys.close()
    finally:
        clickhouse.close()


DEFAULT_KEYS: dict[str, dict[str, Any]] = {
    "t_1000": {"tenant_id": "t_1000"},
    "t_1001": {"tenant_id": "t_1001"},
    "admin": {"admin": True},
}
