"""The auditors are audited: every read through the query API becomes an audit event.

Before a response leaves, the read is committed as an event (actor = the API key, type SYSTEM;
action `audit_log.<what>`; the tenant read) into a local SQLite outbox, and a forwarder thread
relays the outbox to the events topic at least once (api/sdk/outbox.py) — so a read is recorded
even while Kafka is down, and flows through the same ingest job as every other event.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

from api.sdk.outbox import OutboxForwarder, create_outbox_table, open_outbox, record_in_transaction

log = logging.getLogger(__name__)

SYSTEM_TENANT = "auditlog-system"
"""Tenant of reads that belong to no tenant (checkpoints and consistency proofs of a log)."""


class ReadAuditor:
    """Commits one audit event per API read, then relays them to Kafka in the background."""

    def __init__(self, outbox_path: Path, bootstrap: str | None, topic: str) -> None:
        self.outbox_path = outbox_path
        self.bootstrap = bootstrap
        self.topic = topic
        outbox_path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        conn = self._conn()
        create_outbox_table(conn)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.outbox_path, timeout=30, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def record(
        self,
        key_id: str,
        what: str,
        tenant_id: str | None,
        resource_type: str,
        resource_id: str,
        details: dict[str, Any],
        result: str = "SUCCESS",
    ) -> str:
        """Commits the read as an event; returns its event id. Raises if it cannot be recorded."""
        event = {
            "tenant_id": tenant_id or SYSTEM_TENANT,
            "actor": {"id": f"apikey:{key_id}", "type": "SYSTEM"},
            "action": f"audit_log.{what}",
            "resource": {"type": resource_type, "id": resource_id[:256] or "-"},
            "result": result,
            "metadata": details,
        }
        conn = self._conn()
        with conn:
            wire = record_in_transaction(conn, event)
        return str(wire["event_id"])

    def start(self) -> None:
        """Starts relaying to Kafka (no-op without a bootstrap server: events wait in the outbox)."""
        if not self.bootstrap:
            return
        from api.sdk.kafka import make_producer

        producer = make_producer(self.bootstrap, **{"delivery.report.only.error": True})
        dsn = f"sqlite:///{self.outbox_path}"
        forwarder = OutboxForwarder(lambda: open_outbox(dsn), producer, self.topic, say=log.info)
        self._thread = threading.Thread(target=forwarder.run, args=(self._stop,), daemon=True, name="read-audit")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(10)

    def backlog(self) -> int:
        return int(self._conn().execute("SELECT count(*) FROM auditlog_outbox").fetchone()[0])
