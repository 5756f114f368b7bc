"""`auditlog rebuild`: repopulate ClickHouse from the WORM archive alone, verifying as it goes."""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from runners.argtypes import UsageError
from runners.beam_options import add_runner_argument, pipeline_options
from schemas.settings import Settings
from transforms.retention import active_holds, format_time


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "rebuild",
        help="rebuild ClickHouse from the WORM archive (after tampering, bit rot or a lost disk)",
        description="Drops the auditlog tables and reloads every log from the archive's original object "
        "versions, each block verified (chain, roots, signed checkpoint) before it is written. With --log, "
        "only those logs' rows are deleted and reloaded. Stop the indexer (`auditlog ingest`, `auditlog "
        "index --follow`, `auditlog serve`) first on embedded chDB. Exit 0 when every log was rebuilt in "
        "full, 1 when a log stopped at a block the archive cannot prove. --runner prism runs it on Beam's "
        "Prism runner with its workers in processes of their own; extra arguments after -- go to Beam.",
    )
    p.add_argument("--log", action="append", dest="logs", metavar="LOG", help="rebuild only this log (repeatable)")
    add_runner_argument(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.archive_history import archive_from_spec
    from pipelines.ingest_config import archive_spec
    from pipelines.io.clickhouse import open_clickhouse
    from pipelines.retention import read_holds
    from pipelines.verify import run_rebuild

    if not settings.verifier_key_file.exists():
        raise UsageError(f"no verifier key at {settings.verifier_key_file}; cannot check the archive")
    spec = archive_spec(settings)
    archive = archive_from_spec(spec)
    log_ids = archive.list_logs()
    if args.logs:
        unknown = sorted(set(args.logs) - set(log_ids))
        if unknown:
            raise UsageError(f"the archive holds no log {', '.join(unknown)}; logs: {log_ids}")
        log_ids = sorted(args.logs)
    clickhouse = open_clickhouse(settings.effective_clickhouse_url)
    try:
        if not args.logs:
            clickhouse.drop_tables()
        clickhouse.ensure_schema()
    finally:
        clickhouse.close()  # closed while the pipeline runs: its steps may open chDB in another process
    print(f"rebuilding {len(log_ids)} logs from the archive …", file=sys.stderr)
    with pipeline_options(args, settings) as options:
        report = run_rebuild(
            log_ids,
            spec,
            settings.effective_clickhouse_url,
            settings.verifier_key_file.read_text(),
            settings.origin,
            fresh=not args.logs,
            beam_args=options,
            holds=active_holds(read_holds(archive), format_time(dt.datetime.now(dt.UTC))),
            results_base=settings.beam_results or None,
        )
    for r in report.logs:
        print(f"  {r.log_id:<32} {r.events:>10} events {r.blocks:>7} blocks  checkpoint {r.checkpoint_size:>10}")
        for f in r.findings:
            print(f"    {f}")
    if report.findings:
        print("rebuilt only what the archive proves; the findings above need an investigation (`auditlog verify`)")
        return 1
    print(f"rebuilt: {report.events} events in {len(report.logs)} logs, every block verified")
    return 0
