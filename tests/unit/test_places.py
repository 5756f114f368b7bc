"""The local caches a proof reads first: the place index (pipelines/io/places.py) and the disk tile cache.

The place index is filled from ClickHouse (here a list of leaves a test changes, with the two
range reads `sync` makes; the real queries are in tests/unit/test_clickhouse_chdb.py); what it
must never do is give a wrong place, and the Prover must land on ClickHouse's answer whatever the
index says. The disk cache must keep its bound and survive a broken file.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from pipelines.io.archive.testing import InMemoryArchive
from pipelines.io.archive.tilecache import DiskTileCache
from pipelines.io.archive.tiles import NotLocal, TileStore, local_only
from pipelines.io.places import SYNC_ROWS, PlaceIndex, place_key
from pipelines.prover import Prover
from tests.unit.test_prover import LOG, SIGNER, TENANT, Index, entry, grow
from transforms.tiles import ENTRIES, Tile


class Leaves:
    """audit_leaves as `PlaceIndex.sync` reads it: per log, (leaf index, tenant, event) rows."""

    def __init__(self) -> None:
        self.rows: dict[str, list[tuple[int, str, str]]] = {}
        self.queries = 0

    def add(self, log_id: str, index: int, tenant_id: str, event_id: str) -> None:
        self.rows.setdefault(log_id, []).append((index, tenant_id, event_id))

    def leaf_logs(self) -> list[str]:
        return sorted(self.rows)

    def leaf_places(self, log_id: str, start: int, limit: int) -> list[tuple[int, str, str]]:
        self.queries += 1
        return sorted(r for r in self.rows.get(log_id, []) if r[0] >= start)[:limit]


def test_sync_copies_each_log_in_leaf_order_and_stops_at_a_gap(tmp_path: Path) -> None:
    leaves = Leaves()
    for i in range(5):
        leaves.add("l0", i, "t1", f"e{i}")
    leaves.add("l0", 7, "t1", "e7")  # 5 and 6 are not indexed yet
    leaves.add("l1", 0, "t2", "x0")
    places = PlaceIndex(tmp_path / "places.sqlite")
    assert places.sync(leaves) == 6
    assert places.synced() == {"l0": 5, "l1": 1}
    assert places.lookup("t1", "e3") == ("l0", 3)
    assert places.lookup("t2", "x0") == ("l1", 0)
    assert places.lookup("t1", "e7") is None  # past the gap: ClickHouse answers it
    assert places.lookup("t2", "e3") is None  # the same event id in another tenant is another event
    leaves.add("l0", 5, "t1", "e5")
    leaves.add("l0", 6, "t1", "e6")
    assert places.sync(leaves) == 3
    assert places.lookup("t1", "e7") == ("l0", 7)
    # kept on disk: a new process starts where the last one stopped
    again = PlaceIndex(tmp_path / "places.sqlite")
    assert again.synced() == {"l0": 8, "l1": 1}
    assert again.sync(leaves) == 0


def test_a_leaf_indexed_twice_counts_once_and_an_event_logged_twice_is_left_to_clickhouse(tmp_path: Path) -> None:
    leaves = Leaves()
    for i in range(3):
        leaves.add("l0", i, "t1", f"e{i}")
    leaves.add("l0", 1, "t1", "e1")  # the same row twice
    leaves.add("l1", 0, "t1", "e2")  # the same event in another log
    places = PlaceIndex(tmp_path / "places.sqlite")
    assert places.sync(leaves) == 4
    assert places.lookup("t1", "e1") == ("l0", 1)
    assert places.lookup("t1", "e2") is None  # two places: ClickHouse's first occurrence is the answer


def test_a_place_found_before_a_second_leaf_shares_its_key_is_not_answered_from_memory(tmp_path: Path) -> None:
    leaves = Leaves()
    leaves.add("l1", 0, "t1", "e0")
    places = PlaceIndex(tmp_path / "places.sqlite")
    places.sync(leaves)
    assert places.lookup("t1", "e0") == ("l1", 0)  # now kept in memory too
    leaves.add("l0", 0, "t1", "e0")  # the same event, logged in another log, indexed later
    places.sync(leaves)
    assert places.lookup("t1", "e0") is None  # ClickHouse's to answer, as on disk


def test_sync_reads_in_pages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pipelines.io.places.SYNC_ROWS", 4)
    leaves = Leaves()
    for i in range(10):
        leaves.add("l0", i, "t1", f"e{i}")
    places = PlaceIndex(tmp_path / "places.sqlite")
    assert places.sync(leaves) == 10
    assert leaves.queries == 3
    assert places.lookup("t1", "e9") == ("l0", 9)
    assert SYNC_ROWS > 4


def test_the_prover_checks_a_local_place_against_the_entry_and_falls_back_to_clickhouse(tmp_path: Path) -> None:
    archive = InMemoryArchive()
    index = Index([entry(i) for i in range(40)])
    grow(archive, index, 40)
    places = PlaceIndex(tmp_path / "places.sqlite")
    leaves = Leaves()
    for i in range(40):
        leaves.add(LOG, i, TENANT, f"evt_{i}")
    places.sync(leaves)
    asked: list[str] = []

    class Counting(Index):
        def event_place(self, tenant_id: str, event_id: str) -> tuple[str, int] | None:
            asked.append(event_id)
            return super().event_place(tenant_id, event_id)

    counting = Counting(index.entries)
    prover = Prover(archive, counting, SIGNER.verifier(), "auditlog.test", places=places)
    assert prover.proof(TENANT, "evt_7").leaf_index == 7
    assert asked == []  # the local index answered
    with sqlite3.connect(places.path) as db:  # the places found last are answered from memory
        db.execute("DELETE FROM places WHERE key = ?", (place_key(TENANT, "evt_7"),))
    assert prover.proof(TENANT, "evt_7").leaf_index == 7 and asked == []
    # a key that points at another event's leaf (a collision, or a corrupted file) is not believed
    with sqlite3.connect(places.path) as db:
        db.execute("UPDATE places SET leaf = 9 WHERE key = ?", (place_key(TENANT, "evt_8"),))
    proof = prover.proof(TENANT, "evt_8")
    assert proof.leaf_index == 8 and json.loads(proof.canonical)["event_id"] == "evt_8"
    assert asked == ["evt_8"]


def test_the_disk_cache_keeps_its_bound_and_drops_the_oldest_first(tmp_path: Path) -> None:
    cache = DiskTileCache(tmp_path / "tiles.sqlite", max_bytes=10_000)
    for i in range(30):
        cache.put(f"k{i}", bytes([i]) * 900)
    assert cache.held <= 10_000
    assert cache.get("k29") == bytes([29]) * 900
    assert cache.get("k0") is None
    cache.put("k29", b"other")  # a key held keeps its bytes (tiles are immutable)
    assert cache.get("k29") == bytes([29]) * 900
    cache.put("big", b"x" * 5_000)  # over a tenth of the bound: not kept
    assert cache.get("big") is None
    reopened = DiskTileCache(tmp_path / "tiles.sqlite", max_bytes=10_000)
    assert reopened.held == cache.held
    with pytest.raises(ValueError, match="positive size"):
        DiskTileCache(tmp_path / "other.sqlite", max_bytes=0)


def test_a_broken_cache_file_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "tiles.sqlite"
    path.write_bytes(b"not a database" * 100)
    cache = DiskTileCache(path, max_bytes=10_000)
    cache.put("k", b"v")
    assert cache.get("k") == b"v"
    assert (tmp_path / "tiles.sqlite.broken").exists()


def test_tiles_read_once_come_from_disk_and_bundles_for_the_api_skip_the_caches(tmp_path: Path) -> None:
    archive = InMemoryArchive()
    index = Index([entry(i) for i in range(300)])
    grow(archive, index, 300)
    disk = DiskTileCache(tmp_path / "tiles.sqlite")
    store = TileStore(archive, disk=disk)
    prover = Prover(archive, index, SIGNER.verifier(), "auditlog.test", tiles=store)
    prover.proof(TENANT, "evt_5")
    reads = store.reads
    fresh = TileStore(archive, disk=disk)  # a restarted server: memory empty, disk kept
    Prover(archive, index, SIGNER.verifier(), "auditlog.test", tiles=fresh).proof(TENANT, "evt_6")
    assert reads > 1
    assert fresh.reads == 0  # every tile and bundle came from disk
    bundle = Tile(ENTRIES, 0)
    before = fresh.reads
    fresh.get(LOG, bundle, cached=False)
    fresh.get(LOG, bundle, cached=False)
    assert fresh.reads == before  # not counted as cache misses: never cached


def test_a_cache_of_another_archive_is_emptied_or_forgotten_never_an_alarm(tmp_path: Path) -> None:
    path = tmp_path / "tiles.sqlite"
    cache = DiskTileCache(path, identity="http://s3/a")
    cache.put("logs/l0/tile/0/000", b"a" * 32)
    cache.put("logs/l1/tile/0/000", b"b" * 32)
    cache.forget("logs/l0/")
    assert cache.get("logs/l0/tile/0/000") is None and cache.get("logs/l1/tile/0/000") == b"b" * 32
    assert cache.held == 32
    assert DiskTileCache(path, identity="http://s3/a").get("logs/l1/tile/0/000") == b"b" * 32
    assert DiskTileCache(path, identity="http://s3/b").get("logs/l1/tile/0/000") is None

    # A bucket made again under the same name: same keys, other tiles. The Prover drops the log's
    # cached tiles and reads the archive again rather than calling its own cache tampering.
    disk = DiskTileCache(tmp_path / "proofs.sqlite")
    old, old_index = InMemoryArchive(), Index([entry(i) for i in range(300)])
    grow(old, old_index, 300)
    Prover(old, old_index, SIGNER.verifier(), "auditlog.test", tiles=TileStore(old, disk=disk)).proof(TENANT, "evt_5")
    new = InMemoryArchive()
    entries = [entry(i + 1000) for i in range(300)]
    grow(new, Index(entries), 300)
    index = Index(entries)
    proof = Prover(new, index, SIGNER.verifier(), "auditlog.test", tiles=TileStore(new, disk=disk)).proof(
        TENANT, "evt_1005"
    )
    assert proof.canonical == entries[5]


def test_a_place_index_of_another_deployment_is_emptied(tmp_path: Path) -> None:
    leaves = Leaves()
    leaves.add("l0", 0, "t1", "e0")
    places = PlaceIndex(tmp_path / "places.sqlite", identity="a")
    places.sync(leaves)
    assert PlaceIndex(tmp_path / "places.sqlite", identity="a").lookup("t1", "e0") == ("l0", 0)
    other = PlaceIndex(tmp_path / "places.sqlite", identity="b")
    assert other.lookup("t1", "e0") is None and other.synced() == {}


def test_within_local_only_a_read_of_the_archive_or_clickhouse_is_refused_not_made(tmp_path: Path) -> None:
    archive = InMemoryArchive()
    index = Index([entry(i) for i in range(300)])
    grow(archive, index, 300)
    store = TileStore(archive, disk=DiskTileCache(tmp_path / "tiles.sqlite"))
    prover = Prover(archive, index, SIGNER.verifier(), "auditlog.test", tiles=store)
    with local_only(), pytest.raises(NotLocal):
        prover.find(TENANT, "evt_5")  # nothing cached: the head and the place need the archive and ClickHouse
    found = prover.find(TENANT, "evt_5")
    with local_only(), pytest.raises(NotLocal):
        prover.proof_at(TENANT, "evt_5", *found)  # the list of witnesses' cosignatures is not read yet
    prover.proof_at(TENANT, "evt_5", *found)
    reads = store.reads
    with local_only():
        prover.proof_at(TENANT, "evt_5", *found)  # everything it needs is cached now
        with pytest.raises(NotLocal):
            prover.find(TENANT, "evt_6")  # its place is ClickHouse's to give (no place index here)
    assert store.reads == reads
