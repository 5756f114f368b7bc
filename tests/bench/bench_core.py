"""Benchmarks of the verifiable-log core, printed as a table (`make bench`). Not a test.

Every figure is single-threaded Python on one core; the machine's core count is printed. The last
table sets the ingest step's stages on the Python reference against the compiled event core
(transforms/native), µs per event; `bench_core.py --core` prints that table alone.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from schemas.events import canonical_bytes, parse_event, protect_event  # noqa: E402
from schemas.samples import EventGenerator, to_record  # noqa: E402
from transforms.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint  # noqa: E402
from transforms.merkle import (  # noqa: E402
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root,
    verify_inclusion,
)
from transforms.note import Signer  # noqa: E402
from transforms.pii import SubjectKeys  # noqa: E402

ROWS: list[tuple[str, str, str]] = []


def timed(fn: Callable[[], object], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def row(name: str, value: str, target: str = "") -> None:
    ROWS.append((name, value, target))
    print(f"  {name:<58} {value:>18}  {target}", flush=True)


def main() -> None:
    print(f"auditlog core benchmarks — {os.cpu_count()} cores, Python {sys.version.split()[0]}, one thread\n")
    n = 1_000_000
    leaves = [leaf_hash(i.to_bytes(8, "big")) for i in range(n)]

    def appends() -> None:
        cr = CompactRange()
        for h in leaves:
            cr.append(h)

    def extend() -> None:
        CompactRange().extend(leaves)

    t = timed(appends)
    row("compact range append(), leaf hashes/s", f"{n / t:,.0f}", "target ≥ 500,000")
    t = timed(extend)
    row("compact range extend(), leaf hashes/s", f"{n / t:,.0f}", "target ≥ 500,000")
    data = [os.urandom(500) for _ in range(200_000)]
    t = timed(lambda: CompactRange().extend(leaf_hash(d) for d in data))
    row("leaf_hash(500 B) + append, entries/s", f"{len(data) / t:,.0f}")

    for size in (1_000, 100_000, 1_000_000):
        sub = leaves[:size]
        r = root(sub)
        proof = inclusion_proof(sub, size // 3)
        t = (
            timed(
                lambda sub=sub, size=size, proof=proof, r=r: [
                    verify_inclusion(sub[size // 3], size // 3, size, proof, r) for _ in range(2000)
                ]
            )
            / 2000
        )
        row(
            f"inclusion proof, n={size:>9,}: hashes / verify time",
            f"{len(proof)} / {t * 1e6:.1f} µs",
            "O(log n)",
        )
        cons = consistency_proof(sub, size // 2 + 1)
        row(f"consistency proof, n={size:>9,}: hashes", f"{len(cons)}", "O(log n)")
    t = timed(lambda: inclusion_proof(leaves, 777_777), repeat=1)
    row(
        "inclusion_proof() from 1,000,000 stored leaf hashes",
        f"{t * 1000:,.0f} ms",
        "O(n) batch; see ingest for cached subtrees",
    )

    signer = Signer.generate("auditlog.bench/log")
    cp = Checkpoint("auditlog.bench/log", n, root(leaves))
    t = timed(lambda: [sign_checkpoint(cp, signer) for _ in range(2000)]) / 2000
    row("sign checkpoint (Ed25519), per second", f"{1 / t:,.0f}")
    note = sign_checkpoint(cp, signer)
    verifier = signer.verifier()
    t = timed(lambda: [open_checkpoint(note, verifier) for _ in range(2000)]) / 2000
    row("verify signed checkpoint, per second", f"{1 / t:,.0f}")

    gen = EventGenerator(seed=1)
    records = [to_record(gen.event())[1] for _ in range(50_000)]
    keys = SubjectKeys("k", b"\x01" * 32, b"\x02" * 32)
    avg = sum(map(len, records)) / len(records)
    t = timed(lambda: [parse_event(r) for r in records], repeat=1)
    row(f"parse + validate event ({avg:.0f} B JSON), events/s", f"{len(records) / t:,.0f}")
    events = [parse_event(r) for r in records]
    t = timed(lambda: [protect_event(e, keys) for e in events], repeat=1)
    row("seal PII (AES-GCM-SIV + HMAC, 4 fields), events/s", f"{len(events) / t:,.0f}")
    docs = [protect_event(e, keys) for e in events]
    t = timed(lambda: [canonical_bytes(d) for d in docs], repeat=1)
    row("RFC 8785 canonical bytes, events/s", f"{len(docs) / t:,.0f}")
    t = timed(
        lambda: CompactRange().extend(leaf_hash(canonical_bytes(protect_event(parse_event(r), keys))) for r in records),
        repeat=1,
    )
    row("whole per-event core path (parse→seal→JCS→leaf→append), events/s", f"{len(records) / t:,.0f}")

    core_table()
    indexer_table()


def per_event(fn: Callable[[], object], count: int) -> float:
    """Best of three runs of `fn`, in µs per event."""
    return timed(fn) / count * 1e6


def core_table() -> None:
    """The ingest step's stages, Python reference against the compiled core (schemas/native.py), µs per event."""
    from pipelines.ingest_core import IngestOptions, LogCursor, LogSequencer, MemoryDedupe, SourceRecord
    from pipelines.io.keystore import InMemoryKeyStore
    from pipelines.recording import iter_records
    from schemas.events import pii_subject
    from schemas.native import event_core
    from schemas.retention import load_policy
    from tests.golden import RECORDING, RETENTION_POLICY

    core = event_core("native")
    policy = load_policy(RETENTION_POLICY)
    store = InMemoryKeyStore(key_seed=b"bench")
    values = [r.value for r in iter_records(RECORDING) if r.value is not None]
    parsed = [p for p in (core.parse(v) for v in values) if p is not None]
    records = [v for v in values if core.parse(v) is not None]
    n = len(records)
    events = [parse_event(r) for r in records]
    keys = [store.get_or_create(e["tenant_id"], pii_subject(e)) for e in events]
    sealing = [(k.enc_key, k.mac_key, k.key_id) for k in keys]
    stamps = [policy.stamp(p.action, p.occurred_at) for p in parsed]
    docs = [protect_event(e, k) for e, k in zip(events, keys, strict=True)]
    for doc, stamp in zip(docs, stamps, strict=True):
        doc["retention"] = stamp
    entries = [canonical_bytes(d) for d in docs]
    pairs = [(s["class"], s["until"]) for s in stamps]
    print(f"\nthe ingest step per stage, µs per event ({n:,} valid events of the committed recording, one thread)")
    print(f"  {'stage':<44} {'Python':>9} {'compiled':>9}")
    python_parse = per_event(lambda: [parse_event(r) for r in records], n)
    native_parse = per_event(lambda: core.parse_batch(records), n)
    print(f"  {'parse + validate + normalise':<44} {python_parse:>9.2f} {native_parse:>9.2f}")
    t = per_event(lambda: [store.get_or_create(p.tenant_id, p.subject) for p in parsed], n)
    print(f"  {'subject keys (key store cache; Python both)':<44} {t:>9.2f} {t:>9.2f}")
    t = per_event(lambda: [policy.stamp(p.action, p.occurred_at) for p in parsed], n)
    print(f"  {'retention stamp (Python both)':<44} {t:>9.2f} {t:>9.2f}")
    python_seal = per_event(lambda: [protect_event(e, k) for e, k in zip(events, keys, strict=True)], n)
    python_jcs = per_event(lambda: [canonical_bytes(d) for d in docs], n)
    python_leaf = per_event(lambda: [leaf_hash(e) for e in entries], n)
    native_rest = per_event(lambda: core.entry_batch(parsed, sealing, pairs), n)
    print(f"  {'seal PII':<44} {python_seal:>9.2f}")
    print(f"  {'canonicalise (RFC 8785)':<44} {python_jcs:>9.2f}")
    print(f"  {'leaf hash':<44} {python_leaf:>9.2f}")
    python_rest = python_seal + python_jcs + python_leaf
    print(f"  {'seal + canonicalise + leaf hash, together':<44} {python_rest:>9.2f} {native_rest:>9.2f}")
    for choice in ("python", "native"):
        options = IngestOptions(topic="b", origin_prefix="auditlog.bench", retention=policy, core=choice)
        sequencer = LogSequencer(options, InMemoryKeyStore(key_seed=b"bench"), Signer.generate("auditlog.bench"))

        def run(sequencer: LogSequencer = sequencer) -> None:
            cursor, dedupe = LogCursor("b.p0"), MemoryDedupe()
            for offset, value in enumerate(values):
                sequencer.step(cursor, dedupe, SourceRecord(0, offset, 0, None, value))
            sequencer.seal(cursor)

        row(f"LogSequencer.step, whole (core={choice}), µs per record", f"{per_event(run, len(values)):.2f}")


def indexer_table(events: int = 40_000, block_size: int = 1_000) -> None:
    """The indexer's rows and inserts into embedded chDB, µs per event: before, reference, compiled, grouped.

    Wall time, and the process's CPU time (chDB's insert and merge threads included) over the
    same span. Each variant writes the same blocks into a fresh chDB of its own.
    """
    import resource
    import tempfile

    from pipelines.io.clickhouse import open_clickhouse
    from pipelines.io.clickhouse.arrow import SealedBlock, leaves_table, logs_table
    from pipelines.io.clickhouse.schema import LEAVES_TABLE, LOGS_TABLE
    from pipelines.io.keystore import InMemoryKeyStore
    from schemas.native import index_columns
    from schemas.rows import AUDIT_LOG_COLUMNS, LEAF_COLUMNS, block_rows
    from tests.synthetic import sealed_blocks
    from transforms.blocks import decode_block_object

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    signer = Signer.generate("auditlog.bench")
    keys = InMemoryKeyStore(key_seed=b"bench")
    blocks = []
    for _, record in sealed_blocks(events, 1, block_size, signer, keys):
        header, entries = decode_block_object(record.block_object)  # type: ignore[attr-defined]
        blocks.append(SealedBlock(header, entries, [leaf_hash(e) for e in entries]))
    n = sum(b.header.leaf_count for b in blocks)
    size = sum(len(e) for b in blocks for e in b.entries) / n
    print(
        f"\nthe indexer into embedded chDB, µs per event ({n:,} events of {size:.0f} B in {block_size:,}-event blocks)"
    )
    print(f"  {'variant':<44} {'rows/cols':>9} {'insert':>9} {'wall':>9} {'CPU':>9}")
    native = index_columns("auto")
    variants: list[tuple[str, object, int]] = [("row inserts, one block each (before)", "rows", 1)]
    variants += [("Arrow, reference columns, one block each", None, 1)]
    if native is not None:
        variants += [
            ("Arrow, compiled columns, one block each", native, 1),
            ("Arrow, compiled columns, 5 blocks each", native, 5),
            ("Arrow, compiled columns, 10 blocks each", native, 10),
        ]
    for name, how, group in variants:
        with tempfile.TemporaryDirectory() as tmp:
            ch = open_clickhouse(f"chdb://{tmp}/ch")
            ch.ensure_schema()
            build = insert = 0.0
            wall, cpu0 = time.perf_counter(), cpu()
            for i in range(0, len(blocks), group):
                part = blocks[i : i + group]
                t0 = time.perf_counter()
                settings = {"insert_deduplicate": 1, "insert_deduplication_token": f"t{i}"}
                if how == "rows":
                    rows = [r for b in part for r in block_rows(b.header, list(b.entries))[0]]
                    leaves = [(r[12], r[13], r[14], r[0], r[1], r[15]) for r in rows]
                    t1 = time.perf_counter()
                    ch._conn.insert(LEAVES_TABLE, LEAF_COLUMNS, leaves, settings)
                    ch._conn.insert(
                        LOGS_TABLE, AUDIT_LOG_COLUMNS, rows, {**settings, "insert_deduplication_token": f"l{i}"}
                    )
                else:
                    table = logs_table(part, columns=how)  # type: ignore[arg-type]
                    t1 = time.perf_counter()
                    ch._conn.insert_arrow(LEAVES_TABLE, leaves_table(table), settings)
                    ch._conn.insert_arrow(LOGS_TABLE, table, {**settings, "insert_deduplication_token": f"l{i}"})
                build += t1 - t0
                insert += time.perf_counter() - t1
            wall, used = time.perf_counter() - wall, cpu() - cpu0
            ch.close()
        print(
            f"  {name:<44} {build / n * 1e6:>9.2f} {insert / n * 1e6:>9.2f} "
            f"{wall / n * 1e6:>9.2f} {used / n * 1e6:>9.2f}"
        )


if __name__ == "__main__":
    if "--core" in sys.argv:
        core_table()
    elif "--indexer" in sys.argv:
        indexer_table()
    else:
        main()
