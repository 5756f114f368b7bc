"""`auditlog verify`: hold ClickHouse and the WORM archive against each other and name every disagreement."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from runners.argtypes import UsageError, utc_time
from runners.beam_options import add_runner_argument, pipeline_options
from schemas.settings import Settings
from transforms.errors import VerificationError
from transforms.note import Verifier
from transforms.retention import RetentionClock

if TYPE_CHECKING:
    from pipelines.verify_report import VerifyReport
    from pipelines.witnessing import WitnessAudit
    from transforms.verify import Finding

REPORT_LIMIT = 50
"""Findings printed per kind in the readable report (all of them are in --json)."""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "verify",
        help="verify the archive and ClickHouse against each other (exit 0 only when all agrees)",
        description="Replays every log of the WORM archive (original object versions, leaf hashes, "
        "block roots, tree roots, the hash chain, checkpoint signatures, consistency between successive "
        "checkpoints) and holds ClickHouse's rows, leaves, blocks and checkpoints against it. Each "
        "finding names the store that disagrees, the kind (modified, deleted, inserted, reordered, chain "
        "broken, bad signature, checkpoint rolled back or forked, archive object overwritten), the log, "
        "the leaf and the event. A clean run records each log's newest checkpoint in the witness file, "
        "so a later rollback or fork is caught even if both stores are rewound. Exit 0 when everything "
        "agrees, 1 with findings, 2 on bad usage. --runner prism runs the pipeline on Beam's Prism runner "
        "with its workers in processes of their own; extra arguments after -- go to Beam (e.g. "
        "-- --runner=PortableRunner --job_endpoint=embed --environment_type=LOOPBACK).",
    )
    p.add_argument("--tenant", help="report only this tenant's event findings (structure is always checked)")
    p.add_argument("--log", action="append", dest="logs", metavar="LOG", help="verify only this log (repeatable)")
    p.add_argument("--since", type=utc_time, help="report only event findings at or after this time (ISO 8601)")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.add_argument(
        "--witness",
        type=Path,
        help="witness file of checkpoints seen by earlier clean runs "
        "(default $AUDITLOG_HOME/verify/witness.<bucket>.json)",
    )
    p.add_argument("--no-witness", action="store_true", help="neither read nor update the witness file")
    p.add_argument(
        "--min-witnesses",
        type=int,
        metavar="N",
        help="require N valid cosignatures from the configured witnesses (AUDITLOG_WITNESSES) on every "
        "checkpoint (default AUDITLOG_MIN_WITNESSES, 0); every stored cosignature and recorded witness "
        "refusal is checked either way",
    )
    add_runner_argument(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.archive_history import archive_from_spec
    from pipelines.ingest_config import archive_spec
    from pipelines.io.clickhouse import open_clickhouse
    from pipelines.retention import read_holds
    from pipelines.verify import run_verify
    from pipelines.verify_report import load_witnesses, save_witnesses

    if not settings.verifier_key_file.exists():
        raise UsageError(
            f"no verifier key at {settings.verifier_key_file}; the deployment's checkpoints cannot be "
            "checked without it (copy the .vkey there, or set AUDITLOG_HOME / AUDITLOG_ORIGIN)"
        )
    verifier_key = settings.verifier_key_file.read_text()
    witness_path = args.witness or settings.home / "verify" / f"witness.{settings.bucket}.json"
    try:
        witnesses = {} if args.no_witness else load_witnesses(witness_path)
    except VerificationError as exc:  # a witness file that cannot be read is not evidence that failed
        raise UsageError(str(exc)) from exc
    spec = archive_spec(settings)
    started = time.monotonic()
    archive_logs = set(archive_from_spec(spec).list_logs())
    clickhouse = open_clickhouse(settings.effective_clickhouse_url)
    try:
        clickhouse.ensure_schema()
        indexed_logs = clickhouse.indexed_logs()
    finally:
        clickhouse.close()
    log_ids = sorted(archive_logs | indexed_logs | set(witnesses))
    # Retention is judged now: an event whose retention ended and that no legal hold keeps is
    # expired by policy; anything else missing is deleted.
    clock = RetentionClock.at(dt.datetime.now(dt.UTC), read_holds(archive_from_spec(spec)))
    if args.logs:
        unknown = sorted(set(args.logs) - set(log_ids))
        if unknown:
            raise UsageError(f"no log {', '.join(unknown)} in the archive or ClickHouse; logs: {log_ids}")
        log_ids = sorted(args.logs)
    print(f"verifying {len(log_ids)} logs …", file=sys.stderr)
    with pipeline_options(args, settings) as options:
        report = run_verify(
            log_ids,
            spec,
            settings.effective_clickhouse_url,
            verifier_key,
            settings.origin,
            {k: v for k, v in witnesses.items() if k in log_ids},
            only_logs=log_ids,
            beam_args=options,
            progress=sys.stderr.isatty() and not args.json,
            clock=clock,
            results_base=settings.beam_results or None,
        )
    witnessing = verify_cosignatures(settings, spec, verifier_key, log_ids, args.min_witnesses)
    elapsed = time.monotonic() - started
    for log_report in report.logs:
        log_report.findings = [f for f in log_report.findings if f.concerns(args.tenant, args.since)]
    if not args.no_witness and report.ok and not witnessing.problems:
        save_witnesses(witness_path, report, witnesses)
    if args.json:
        out = report.to_json()
        out["seconds"] = round(elapsed, 3)
        out["cosignatures"] = {"verified": witnessing.cosignatures, "problems": witnessing.problems}
        print(json.dumps(out, indent=2))
    else:
        print_report(report, elapsed)
        print_cosignatures(witnessing)
    return 0 if report.ok and not witnessing.problems else 1


def verify_cosignatures(
    settings: Settings, spec: dict[str, object], verifier_key: str, log_ids: list[str], min_witnesses: int | None
) -> WitnessAudit:
    """Checks the witnesses' stored cosignatures and refusals (pipelines/witnessing/)."""
    from pipelines.archive_history import archive_from_spec
    from pipelines.witnessing import verify_witnessing, witnesses_from_settings

    return verify_witnessing(
        archive_from_spec(spec),
        Verifier.from_key(verifier_key),
        settings.origin,
        witnesses_from_settings(settings),
        settings.min_witnesses if min_witnesses is None else min_witnesses,
        log_ids=log_ids,
    )


def print_cosignatures(audit: WitnessAudit) -> None:
    if not audit.problems:
        print(f"witnesses: {audit.cosignatures} stored cosignature(s) verify")
        return
    print(f"NOT VERIFIED: witnesses: {len(audit.problems)} problem(s); {audit.cosignatures} cosignature(s) verify")
    for line in audit.problems[:REPORT_LIMIT]:
        print(f"  {line}")
    if len(audit.problems) > REPORT_LIMIT:
        print(f"  … and {len(audit.problems) - REPORT_LIMIT} more (see --json)")


def print_report(report: VerifyReport, elapsed: float) -> None:
    rate = report.events / elapsed if elapsed else 0.0
    for r in report.logs:
        state = "ok" if not r.findings else f"{len(r.findings)} finding(s)"
        tiles = f"{r.tiles:>7} tiles" if r.tiles else "  no tiles"
        print(
            f"  {r.log_id:<32} {r.events:>10} events {r.blocks:>7} blocks {tiles}  checkpoint {r.checkpoint_size:>10}"
            f"  {state}"
        )
    findings = report.findings
    untiled = [r.log_id for r in report.logs if not r.tiles and r.events]
    if untiled:
        print(f"{len(untiled)} log(s) have no tlog-tiles yet (written before tiles): `auditlog tiles migrate`")
    expired = report.expired_events
    if expired:
        blocks = sum(r.expired_blocks for r in report.logs)
        print(
            f"expired by policy: {expired} events whose retention ended (not expected in ClickHouse; "
            f"{blocks} block objects replaced by their leaf hashes), every other proof intact"
        )
    if not findings:
        print(
            f"verified: {report.events} events in {len(report.logs)} logs agree in the archive and ClickHouse "
            f"({elapsed:.1f} s, {rate:,.0f} events/s)"
        )
        return
    by_kind: dict[str, list[Finding]] = {}
    for f in findings:
        by_kind.setdefault(f"{f.store.value}: {f.kind.value}", []).append(f)
    print(f"NOT VERIFIED: {len(findings)} finding(s) in {report.events} events ({elapsed:.1f} s)")
    for kind, items in sorted(by_kind.items()):
        print(f"\n{kind} ({len(items)})")
        for f in items[:REPORT_LIMIT]:
            print(f"  {f}")
        if len(items) > REPORT_LIMIT:
            print(f"  … and {len(items) - REPORT_LIMIT} more (see --json)")
    stores = sorted({f.store.value for f in findings})
    if stores == ["clickhouse"]:
        print("\nThe archive verifies; only ClickHouse disagrees with it: `auditlog rebuild` restores the index.")
    else:
        print("\nThe archive itself is affected: treat this as an incident (the WORM originals are the evidence).")
