"""`auditlog demo`: the verifiable-log core end to end, in one process, with no services.

Builds logs from sample events (validate, seal PII, canonicalise, append, cut blocks), signs a
checkpoint per block, writes one event's proof bundle and verifies it as an auditor would.
"""

from __future__ import annotations

import argparse
import os
from hashlib import sha256
from pathlib import Path

from runners.commands.keys import key_paths, load_or_create_signer
from runners.commands.verify_proof import ENTRY_FILE, PROOF_FILE
from runners.settings import Settings
from schemas.events import canonical_entry, parse_event, pii_subject
from schemas.retention import load_policy
from schemas.samples import EventGenerator, start_of_today, to_record
from transforms.merkle import inclusion_proof
from transforms.note import Verifier
from transforms.pii import SubjectKeys
from transforms.sequencer import Entry, LogState, append, checkpoint_for, flush
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
    subject_keys: dict[tuple[str, str], SubjectKeys] = {}
    logs = [LogState(f"log{i}") for i in range(args.logs)]
    leaves: dict[str, list[bytes]] = {s.log_id: [] for s in logs}
    entries: dict[str, list[bytes]] = {s.log_id: [] for s in logs}
    checkpoints: dict[str, str] = {}
    blocks = 0

    def sealed(block: object) -> None:
        nonlocal blocks
        assert block is not None
        header = block.header  # type: ignore[attr-defined]
        for e in block.entries:  # type: ignore[attr-defined]
            leaves[header.log_id].append(e.leaf_hash)
            entries[header.log_id].append(e.entry.canonical)
        checkpoints[header.log_id] = checkpoint_for(header, f"{args.origin}/{header.log_id}", signer)
        blocks += 1

    generator = EventGenerator(seed=42, tenants=5, start=start_of_today())
    policy = load_policy()
    for _ in range(args.events):
        key, value = to_record(generator.event())
        event = parse_event(value)
        subject = (event["tenant_id"], pii_subject(event))
        keys = subject_keys.get(subject)
        if keys is None:
            keys = subject_keys[subject] = SubjectKeys(f"k{len(subject_keys)}", os.urandom(32), os.urandom(32))
        canonical = canonical_entry(event, keys, policy)
        state = logs[int.from_bytes(sha256(key).digest()[:4], "big") % len(logs)]
        block = append(state, Entry(canonical, event["occurred_at"]), args.block_size)
        if block is not None:
            sealed(block)
    for state in logs:
        block = flush(state)
        if block is not None:
            sealed(block)

    for state in logs:
        blocks_in_log = state.last_block.block_index + 1 if state.last_block else 0
        root_hex = state.tree.root().hex()
        print(f"{state.log_id}: {state.tree.size} leaves, {blocks_in_log} blocks, root {root_hex}")
    log_id = max(logs, key=lambda s: s.tree.size).log_id
    index = len(leaves[log_id]) // 2
    proof_text = format_proof(index, inclusion_proof(leaves[log_id], index), checkpoints[log_id])
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
