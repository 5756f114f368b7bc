"""`auditlog`: the one command line of the project.

Each subcommand lives in its own module under `runners/commands/` and registers itself with
`register(subparsers)`; heavy libraries (pyflink, boto3, chdb) are imported inside handlers so
that `auditlog --help` stays fast.

    auditlog --help
    auditlog stack up
"""

from __future__ import annotations

import argparse
import importlib
import sys

from schemas.settings import Settings
from transforms.errors import AuditlogError

COMMAND_MODULES = (
    "runners.commands.stack",
    "runners.commands.keys",
    "runners.commands.verify_proof",
    "runners.commands.demo",
    "runners.commands.produce",
    "runners.commands.ingest",
    "runners.commands.proof",
    "runners.commands.index",
    "runners.commands.cut_ticker",
    "runners.commands.search",
    "runners.commands.gateway",
    "runners.commands.outbox",
    "runners.commands.apikeys",
    "runners.commands.record",
    "runners.commands.replay",
    "runners.commands.verify",
    "runners.commands.witness",
    "runners.commands.rebuild",
    "runners.commands.export",
    "runners.commands.serve",
    "runners.commands.erase",
    "runners.commands.hold",
    "runners.commands.expire",
    "runners.commands.tiles",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="auditlog",
        description="Tamper-evident audit log: ingest, prove, verify.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs one subcommand; an AuditlogError is reported here, once, for every command.

    Exit status: 0 done, 1 a check failed, 2 bad usage or the command could not do what was asked
    (argparse's own usage errors are 2 too), 130 interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    try:
        return int(args.handler(args, settings) or 0)
    except AuditlogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
