"""`auditlog index`: load the WORM archive's blocks into ClickHouse (catch up, or follow)."""

from __future__ import annotations

import argparse
import sys
import threading

from runners.deployment import halted_error, open_indexer
from schemas.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "index",
        help="load archived blocks into ClickHouse (verifying each), once or following",
        description="Reads every block in the WORM archive that ClickHouse lacks, checks it against "
        "the previous block and its signed checkpoint, and inserts its rows. Safe to repeat; on an "
        "empty ClickHouse it rebuilds the index from the archive alone. `auditlog ingest` runs it for "
        "you on the local default; run it with --follow beside a Flink cluster.",
    )
    p.add_argument("--follow", action="store_true", help="keep following the archive until Ctrl-C")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between archive polls (default 1)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.indexer import wait_quiet

    indexer = open_indexer(settings)

    def report(log_id: str, header: object) -> None:
        stats = indexer.stats
        print(f"\rindexed {stats.blocks} blocks, {stats.events} events", end="", file=sys.stderr, flush=True)

    try:
        if args.follow:
            # Outages of S3 or ClickHouse are waited out (logged), never fatal, while following.
            try:
                indexer.follow(threading.Event(), args.interval, on_block=report)
            except KeyboardInterrupt:
                pass
        else:
            while indexer.sync_once(on_block=report):
                pass
            wait_quiet(indexer)
    finally:
        indexer.clickhouse.close()
    stats = indexer.stats
    print(f"\rindexed {stats.blocks} blocks, {stats.events} events", file=sys.stderr)
    halted = halted_error(stats.halted)
    if halted:
        raise halted
    return 0
