"""`auditlog expire`: remove what the retention policy no longer keeps, and nothing else.

ClickHouse's TTL deletes each event's row once its retention ends (unless a legal hold keeps it);
this command applies that TTL now, and deletes the archived block objects whose Object Lock
retention (the longest class in the block) has passed and that no active hold covers, after
writing each one's header and leaf hashes in its place (pipelines/retention.py). Every retained
event's proof, and `auditlog verify`, still pass; verify reports the rest as "expired by policy".

    auditlog expire --dry-run
    auditlog expire
"""

from __future__ import annotations

import argparse
import sys

from schemas.retention import load_policy
from schemas.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "expire",
        help="delete what retention no longer keeps (ClickHouse TTL now, expired archive blocks)",
        description="Applies ClickHouse's retention TTL now, and deletes each archived block whose Object Lock "
        "retention has ended and that no active legal hold covers, after writing its header and leaf hashes "
        "in its place so that every retained event's proof still verifies.",
    )
    p.add_argument("--dry-run", action="store_true", help="report what would be expired; change nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    from pipelines.archive_history import archive_from_spec
    from pipelines.ingest_config import archive_spec
    from pipelines.io.clickhouse import open_clickhouse_unless_held
    from pipelines.retention import expire_archive, read_holds

    evidence = load_policy(settings.retention_policy_path).longest()
    archive = archive_from_spec(archive_spec(settings))
    holds = read_holds(archive)
    with tqdm(unit="blocks", desc="archive", disable=args.quiet or not sys.stderr.isatty()) as bar:
        report = expire_archive(archive, holds, evidence, dry_run=args.dry_run, progress=bar.update)
    for refusal in report.refused:
        print(f"  refused: {refusal}", file=sys.stderr)
    print(f"archive: {report.line()}")
    if args.dry_run:
        return 0
    clickhouse = open_clickhouse_unless_held(settings.effective_clickhouse_url)
    if clickhouse is None:
        print(
            "clickhouse: held by another process (normally `auditlog serve`); its background merges apply the "
            "retention TTL"
        )
        return 1 if report.refused else 0
    try:
        clickhouse.ensure_schema()
        before = clickhouse.count_events()
        clickhouse.expire_now()
        after = clickhouse.count_events()
    finally:
        clickhouse.close()
    print(f"clickhouse: retention TTL applied, {before - after} expired rows removed ({after} remain)")
    return 1 if report.refused else 0
