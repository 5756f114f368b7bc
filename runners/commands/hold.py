"""`auditlog hold`: place, release and list legal holds, each recorded as an audit event.

A legal hold suspends expiry for one tenant's events (or one subject's) until a time: their
archived blocks get an Object Lock legal hold (nobody can delete those versions), their ClickHouse
rows a `hold_until` that keeps TTL off them, and `auditlog expire` skips them. The hold record lives
in the WORM archive (pipelines/retention.py); the process that owns ClickHouse applies it, so with
embedded chDB held by `auditlog serve`, serve's indexer applies it within a pass.

    auditlog hold --tenant t_1000 --until 2027-06-30 --reason "case 4411"
    auditlog hold --tenant t_1000 --subject u_t_1000_3 --until 2027-06-30 --reason "case 4412"
    auditlog hold --release --tenant t_1000 --reason "case 4411 closed"
    auditlog hold --list
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import getpass
import sys
from collections.abc import Callable
from typing import Any

from runners.argtypes import UsageError, utc_time
from schemas.retention import load_policy
from schemas.settings import Settings
from transforms.errors import AuditlogError
from transforms.retention import LegalHold, active_holds, format_time

PLACE_ACTION = "compliance.legal_hold.place"
RELEASE_ACTION = "compliance.legal_hold.release"


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "hold",
        help="place, release or list legal holds (suspend expiry for a tenant or one subject)",
        description="Places a legal hold on a tenant's events (or one subject's) until --until: they are not "
        "expired in ClickHouse or the archive while it lasts, whatever their retention class. The hold is "
        "recorded as an audit event (acknowledged by Kafka first) and in the WORM archive. --release ends "
        "the tenant's (or subject's) active holds early, also as an audit event. --list shows every hold.",
    )
    p.add_argument("--tenant", help="the tenant whose events are held")
    p.add_argument("--subject", default="", help="hold only this actor's events (default: the whole tenant)")
    p.add_argument("--until", type=utc_time, metavar="TIME", help="when the hold ends, ISO-8601 (e.g. 2027-06-30)")
    p.add_argument("--reason", help="why (kept in the hold's audit event and record), e.g. a case number")
    p.add_argument("--release", action="store_true", help="end the active holds of --tenant (and --subject)")
    p.add_argument("--list", action="store_true", help="list every hold and whether it is active")
    p.add_argument("--operator", default=getpass.getuser(), help="who asks for it (default: the OS user)")
    p.set_defaults(handler=run)


def hold_event(action: str, tenant_id: str, hold_id: str, operator: str, **metadata: Any) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "actor": {"id": f"operator:{operator}", "type": "SYSTEM"},
        "action": action,
        "resource": {"type": "LEGAL_HOLD", "id": hold_id},
        "result": "SUCCESS",
        "metadata": {k: v for k, v in metadata.items() if v},
    }


def run(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.archive_history import archive_from_spec
    from pipelines.ingest_config import archive_spec
    from pipelines.retention import read_holds

    archive = archive_from_spec(archive_spec(settings))
    holds = read_holds(archive)
    now = dt.datetime.now(dt.UTC)
    if args.list:
        return list_holds(holds, now, args.tenant)
    if not args.tenant:
        raise UsageError("--tenant is required to place or release a hold")
    reason = (args.reason or "").strip()
    if not reason:
        raise UsageError("--reason is missing; say why (a case number, the request): it is kept in the log")
    if args.release:
        return release(args, settings, archive, holds, now, reason)
    return place(args, settings, archive, holds, now, reason)


def list_holds(holds: list[Any], now: dt.datetime, tenant: str | None) -> int:

    moment = format_time(now)
    shown = [h for h in holds if not tenant or h.tenant_id == tenant]
    if not shown:
        print("no legal holds" + (f" for {tenant}" if tenant else ""))
        return 0
    for h in shown:
        state = "active" if h.active(moment) else ("released " + h.released_at if h.released_at else "ended")
        print(f"{h.hold_id}  {h.scope():<40} until {h.until}  placed {h.placed_at}  {state}  ({h.reason})")
    return 0


def place(
    args: argparse.Namespace, settings: Settings, archive: Any, holds: list[Any], now: dt.datetime, reason: str
) -> int:

    from pipelines.retention import new_hold_id, read_holds, write_hold

    evidence = _evidence(settings)
    if not args.until:
        raise UsageError("--until is required: when the hold ends, e.g. --until 2027-06-30")
    placed_at = format_time(now)
    if args.until <= placed_at:
        raise UsageError(f"--until {args.until} is not in the future; a hold must end after {placed_at}")
    hold = LegalHold(new_hold_id(now), args.tenant, args.subject, args.until, placed_at, reason)
    event = hold_event(
        PLACE_ACTION, args.tenant, hold.hold_id, args.operator, reason=reason, subject=args.subject, until=args.until
    )
    receipt = record(settings, event, "placed")
    # Exempt the rows first, then write the record that verify trusts, dated after the exemption:
    # no row can expire between what the record promises and what ClickHouse keeps.
    applied = apply(settings, archive, args.tenant, lambda: [*read_holds(archive), hold], now, [])
    if applied:
        hold = dataclasses.replace(hold, placed_at=format_time(dt.datetime.now(dt.UTC)))
    write_hold(archive, hold, evidence, now)
    print(f"placed {hold.hold_id} on {hold.scope()} until {hold.until} (audit event {receipt.event_id})")
    return 0


def _evidence(settings: Settings) -> Any:
    """How long hold records are locked (the policy's longest class); raises RetentionPolicyError."""
    return load_policy(settings.retention_policy_path).longest()


def release(
    args: argparse.Namespace, settings: Settings, archive: Any, holds: list[Any], now: dt.datetime, reason: str
) -> int:
    from pipelines.retention import read_holds, write_release

    moment = format_time(now)
    ending = [h for h in holds if h.tenant_id == args.tenant and h.subject_id == args.subject and h.active(moment)]
    if not ending:
        scope = f"tenant {args.tenant}" + (f" subject {args.subject}" if args.subject else " (tenant-wide)")
        print(f"no active hold on {scope}; `auditlog hold --list` shows every hold", file=sys.stderr)
        return 1
    evidence = _evidence(settings)
    released = []
    for hold in ending:
        event = hold_event(RELEASE_ACTION, args.tenant, hold.hold_id, args.operator, reason=reason)
        receipt = record(settings, event, "released")
        released.append(write_release(archive, hold, reason, evidence, now))
        print(f"released {hold.hold_id} on {hold.scope()} (audit event {receipt.event_id})")
    apply(settings, archive, args.tenant, lambda: read_holds(archive), now, released)
    return 0


def record(settings: Settings, event: dict[str, Any], what: str) -> Any:
    """Records the hold's audit event, acknowledged by Kafka; raises AuditlogError if it could not be."""
    from api.sdk import AuditClient

    client = AuditClient(kafka_bootstrap=settings.kafka_bootstrap, topic=settings.topic)
    try:
        return client.record(event, wait=True)
    except Exception as exc:  # Kafka down: no hold changes without its record
        raise AuditlogError(
            f"the hold could not be recorded in Kafka at {settings.kafka_bootstrap} ({exc}); nothing was "
            f"{what}. Start Kafka (`auditlog stack up kafka`) and run this again."
        ) from exc
    finally:
        client.close()


def apply(
    settings: Settings,
    archive: Any,
    tenant: str,
    holds: Callable[[], list[Any]],
    now: dt.datetime,
    previously: list[Any],
) -> bool:
    """Applies the tenant's holds to ClickHouse and the archive now; False when the process that owns chDB will.

    `holds` is read once ClickHouse is open, so a hold another command placed meanwhile is kept.
    """
    from pipelines.io.clickhouse import open_clickhouse_unless_held
    from pipelines.retention import apply_holds

    clickhouse = open_clickhouse_unless_held(settings.effective_clickhouse_url)
    if clickhouse is None:
        print(
            f"note: {settings.effective_clickhouse_url} is held by another process (normally `auditlog serve`); "
            "its indexer applies the change to ClickHouse and the archive's blocks on its next pass"
        )
        return False
    try:
        clickhouse.ensure_schema()
        on_record = holds()
        result = apply_holds(archive, clickhouse, tenant, on_record, now, previously)
    finally:
        clickhouse.close()
    active = len([h for h in active_holds(on_record, format_time(now)) if h.tenant_id == tenant])
    print(
        f"applied: {result.blocks_held} archived blocks put on legal hold, {result.blocks_released} released; "
        f"ClickHouse rows of {tenant} now follow its {active} active hold(s)"
    )
    return True
