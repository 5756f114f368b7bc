"""Archive bytes per event (`make bench-query` prints it after the proofs): what each kind of object costs.

Not a test: it prints a table. Logs are built by the ingest job's own code (tests/synthetic.py)
into the in-memory archive, which stores exactly the bytes S3 would, at a few block sizes (the
cut ticker closes small blocks when traffic is low, and every block end publishes partial tiles
and a partial bundle). "before tiles" is what the archive held before #17: blocks with their
events' bytes, checkpoints and resume points.

    .venv/bin/python tests/bench/bench_archive.py
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipelines.io.archive.testing import InMemoryArchive  # noqa: E402
from tests.synthetic import build_logs  # noqa: E402
from transforms.blocks import encode_block_object  # noqa: E402

EVENTS = int(os.environ.get("BENCH_ARCHIVE_EVENTS", "20000"))


def kind_of(key: str) -> str:
    folder = key.split("/")[2]
    if folder != "tile":
        return folder
    return ("entry bundles" if "/entries/" in key else "hash tiles") + (" (partial)" if ".p/" in key else "")


def measure(block_size: int) -> tuple[float, dict[str, float], float]:
    archive = InMemoryArchive()
    logs = build_logs(archive, None, events=EVENTS, logs=2, block_size=block_size)
    by_kind: dict[str, int] = defaultdict(int)
    for key, versions in archive.objects.items():
        by_kind[kind_of(key)] += len(versions[-1].data or b"")
    canonical = 0
    v1_blocks = 0
    for log_id in logs.log_ids:
        for index in archive.list_blocks(log_id):
            header, entries = archive.read_block(log_id, index)
            canonical += sum(len(e) for e in entries)
            v1_blocks += len(encode_block_object(header, entries))
    before = v1_blocks + by_kind["checkpoints"] + by_kind["resume"]
    return canonical / EVENTS, {k: v / EVENTS for k, v in sorted(by_kind.items())}, before / EVENTS


def main() -> None:
    print(f"archive bytes per event — {EVENTS:,} generated events in 2 logs, {os.cpu_count()} cores\n")
    head = ("block size", "canonical", "before tiles", "now", "now / canonical", "limit")
    print("  ".join(f"{h:>{w}}" for h, w in zip(head, (10, 9, 12, 8, 15, 8), strict=True)))
    details = []
    for block_size in (1000, 250, 100):
        canonical, by_kind, before = measure(block_size)
        now = sum(by_kind.values())
        limit = 1.15 * canonical + 40
        verdict = "ok" if now <= limit else "OVER"
        print(
            f"{block_size:>10}  {canonical:>9.1f}  {before:>12.1f}  {now:>8.1f}  {now / canonical:>15.3f}  "
            f"{limit:>8.1f} {verdict}"
        )
        details.append((block_size, by_kind))
    print("\nby kind of object, B/event:")
    for block_size, by_kind in details:
        print(f"  blocks of {block_size}: " + ", ".join(f"{k} {v:.1f}" for k, v in by_kind.items()))
    print("\nlimit: 1.15 x canonical + 40 B (issue #17); blocks hold only their header since #17")


if __name__ == "__main__":
    main()
