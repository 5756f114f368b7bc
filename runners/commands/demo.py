"""`auditlog demo`: the verifiable-log core end to end, in one process, with no services.

Builds logs from sample events with the ingest job's own per-log step (`LogSequencer`: validate,
seal PII, canonicalise, dedupe, append, cut blocks, sign a checkpoint per block), writes one
event's proof bundle and verifies it as an auditor would.
"""

from __future__ import annotations

import argparse
from hashlib import sha256
from pathlib import Path
from typing import Any

from pipelines.ingest_core import IngestOptions, LogCursor, LogSequencer, MemoryDedupe, SourceRecord
from pipelines.io.keystore import InMemoryKeyStore
from runners.commands.verify_proof import ENTRY_FILE, PROOF_FILE
from runners.deployment import key_paths, load_or_create_signer
from schemas.samples import EventGenerator, start_of_today, to_record
from schemas.settings import Settings
from transforms.blocks import decode_block_object
from transforms.merkle import inclusion_proof, leaf_hash
from transforms.note import Verifier
from transforms.tlogproof import format_proof, verify_proof


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "demo",
        help="build a log from sample events, sign checkpoints, write and verify a proof",
        description="Runs the verifiable-log core on sample events in-process (no services needed).",
    )
    p.add_argument("--events", type=int, default=2000, help="sample events to log (default 2000)")
    p.add_argument("--logs", type=int, default=2, help="logs (shards) to spread tenants over (default 2)")
    p.add_argument("--block-size", type=int, default=256, help="leaves per block (default 256)")
    p.add_argument("--out", type=Path, help="where to write the proof bundle (default HOME/demo)")
    p.add_argument("--origin", default="auditlog.local/demo", help="checkpoint origin prefix")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    out: Path = args.out or settings.home / "demo"
    signer = load_or_create_signer(settings.keys_dir, args.origin)
    # The ingest job's own per-log step, without Flink: one LogSequencer, one cursor per log.
    options = IngestOptions(topic="demo", origin_prefix=args.origin, block_size=args.block_size)
    sequencer = LogSequencer(options, InMemoryKeyStore(), signer)
    cursors = [LogCursor(options.log_id(p)) for p in range(args.logs)]
    dedupe = MemoryDedupe()
    offsets = [0] * args.logs
    entries: dict[str, list[bytes]] = {c.log_id: [] for c in cursors}
    checkpoints: dict[str, str] = {}
    blocks = 0

    def sealed(outputs: list[tuple[str, Any]]) -> None:
        nonlocal blocks
        for kind, block in outputs:
            if kind != "block":
                continue
            entries[block.log_id].extend(decode_block_object(block.block_object)[1])
            checkpoints[block.log_id] = block.checkpoint
            blocks += 1

    generator = EventGenerator(seed=42, tenants=5, start=start_of_today())
    for _ in range(args.events):
        key, value = to_record(generator.event())
        partition = int.from_bytes(sha256(key).digest()[:4], "big") % args.logs
        record = SourceRecord(partition, offsets[partition], 0, key, value)
        offsets[partition] += 1
        sealed(sequencer.step(cursors[partition], dedupe, record))
    for cursor in cursors:
        block = sequencer.seal(cursor)
        sealed([("block", block)] if block else [])

    for cursor in cursors:
        blocks_in_log = cursor.last_block.block_index + 1 if cursor.last_block else 0
        print(f"{cursor.log_id}: {cursor.tree.size} leaves, {blocks_in_log} blocks, root {cursor.tree.root().hex()}")
    log_id = max(cursors, key=lambda c: c.tree.size).log_id
    leaves = [leaf_hash(e) for e in entries[log_id]]
    index = len(leaves) // 2
    proof_text = format_proof(index, inclusion_proof(leaves, index), checkpoints[log_id])
    out.mkdir(parents=True, exist_ok=True)
    (out / ENTRY_FILE).write_bytes(entries[log_id][index])
    (out / PROOF_FILE).write_text(proof_text)
    _, vkey_path = key_paths(settings.keys_dir, signer.name)
    verifier = Verifier.from_key(vkey_path.read_text())
    _, checkpoint = verify_proof(proof_text, verifier, entry=entries[log_id][index])
    print(f"{blocks} blocks sealed, {len(checkpoints)} signed checkpoints; signer {verifier.encode()}")
    print(f"proof of leaf {index} of {checkpoint.origin} written to {out} and verified.")
    print(f"check it yourself:  auditlog verify-proof {out} --key {vkey_path}")
    return 0
