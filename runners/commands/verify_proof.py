"""`auditlog verify-proof`: check a tlog-proof@v1 bundle offline with only the public key."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from runners.argtypes import UsageError
from schemas.settings import Settings
from transforms.cosignature import CosignatureVerifier, check_cosigned
from transforms.errors import VerificationError
from transforms.note import Verifier
from transforms.tlogproof import verify_proof

PROOF_FILE = "proof.tlog-proof"
ENTRY_FILE = "entry.json"


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "verify-proof",
        help="verify an inclusion proof offline",
        description="Verifies a c2sp.org/tlog-proof@v1 bundle: the checkpoint's Ed25519 signature, "
        "then the entry's inclusion under the checkpointed root, then the witnesses' cosignatures "
        "(C2SP tlog-cosignature) on that checkpoint with --witness/--min-witnesses. BUNDLE is a .tlog-proof file or a "
        f"directory holding {PROOF_FILE} and {ENTRY_FILE}. Exit 0 when it verifies, 1 when it does "
        "not, 2 on bad usage.",
    )
    p.add_argument("bundle", type=Path, metavar="BUNDLE")
    p.add_argument("--key", required=True, help="verifier key (name+keyid+base64) or a file holding it")
    p.add_argument("--entry", type=Path, help="the entry's canonical bytes (default: BUNDLE/entry.json)")
    p.add_argument("--origin", help="require this checkpoint origin")
    p.add_argument(
        "--witness",
        action="append",
        default=[],
        metavar="WVKEY",
        help="a witness's cosignature/v1 verifier key (name+keyid+base64) or a file holding it (repeatable); "
        "its cosignature on the checkpoint, if present, must verify",
    )
    p.add_argument(
        "--min-witnesses",
        type=int,
        default=0,
        metavar="N",
        help="require valid cosignatures from at least N of the --witness keys (default 0)",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    bundle: Path = args.bundle
    proof_path = bundle / PROOF_FILE if bundle.is_dir() else bundle
    entry_path = args.entry or (bundle / ENTRY_FILE if bundle.is_dir() else None)
    if not proof_path.is_file():
        raise UsageError(f"no proof at {proof_path}; give a .tlog-proof file or a directory holding {PROOF_FILE}")
    if entry_path is None or not entry_path.is_file():
        raise UsageError(f"no entry at {entry_path}; pass --entry FILE with the event's canonical bytes")
    key_text = Path(args.key).read_text() if Path(args.key).is_file() else args.key
    try:
        verifier = Verifier.from_key(key_text)
        witnesses = [
            CosignatureVerifier.from_key(Path(w).read_text() if Path(w).is_file() else w) for w in args.witness
        ]
        proof, checkpoint = verify_proof(
            proof_path.read_text(), verifier, entry=entry_path.read_bytes(), origin=args.origin
        )
        report = check_cosigned(proof.signed_checkpoint, verifier, witnesses, args.min_witnesses)
    except VerificationError as exc:
        print(f"NOT VERIFIED: {type(exc).__name__}: {exc}")
        return 1
    print(
        f"verified: entry {entry_path.name} is leaf {proof.index} of {checkpoint.origin} "
        f"(tree size {checkpoint.size}, root {checkpoint.root.hex()[:16]}…), "
        f"checkpoint signed by {verifier.name}/{verifier.key_id:08x}"
    )
    for c in report.cosigned:
        when = dt.datetime.fromtimestamp(c.timestamp, dt.UTC).isoformat()
        print(f"cosigned by witness {c.witness}/{c.key_id:08x} at {when}")
    if witnesses:
        print(f"{len(report.cosigned)} of {len(witnesses)} witness(es) cosigned (required: {args.min_witnesses})")
    return 0
