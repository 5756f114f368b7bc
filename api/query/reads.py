"""The auditors are audited: every read through the query API becomes an audit event.

Before a response leaves, the read is committed as an event (actor = the API key, type SYSTEM;
action `audit_log.<what>`; the tenant read) into a local SQLite outbox, and a forwarder thread
relays the outbox to the events topic at least once (api/sdk/outbox.py) — so a read is recorded
even while Kafka is down, and flows through the same ingest job as every other event.

Those names are reserved (schemas/reserved.py): the gateway refuses them, and the ingest job
accepts a record using them only with the `SERVICE_SIG_HEADER` Kafka header, an Ed25519
signature by the deployment's checkpoint signer over exactly the record's value bytes. The
forwarder adds it to each record it produces, signing the outbox row's payload, which is the
value it sends.

Refusals are recorded too: a 401 or 403 becomes a FAILURE event (actor `apikey:<key id>` when a
key of the right form was presented, `apikey:anonymous` with none, `apikey:malformed` for
anything else; the tenant asked for; status, reason and path in metadata). So that a flood of bad
requests cannot fill the outbox without bound, refusals are rate-limited (`RefusalLimiter`):
at most `per_actor` per actor and `total` in all per window (default 30 and 120 a minute); the
rest are counted, logged once per window as a warning, and recorded as one
`audit_log.refusals_suppressed` event (how many, by which actors) when the next window begins or
the server stops. Reads that succeed are never limited.

The outbox (and its -wal/-shm) holds who read what: it is made mode 0600, like the other secrets.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from api.sdk.forwarder import OutboxForwarder
from api.sdk.outbox import OutboxRow, create_outbox_table, open_outbox, record_in_transaction
from schemas.reserved import SERVICE_SIG_HEADER, service_signature
from transforms.note import Signer

log = logging.getLogger(__name__)

SYSTEM_TENANT = "auditlog-system"
"""Tenant of reads that belong to no tenant (checkpoints and consistency proofs of a log)."""
ANONYMOUS = "anonymous"
"""The key id of a refusal where no key was presented."""
MALFORMED = "malformed"
"""The key id of a refusal where something not of a key's form was presented."""
SERVICE = "query-service"
"""The key id of the service's own records (the suppressed-refusals summary)."""
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # the event schema's tenant_id
DEFAULT_REFUSALS_PER_ACTOR = 30
DEFAULT_REFUSALS_TOTAL = 120
DEFAULT_REFUSAL_WINDOW_S = 60.0
_SUMMARY_ACTORS = 20


def _private(path: Path) -> None:
    """Makes the outbox and its SQLite side files readable by this user only (0600)."""
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    for each in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if each.exists() and each.stat().st_mode & 0o077:
            each.chmod(0o600)


class RefusalLimiter:
    """Fixed windows of `window_s`: admits at most `per_actor` refusals per actor and `total` in all.

    `admit(actor)` says whether to record a refusal; `roll()` returns the previous window's
    suppressed counts once, when a new window has begun (else None).
    """

    def __init__(
        self,
        per_actor: int = DEFAULT_REFUSALS_PER_ACTOR,
        total: int = DEFAULT_REFUSALS_TOTAL,
        window_s: float = DEFAULT_REFUSAL_WINDOW_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.per_actor = per_actor
        self.total = total
        self.window_s = window_s
        self.clock = clock
        self._lock = threading.Lock()
        self._window = self._window_of(clock())
        self._admitted: Counter[str] = Counter()
        self._suppressed: Counter[str] = Counter()
        self._pending: tuple[float, Counter[str]] | None = None

    def _window_of(self, now: float) -> float:
        return now - now % self.window_s

    def _advance(self) -> None:
        window = self._window_of(self.clock())
        if window != self._window:
            if self._suppressed:
                self._pending = (self._window, self._suppressed)
            self._window, self._admitted, self._suppressed = window, Counter(), Counter()

    def admit(self, actor: str) -> bool:
        with self._lock:
            self._advance()
            if self._admitted[actor] >= self.per_actor or sum(self._admitted.values()) >= self.total:
                if not self._suppressed:
                    log.warning(
                        "query API: more than %d refusals (or %d from %s) within %.0f s; further refusals in this "
                        "window are counted and recorded as one audit_log.refusals_suppressed event",
                        self.total,
                        self.per_actor,
                        actor,
                        self.window_s,
                    )
                self._suppressed[actor] += 1
                return False
            self._admitted[actor] += 1
            return True

    def roll(self, force: bool = False) -> tuple[float, Counter[str]] | None:
        """The (window start, suppressed by actor) of a finished window not yet reported, once.

        With `force`, the current window counts as finished (the server stops).
        """
        with self._lock:
            self._advance()
            if force and self._suppressed:
                pending, self._pending = self._pending, None
                current, self._suppressed = (self._window, self._suppressed), Counter()
                if pending is None:
                    return current
                pending[1].update(current[1])
                return pending
            pending, self._pending = self._pending, None
            return pending


class ReadAuditor:
    """Commits one audit event per API read, then relays them to Kafka in the background."""

    def __init__(
        self,
        outbox_path: Path,
        bootstrap: str | None,
        topic: str,
        signer: Signer | None = None,
        refusals: RefusalLimiter | None = None,
    ) -> None:
        self.outbox_path = outbox_path
        self.bootstrap = bootstrap
        self.topic = topic
        self.signer = signer
        self.refusals = refusals or RefusalLimiter()
        outbox_path.parent.mkdir(parents=True, exist_ok=True)
        _private(outbox_path)
        self._local = threading.local()
        # One writer at a time, queued here: left to SQLite, concurrent writers poll its lock with
        # sleeps of milliseconds, and the reads they record wait on the sleeps (the query API at 16
        # proofs in flight spent most of its time there).
        self._write_lock = threading.Lock()
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
            _private(self.outbox_path)  # the -wal and -shm SQLite just made take the file's mode; make sure
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
        return self._commit(event)

    def _commit(self, event: dict[str, Any]) -> str:
        conn = self._conn()
        with self._write_lock, conn:
            wire = record_in_transaction(conn, event)
        return str(wire["event_id"])

    def record_refusal(
        self,
        key_id: str | None,
        what: str,
        tenant_asked: str | None,
        status: int,
        reason: str,
        path: str,
    ) -> str | None:
        """Records a 401/403 answer as a FAILURE event, within the limiter's bounds.

        Returns the event id, or None when the limiter suppressed it (it is counted instead).
        `tenant_asked` that is not a valid tenant id goes into metadata, the event to SYSTEM_TENANT.
        """
        self._report_suppressed()
        actor = key_id or ANONYMOUS
        if not self.refusals.admit(actor):
            return None
        valid_tenant = tenant_asked if tenant_asked and _TENANT.fullmatch(tenant_asked) else None
        details: dict[str, Any] = {"status": status, "reason": reason[:512], "path": path[:512]}
        if tenant_asked is not None and valid_tenant is None:
            details["tenant_asked"] = tenant_asked[:128]
        return self.record(actor, what, valid_tenant, "AUDIT_LOG", valid_tenant or SYSTEM_TENANT, details, "FAILURE")

    def _report_suppressed(self, force: bool = False) -> None:
        rolled = self.refusals.roll(force)
        if rolled is None:
            return
        window, counts = rolled
        top = dict(counts.most_common(_SUMMARY_ACTORS))
        details = {
            "suppressed": sum(counts.values()),
            "window_start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(window)),
            "window_s": self.refusals.window_s,
            "by_actor": {f"apikey:{k}": v for k, v in top.items()},
            "actors": len(counts),
        }
        log.warning(
            "query API: %d refusals were not recorded one by one in the window from %s",
            details["suppressed"],
            details["window_start"],
        )
        self.record(SERVICE, "refusals_suppressed", None, "AUDIT_LOG", SYSTEM_TENANT, details, "FAILURE")

    def headers(self, row: OutboxRow) -> list[tuple[str, bytes]]:
        """The Kafka headers of a read-audit record: the service's signature over its exact value bytes."""
        if self.signer is None:
            raise RuntimeError("the read audit has no signer: give ReadAuditor the deployment's checkpoint signer")
        return [(SERVICE_SIG_HEADER, service_signature(self.signer, row.payload))]

    def forwarder(self, producer: Any) -> OutboxForwarder:
        """The relay of this outbox to the events topic, every record signed (see the module docstring)."""
        dsn = f"sqlite:///{self.outbox_path}"
        return OutboxForwarder(lambda: open_outbox(dsn), producer, self.topic, say=log.info, headers=self.headers)

    def start(self) -> None:
        """Starts relaying to Kafka (no-op without a bootstrap server: events wait in the outbox).

        Raises:
            RuntimeError: there is no signer; unsigned read records would be dead-lettered by the job.
        """
        if not self.bootstrap:
            return
        if self.signer is None:
            raise RuntimeError(
                "the read audit cannot relay to Kafka without the deployment's checkpoint signer "
                "(settings.signer_key_file): the ingest job dead-letters unsigned audit_log.* records"
            )
        from api.sdk.kafka import make_producer

        producer = make_producer(self.bootstrap, **{"delivery.report.only.error": True})
        forwarder = self.forwarder(producer)
        self._thread = threading.Thread(target=forwarder.run, args=(self._stop,), daemon=True, name="read-audit")
        self._thread.start()

    def stop(self) -> None:
        try:
            self._report_suppressed(force=True)
        except Exception:  # noqa: BLE001 - stopping must not fail on the summary
            log.exception("query API: the suppressed-refusals summary could not be recorded")
        self._stop.set()
        if self._thread:
            self._thread.join(10)

    def backlog(self) -> int:
        return int(self._conn().execute("SELECT count(*) FROM auditlog_outbox").fetchone()[0])
