"""A proof server's memory does not grow with the log: the same proofs over a log 16 times larger.

`auditlog serve` proves events with a `Prover` over a `TileStore` (runners/commands/serve.py),
whose caches are bounded: tiles and bundles by bytes, the tiles' inner levels by count, entries by bytes. This test
builds one log at two sizes (8,192 and 131,072 events, tiles and bundles in an archive whose reads
return fresh bytes, as S3's do), proves 400 random events of each with small bounds, and measures
with tracemalloc what the prover still holds afterwards and its peak while proving. A prover that
kept what it read (every leaf hash, as the one before tiles did: 64 B an event) or let a cache
grow past its bound holds several times more at the larger size, and fails here. `make
bench-query` measures the server's RSS at 1M and 10M events on the real stack.
"""

from __future__ import annotations

import gc
import json
import random
import tracemalloc
from typing import Any

from pipelines.io.archive import tile_key
from pipelines.io.archive.testing import InMemoryArchive
from pipelines.io.archive.tiles import TileStore
from pipelines.prover import Prover
from transforms.checkpoint import Checkpoint, sign_checkpoint
from transforms.merkle import leaf_hashes, root
from transforms.note import Signer
from transforms.tiles import encode_bundle, hash_tiles, new_bundles
from transforms.tlogproof import verify_proof

PREFIX = "auditlog.test"
LOG = "audit.events.p0"
SIGNER = Signer.generate(PREFIX)
SMALL, LARGE = 8_192, 131_072  # 32 and 512 level-0 tiles: both more than the bounds below hold
PROOFS = 400
CACHE_BYTES = 128 << 10
LEVELS_CACHED = 16
ENTRY_CACHE_BYTES = 32 << 10  # ~150 entries: fewer than the proofs ask for
SLACK = 1.25  # the larger log's figure may be at most this many times the smaller's (+ 64 KiB)


class CopyingArchive(InMemoryArchive):
    """Reads return new bytes each time, as an S3 client's do, so what a reader keeps is its own."""

    def get(self, key: str, version_id: str | None = None) -> bytes:
        return bytes(bytearray(super().get(key, version_id)))


class Places:
    """The point lookup (tenant, event id) -> (log, leaf index) that ClickHouse answers in serve."""

    def __init__(self, ids: dict[tuple[str, str], int]) -> None:
        self.ids = ids

    def event_place(self, tenant_id: str, event_id: str) -> tuple[str, int] | None:
        index = self.ids.get((tenant_id, event_id))
        return None if index is None else (LOG, index)

    def is_retained(self, tenant_id: str, event_id: str) -> bool:
        return True


def deployment(n: int) -> tuple[CopyingArchive, Places, list[tuple[str, str]]]:
    """A log of `n` ~200-byte events in an archive: tiles, bundles and the signed checkpoint of size n."""
    keys = [(f"t_{i % 97}", f"evt_{i:08d}") for i in range(n)]
    entries = [
        json.dumps({"tenant_id": t, "event_id": e, "action": "document.read", "note": "x" * 120}).encode()
        for t, e in keys
    ]
    hashes = leaf_hashes(entries)
    archive = CopyingArchive()
    for tile, data in hash_tiles(hashes).items():
        archive.put_immutable(tile_key(LOG, tile), data)
    for bundle in new_bundles(0, n):
        archive.put_immutable(tile_key(LOG, bundle), encode_bundle(entries[bundle.start : bundle.end]))
    tree_root = root(hashes)
    archive.put_checkpoint(LOG, n, sign_checkpoint(Checkpoint(f"{PREFIX}/{LOG}", n, tree_root), SIGNER))
    return archive, Places({k: i for i, k in enumerate(keys)}), keys


def held_while_proving(n: int) -> dict[str, Any]:
    """What a Prover over the log of `n` events holds after PROOFS random proofs, and its peak while proving."""
    archive, places, keys = deployment(n)
    picked = random.Random(n).sample(keys, PROOFS)
    gc.collect()
    tracemalloc.start()
    try:
        tiles = TileStore(
            archive, cache_bytes=CACHE_BYTES, levels_cached=LEVELS_CACHED, entry_cache_bytes=ENTRY_CACHE_BYTES
        )
        prover = Prover(archive, places, SIGNER.verifier(), PREFIX, tiles=tiles)
        for tenant, event_id in picked:
            proof = prover.proof(tenant, event_id)
            verify_proof(proof.text, SIGNER.verifier(), entry=proof.canonical)
        del proof
        gc.collect()
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert tiles.reads > PROOFS // 2, "the proofs must read the archive, not one cached tile"
    return {"held": held, "peak": peak, "reads": tiles.reads, "prover": prover}


def test_the_provers_memory_is_the_same_for_a_log_sixteen_times_larger() -> None:
    small = held_while_proving(SMALL)
    large = held_while_proving(LARGE)

    for figure in ("held", "peak"):
        assert large[figure] <= small[figure] * SLACK + (64 << 10), (figure, small[figure], large[figure])
    # and what it holds is the bounds, not the log: far less than the 64 B an event of leaf hashes
    assert large["held"] < 64 * LARGE / 2, large["held"]


def test_the_bounds_are_what_hold_it_flat() -> None:
    """The same measure catches a cache without a bound: a reader that keeps every tile it read."""
    small, large = (_unbounded(n) for n in (SMALL, LARGE))
    assert large > small * SLACK + (64 << 10), (small, large)


def _unbounded(n: int) -> int:
    archive, places, keys = deployment(n)
    picked = random.Random(n).sample(keys, PROOFS)
    gc.collect()
    tracemalloc.start()
    try:
        tiles = TileStore(archive, cache_bytes=1 << 40, levels_cached=1 << 30, entry_cache_bytes=1 << 40)
        prover = Prover(archive, places, SIGNER.verifier(), PREFIX, tiles=tiles)
        for tenant, event_id in picked:
            prover.proof(tenant, event_id)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del prover
    return held
