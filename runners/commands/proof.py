"""`auditlog proof`: write one event's canonical bytes and its tlog-proof@v1 bundle.

    auditlog proof --tenant t_1000 evt_8c1f… --out proof-dir/
    auditlog verify-proof proof-dir/ --key var/keys/auditlog.local.vkey

The checkpoint comes from the WORM archive (the source of truth) and is checked with this
deployment's key; the event is found in ClickHouse, and its bytes and the proof's hashes are read
from the log's tiles in the archive. The bundle is verified before it is written, so tiles that
disagree with the signed log are reported instead of producing a proof that cannot verify.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from runners.commands.verify_proof import ENTRY_FILE, PROOF_FILE
from schemas.settings import Settings
from transforms.errors import VerificationError
from transforms.note import Verifier


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "proof",
        help="write an event's canonical bytes and inclusion proof bundle",
        description=f"Writes OUT/{ENTRY_FILE} (the event's canonical bytes) and OUT/{PROOF_FILE} "
        "(a c2sp.org/tlog-proof@v1 bundle against the newest signed checkpoint).",
    )
    p.add_argument("event_id", metavar="EVENT_ID")
    p.add_argument("--tenant", required=True, help="tenant the event belongs to")
    p.add_argument("--out", required=True, type=Path, help="directory to write the bundle into")
    p.set_defaults(handler=run)


def build_proof(settings: Settings, tenant_id: str, event_id: str) -> tuple[bytes, str]:
    """Returns (canonical bytes, proof text) of an event; raises EventNotFound or VerificationError."""
    from pipelines.ingest_config import archive_spec
    from pipelines.io.archive import open_archive
    from pipelines.io.clickhouse import open_clickhouse
    from pipelines.prover import Prover

    clickhouse = open_clickhouse(settings.effective_clickhouse_url)
    try:
        verifier = Verifier.from_key(settings.verifier_key_file.read_text())
        prover = Prover(open_archive(**archive_spec(settings)), clickhouse, verifier, settings.origin)
        proof = prover.proof(tenant_id, event_id)
    finally:
        clickhouse.close()
    return proof.canonical, proof.text


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        canonical, text = build_proof(settings, args.tenant, args.event_id)
    except VerificationError as exc:
        raise VerificationError(f"the stored event does not match the signed log: {exc}") from exc
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / ENTRY_FILE).write_bytes(canonical)
    (args.out / PROOF_FILE).write_text(text)
    print(f"wrote {args.out / ENTRY_FILE} and {args.out / PROOF_FILE}")
    print(f"check it:  auditlog verify-proof {args.out} --key {settings.verifier_key_file}")
    return 0
