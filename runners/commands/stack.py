"""`auditlog stack up | down | status`: the local Kafka, S3 (Object Lock), Flink and witness services.

    auditlog stack up                 # all of them; running ones are left alone
    auditlog stack up kafka s3        # only these
    auditlog stack up postgres        # the shared key store's database: only when named
    auditlog stack status
    auditlog stack down               # stops what `up` started, removes stale pid files

Ports, host and data folder come from `Settings` (AUDITLOG_* variables); see infra/stack.py.
"""

from __future__ import annotations

import argparse
from typing import Any

from runners.argtypes import IncompleteError
from schemas.settings import Settings

SERVICE_NAMES = ("kafka", "s3", "flink", "witness", "postgres")  # postgres: only when named


def register(subparsers: Any) -> None:
    """Adds `stack` and its subcommands to the `auditlog` parser."""
    parser = subparsers.add_parser(
        "stack",
        help="start, stop or inspect the local Kafka, S3 and Flink services",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="stack_command", metavar="ACTION", required=True)

    up = actions.add_parser(
        "up",
        help="start services and wait until they answer",
        description="Start the named services (default: all) unless they already run, wait until "
        "each answers, then create the Kafka topics and the Object Lock bucket.",
    )
    up.add_argument(
        "services",
        nargs="*",
        type=_service_name,
        metavar="SERVICE",
        help=f"any of {', '.join(SERVICE_NAMES)} (default: all but postgres, which starts only when named)",
    )
    up.add_argument(
        "--timeout",
        type=float,
        default=180.0,
        metavar="SECONDS",
        help="how long to wait for the services to answer (default: 180)",
    )
    up.set_defaults(handler=_up)

    down = actions.add_parser(
        "down",
        help="stop services started by `stack up`",
        description="Stop the named services (default: all); data under AUDITLOG_HOME is kept.",
    )
    down.add_argument(
        "services",
        nargs="*",
        type=_service_name,
        metavar="SERVICE",
        help=f"any of {', '.join(SERVICE_NAMES)} (default: all)",
    )
    down.set_defaults(handler=_down)

    status = actions.add_parser(
        "status",
        help="show each service: running or stopped, address, pid, log file",
        description="Show each service's process: running or stopped, address, pid and log file. "
        "Exits 0 if everything runs and answers, 3 otherwise.",
    )
    status.set_defaults(handler=_status)


def _service_name(text: str) -> str:
    if text not in SERVICE_NAMES:
        raise argparse.ArgumentTypeError(f"unknown service {text!r}; choose from {', '.join(SERVICE_NAMES)}")
    return text


def _up(args: argparse.Namespace, settings: Settings) -> int:
    from infra.stack import Stack, StackError

    stack = Stack(settings)
    try:
        rows = stack.up(args.services, timeout=args.timeout)
    except StackError as exc:
        raise IncompleteError(str(exc)) from exc
    _print_table(rows)
    return 0


def _down(args: argparse.Namespace, settings: Settings) -> int:
    from infra.stack import Stack, StackError

    try:
        stopped = Stack(settings).down(args.services)
    except StackError as exc:
        raise IncompleteError(str(exc)) from exc
    if not stopped:
        print("nothing was running")
    return 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from infra.stack import Stack

    rows = Stack(settings).status()
    print(f"home: {settings.home}")
    _print_table(rows)
    return 0 if all(row.running and row.healthy for row in rows) else 3


def _print_table(rows: list[Any]) -> None:
    table = [("SERVICE", "PROCESS", "STATE", "ADDRESS", "PID", "LOG")]
    for row in rows:
        table.append((row.service, row.name, row.state, row.address, str(row.pid or "-"), str(row.log)))
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]) - 1)]
    for line, row in zip(table, [None, *rows], strict=True):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False)) + "  " + line[-1])
        if row is not None and row.detail:
            print(" " * (sum(widths[:2]) + 4) + row.detail)
