"""`auditlog witness`: have the witnesses cosign the archive's checkpoints, and show their lag.

    auditlog witness                 # one pass: ask each witness to cosign what it has not yet
    auditlog witness --follow        # keep publishing (beside a Flink cluster; `auditlog ingest`
                                     # runs the same publisher in a thread on the local default)
    auditlog witness status          # per witness and log: newest checkpoint, newest cosigned, lag

Witnesses come from AUDITLOG_WITNESSES (`name URL VKEY;...`), by default the local litewitness
that `auditlog stack up` runs (pipelines/witnessing/, infra/witness.py).
"""

from __future__ import annotations

import argparse
import threading

from runners.argtypes import UsageError
from schemas.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "witness",
        help="ask the witnesses to cosign new checkpoints (once or following), or show their lag",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", nargs="?", choices=("publish", "status"), default="publish")
    p.add_argument("--follow", action="store_true", help="keep publishing until Ctrl-C")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between passes (default 1)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from infra.witness import local_registrar
    from pipelines.witnessing import open_publisher

    publisher = open_publisher(settings, register=local_registrar(settings))
    if publisher is None:
        raise UsageError(
            "no witness configured: run `auditlog stack up witness` for the local one, or set "
            "AUDITLOG_WITNESSES='name URL VKEY'"
        )
    if args.action == "status":
        return print_lag(publisher.lag())
    if args.follow:
        try:
            publisher.follow(threading.Event(), args.interval)
        except KeyboardInterrupt:
            pass
    else:
        publisher.sync_once()
    stats = publisher.stats
    print(f"cosigned {stats.cosigned} checkpoint(s); {stats.refused} refusal(s), {stats.failures} failed call(s)")
    rows = publisher.lag()
    print_lag(rows)
    return 1 if stats.refused or any(r.refused for r in rows) else 0


def print_lag(rows: list) -> int:  # type: ignore[type-arg]
    table = [("WITNESS", "LOG", "NEWEST", "COSIGNED", "BEHIND (checkpoints/leaves)", "NOTE")]
    for r in rows:
        cosigned = str(r.cosigned_size) if r.cosigned_size >= 0 else "-"
        table.append(
            (
                r.witness,
                r.log_id,
                str(r.newest_size),
                cosigned,
                f"{r.checkpoints_behind}/{r.leaves_behind}",
                r.refused or r.error,
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    return 1 if any(r.refused for r in rows) else 0
