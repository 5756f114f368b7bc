"""`auditlog search`: who did what, to which resource, when — from the ClickHouse index."""

from __future__ import annotations

import argparse
import json
import sys

from runners.argtypes import UsageError
from schemas.events import EventValidationError, normalize_time
from schemas.settings import Settings

FILTERS = {
    "actor": ("actor_id", "String"),
    "action": ("action", "String"),
    "resource_id": ("resource_id", "String"),
    "resource_type": ("resource_type", "String"),
    "result": ("result", "String"),
}


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "search",
        help="search a tenant's audit history (newest first)",
        description="Queries the ClickHouse index with bound parameters; prints one line per event.",
    )
    p.add_argument("--tenant", required=True)
    p.add_argument("--actor", help="actor id")
    p.add_argument("--action")
    p.add_argument("--resource-id", dest="resource_id")
    p.add_argument("--resource-type", dest="resource_type")
    p.add_argument("--result", choices=["SUCCESS", "FAILURE"])
    p.add_argument("--since", help="ISO-8601 time, inclusive")
    p.add_argument("--until", help="ISO-8601 time, exclusive")
    p.add_argument("--limit", type=int, default=20, help="at most this many events (default 20, max 1000)")
    p.add_argument("--ids", action="store_true", help="print only event ids")
    p.add_argument("--json", action="store_true", help="print JSON lines")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.io.clickhouse import open_clickhouse

    if not 1 <= args.limit <= 1000:
        raise UsageError(f"--limit {args.limit} must be between 1 and 1000")
    where = ["tenant_id = {tenant:String}"]
    params: dict[str, object] = {"tenant": args.tenant, "limit": args.limit}
    for name, (column, kind) in FILTERS.items():
        value = getattr(args, name)
        if value:
            where.append(f"{column} = {{{name}:{kind}}}")
            params[name] = value
    for name, op in (("since", ">="), ("until", "<")):
        value = getattr(args, name)
        if value:
            try:
                params[name] = normalize_time(value).replace("T", " ").rstrip("Z")
            except EventValidationError as exc:
                raise UsageError(f"--{name} {value!r} is not an ISO-8601 time like 2026-05-22T17:44:00Z") from exc
            where.append(f"occurred_at {op} {{{name}:DateTime64(3, 'UTC')}}")
    sql = (
        "SELECT event_id, occurred_at, actor_id, actor_type, action, resource_type, resource_id, result, "
        "log_id, leaf_index, block_index FROM auditlog.audit_logs WHERE "
        + " AND ".join(where)
        + " ORDER BY occurred_at DESC, event_id DESC LIMIT {limit:UInt32}"
    )
    clickhouse = open_clickhouse(settings.effective_clickhouse_url)
    try:
        rows = clickhouse.query(sql, params)
    finally:
        clickhouse.close()
    for row in rows:
        event_id, occurred, actor, actor_type, action, rtype, rid, result, log_id, leaf, block = row
        if args.ids:
            print(event_id)
        elif args.json:
            print(
                json.dumps(
                    {
                        "event_id": event_id,
                        "occurred_at": str(occurred),
                        "actor": {"id": actor, "type": actor_type},
                        "action": action,
                        "resource": {"type": rtype, "id": rid},
                        "result": result,
                        "log_id": log_id,
                        "leaf_index": int(leaf),
                        "block_index": int(block),
                    }
                )
            )
        else:
            print(f"{occurred}  {event_id}  {actor_type}:{actor}  {action}  {rtype}/{rid}  {result}  {log_id}#{leaf}")
    if not rows and not args.ids:
        print("no events match", file=sys.stderr)
    return 0
