"""`auditlog tiles`: each log's C2SP tlog-tiles in the archive — what is published, and migrating old logs.

Since tiles exist, the ingest job publishes each block's tiles with the block. A log written
before that has none: `migrate` verifies the log's archive, publishes its tiles and bundles from
the archived blocks (from where its tiles end; expired blocks give hash tiles only), and
verifies it again, tiles included. It can run while the job runs (both write the same bytes).

    auditlog tiles status
    auditlog tiles migrate [--log audit.events.p0]
"""

from __future__ import annotations

import argparse
import sys
import time

from runners.argtypes import UsageError
from schemas.retention import load_policy
from schemas.settings import Settings
from transforms.note import Verifier


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "tiles",
        help="each log's tlog-tiles in the archive: status, and migrating logs written before tiles",
        description="Each log is published as a C2SP tlog-tiles log under logs/<log>/tile/ in the archive "
        "(served by `auditlog serve` at /logs/<log>/). `status` shows how far each log's tiles reach; "
        "`migrate` publishes the tiles of logs written before tiles, verifying the log before and after.",
    )
    sub = p.add_subparsers(dest="tiles_command", metavar="ACTION", required=True)
    status = sub.add_parser("status", help="per log: tree size of its newest checkpoint and of its tiles")
    status.add_argument("--log", action="append", dest="logs", metavar="LOG_ID", help="only this log (repeatable)")
    status.set_defaults(handler=run_status)
    migrate = sub.add_parser(
        "migrate",
        help="publish the tiles of logs written before tiles (verified before and after)",
        description="For each log: verify its archive (refused if anything is wrong), publish its hash tiles "
        "and entry bundles from the archived blocks, from where its tiles end, then verify it again with the "
        "tiles. Idempotent: a log whose tiles are complete is left as it is.",
    )
    migrate.add_argument("--log", action="append", dest="logs", metavar="LOG_ID", help="only this log (repeatable)")
    migrate.add_argument("--quiet", action="store_true", help="no progress lines")
    migrate.set_defaults(handler=run_migrate)


def _logs(archive: object, wanted: list[str] | None) -> list[str]:
    present = archive.list_logs()  # type: ignore[attr-defined]
    if wanted:
        missing = sorted(set(wanted) - set(present))
        if missing:
            raise UsageError(f"the archive has no log {', '.join(missing)}; its logs: {', '.join(present)}")
        return list(wanted)
    return list(present)


def run_status(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.archive_history import archive_from_spec
    from pipelines.ingest_config import archive_spec
    from pipelines.io.archive.tiles import published_size

    archive = archive_from_spec(archive_spec(settings))
    behind = 0
    for log_id in _logs(archive, args.logs):
        latest = archive.latest_checkpoint(log_id)
        size = latest[0] if latest else 0
        tiled = published_size(archive, log_id)
        state = "complete" if tiled == size else f"{size - tiled} leaves behind: `auditlog tiles migrate`"
        behind += tiled != size
        print(f"  {log_id:<32} checkpoint {size:>12}  tiles {tiled:>12}  {state}")
    return 1 if behind else 0


def run_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.archive_history import archive_from_spec, check_archive_log
    from pipelines.ingest_config import archive_spec
    from pipelines.io.archive import block_lock_dates
    from pipelines.io.archive.tiles import TilePublisher

    archive = archive_from_spec(archive_spec(settings))
    verifier = Verifier.from_key(settings.verifier_key_file.read_text())
    evidence = load_policy(settings.retention_policy_path).longest()
    _, lock = block_lock_dates("", evidence, archive.retention_days)  # hash tiles are locked as checkpoints are
    progress = None if args.quiet else (lambda line: print(f"  {line}", file=sys.stderr, flush=True))
    refused = 0
    for log_id in _logs(archive, args.logs):
        origin = f"{settings.origin}/{log_id}"
        before = check_archive_log(archive, log_id, verifier, origin)
        if before.findings:
            refused += 1
            print(f"  {log_id}: NOT migrated, the archive does not verify ({len(before.findings)} finding(s)):")
            for finding in before.findings[:5]:
                print(f"    {finding}")
            print("    run `auditlog verify` and treat it as an incident; tiles are published only from a verified log")
            continue
        started = time.monotonic()
        blocks = TilePublisher(archive).catch_up(log_id, before.size, lock, progress)
        after = check_archive_log(archive, log_id, verifier, origin)
        if after.findings or (before.size and not after.tiles_checked):
            refused += 1
            print(f"  {log_id}: tiles published but the log does not verify with them:")
            for finding in after.findings[:5]:
                print(f"    {finding}")
            continue
        print(
            f"  {log_id}: verified before and after; {blocks} block(s) published as tiles in "
            f"{time.monotonic() - started:.1f} s, {after.tiles_checked} tiles for {after.size} leaves"
        )
    return 1 if refused else 0
