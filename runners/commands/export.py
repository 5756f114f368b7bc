"""`auditlog export` and `auditlog verify-export`: a tenant's events to CSV / JSON Lines / Parquet, signed."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from runners.argtypes import UsageError, utc_time
from runners.beam_options import add_runner_argument, pipeline_options
from runners.deployment import load_or_create_signer, with_master_key
from schemas.settings import Settings
from transforms.errors import VerificationError
from transforms.note import Verifier

if TYPE_CHECKING:
    from pipelines.export import ExportKeys
    from pipelines.prover import Prover


def _formats(text: str) -> tuple[str, ...]:
    from pipelines.export import FORMATS

    chosen = tuple(dict.fromkeys(f.strip() for f in text.split(",") if f.strip()))
    bad = [f for f in chosen if f not in FORMATS]
    if bad or not chosen:
        raise argparse.ArgumentTypeError(f"format {text!r}: choose one or more of {','.join(FORMATS)}")
    return chosen


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "export",
        help="export a tenant's events (CSV, JSON Lines, Parquet) with a signed manifest",
        description="Writes OUT/events.{csv,jsonl,parquet} for one tenant, a time range [--from, --to) and "
        "optional filters, in time order, and OUT/MANIFEST.note: a signed note (the deployment's checkpoint "
        "key) listing each file's SHA-256 and rows, the query, and every log's newest checkpoint. PII is "
        "opened with the key store (erased subjects show as [erased]); --sealed leaves it sealed. --proofs "
        "adds OUT/proofs/LOG.INDEX.{json,tlog-proof} for every event. --runner prism runs the pipeline on "
        "Beam's Prism runner with its workers in processes of their own; extra arguments after -- go to Beam.",
    )
    p.add_argument("--tenant", required=True)
    p.add_argument("--from", dest="start", type=utc_time, help="first time included (ISO 8601, e.g. 2026-11-01)")
    p.add_argument("--to", dest="end", type=utc_time, help="first time excluded")
    p.add_argument("--actor", help="only this actor id")
    p.add_argument("--action", help="only this action")
    p.add_argument("--resource-type")
    p.add_argument("--resource-id")
    p.add_argument("--result", choices=("SUCCESS", "FAILURE"))
    p.add_argument(
        "--format", type=_formats, default=("csv", "jsonl", "parquet"), help="csv,jsonl,parquet (default all)"
    )
    p.add_argument("--sealed", action="store_true", help="do not open PII with the key store")
    p.add_argument("--proofs", action="store_true", help="write an inclusion proof bundle per event")
    p.add_argument("--out", required=True, type=Path, help="an empty or new directory")
    add_runner_argument(p)
    p.set_defaults(handler=run)

    v = subparsers.add_parser(
        "verify-export",
        help="check an export's signed manifest and file hashes offline",
        description="Verifies OUT/MANIFEST.note with the verifier key and every listed file's SHA-256. "
        "Exit 0 when all match, 1 when not, 2 on bad usage.",
    )
    v.add_argument("out", type=Path, metavar="DIR")
    v.add_argument("--key", required=True, help="verifier key (name+keyid+base64) or a file holding it")
    v.set_defaults(handler=run_verify_export)


class _ProverOpener:
    """Opens a Prover inside the pipeline step that writes proofs (picklable: holds only settings)."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def __call__(self) -> tuple[Prover, Callable[[], None]]:
        from pipelines.ingest_config import archive_spec
        from pipelines.io.archive import open_archive
        from pipelines.io.clickhouse import open_clickhouse
        from pipelines.prover import Prover

        clickhouse = open_clickhouse(self.settings.effective_clickhouse_url)
        verifier = Verifier.from_key(self.settings.verifier_key_file.read_text())
        prover = Prover(open_archive(**archive_spec(self.settings)), clickhouse, verifier, self.settings.origin)
        return prover, clickhouse.close


class KeystoreOpener:
    """Opens the deployment's key store inside the pipeline step that presents events (picklable)."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def __call__(self) -> ExportKeys:
        from pipelines.io.keystore import open_keystore

        return open_keystore(self.settings)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.export import ExportQuery, archive_heads, run_export
    from pipelines.ingest_config import archive_spec
    from pipelines.io.archive import open_archive

    filters = {
        name: value
        for name, value in (
            ("actor_id", args.actor),
            ("action", args.action),
            ("resource_type", args.resource_type),
            ("resource_id", args.resource_id),
            ("result", args.result),
        )
        if value is not None
    }
    if args.start and args.end and args.start >= args.end:
        raise UsageError(f"--from {args.start} is not before --to {args.end}")
    query = ExportQuery(args.tenant, args.start, args.end, filters)
    if not settings.signer_key_file.exists():
        raise UsageError(f"no signing key at {settings.signer_key_file} to sign the manifest")
    signer = load_or_create_signer(settings.keys_dir, settings.origin)
    keystore = None
    if not args.sealed:
        settings = with_master_key(settings)
        keystore = KeystoreOpener(settings)
    try:
        heads = archive_heads(open_archive(**archive_spec(settings)))
        with pipeline_options(args, settings) as options:
            manifest = run_export(
                query,
                args.out,
                args.format,
                settings.effective_clickhouse_url,
                signer,
                heads,
                keystore_opener=keystore,
                prover_opener=_ProverOpener(settings) if args.proofs else None,
                beam_args=options,
            )
    except FileExistsError as exc:
        raise UsageError(str(exc)) from exc
    except VerificationError as exc:
        raise VerificationError(
            f"an exported event does not match the signed log: {exc}; run `auditlog verify`"
        ) from exc
    for entry in manifest["files"]:
        print(f"  {entry['name']:<16} {entry['rows']:>9} rows  sha256 {entry['sha256']}")
    if manifest["proofs"]:
        print(f"  proofs/          {manifest['proofs']:>9} bundles")
    print(
        f"exported {manifest['rows']} events of {args.tenant} to {args.out}; signed manifest {args.out}/MANIFEST.note"
    )
    print(f"check it:  auditlog verify-export {args.out} --key {settings.verifier_key_file}")
    return 0


def run_verify_export(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.export import ManifestError, verify_export

    key_text = Path(args.key).read_text() if Path(args.key).is_file() else args.key
    try:
        verifier = Verifier.from_key(key_text)
    except (ValueError, VerificationError) as exc:
        raise UsageError(f"--key is not a verifier key: {exc}") from exc
    try:
        manifest = verify_export(args.out, verifier)
    except (ManifestError, VerificationError) as exc:
        print(f"NOT VERIFIED: {exc}")
        return 1
    print(f"verified: {len(manifest['files'])} file(s), {manifest['rows']} rows, signed by {verifier.name}")
    return 0
