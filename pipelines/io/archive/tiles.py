"""Each log as a C2SP tlog-tiles log in the archive: tiles published with every block, and read back.

Under `logs/{log_id}/` (docs/design.md §13):

    tile/<L>/<N>[.p/<W>]        hash tiles (transforms/tiles)
    tile/entries/<N>[.p/<W>]    entry bundles: the events' canonical bytes
    checkpoints/<size>.checkpoint   the signed checkpoints; `auditlog serve` answers
                                    `/logs/{log_id}/checkpoint` with the newest

Every tile path names one immutable content (a partial tile `.p/<W>` is the tile of one tree size),
so tiles are written like blocks: `put_immutable`, where identical re-puts are no-ops and different
bytes at a key are an alarm. A block's tiles and bundles are put before its block and checkpoint,
so a checkpoint in the archive means its tiles are there.

Locks: hash tiles are evidence (every retained event's proof reads them) and are locked like
checkpoints; an entry bundle is locked until the latest retention end of the blocks it holds
events of, like those blocks.

`TilePublisher` publishes; it keeps each log's `TileBuilder` and `BundleBuilder` in memory (a few
KB a log) and, when it meets a log at a size it does not hold (a restart, a restore, an archive
written before tiles), loads the partial tiles of that size from the archive, or publishes the
missing tiles from the archived blocks first (`catch_up`, what `auditlog tiles migrate` runs).
`TileStore` reads tiles back through a cache bounded in bytes, so a reader's memory does not grow
with the log.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from pipelines.io.archive.errors import ArchiveNotFoundError
from pipelines.io.archive.layout import block_key, expired_key, log_prefix, tile_key
from pipelines.io.archive.tilecache import DiskTileCache
from pipelines.io.lru import LRU
from schemas.native import tile_levels as native_tile_levels
from transforms.blocks import BlockHeader, decode_block, decode_expired_block
from transforms.errors import VerificationError
from transforms.merkle import leaf_hashes
from transforms.tiles import (
    ENTRIES,
    TILE_WIDTH,
    BundleBuilder,
    Tile,
    TileBuilder,
    TiledLog,
    TileFormatError,
    TileHashReader,
    bundle_slice,
    decode_bundle,
    encode_bundle,
    new_tiles,
    parse_tile_path,
    tile_for_size,
)

__all__ = [
    "NotLocal",
    "TilePublisher",
    "TileStore",
    "TilesMissingError",
    "bundle_entries",
    "bundle_keys",
    "local_only",
    "published_size",
    "remote",
]

Progress = Callable[[str], None]
LEVELS_CACHED = 256
"""The default `levels_cached` of a TileStore: hash tiles whose inner levels it keeps (~40 KB each),
every tile above level 0 of a few logs of billions of events; a proof reads one level-0 tile and a
few above it."""


class TilesMissingError(LookupError, VerificationError):
    """A log's tiles are not in the archive at the size asked for (the API answers 404)."""


class NotLocal(Exception):  # noqa: N818 - names the situation, like StopIteration
    """Within `local_only()`: the answer needs the archive or ClickHouse, not just what is cached."""


_LOCAL_ONLY: ContextVar[bool] = ContextVar("auditlog_local_only", default=False)


@contextmanager
def local_only() -> Iterator[None]:
    """Within it, a TileStore (and the Prover) raise NotLocal instead of reading the archive or ClickHouse.

    What lets the query API answer a proof whose tiles are cached on its event loop, without a trip
    to the thread pool, and hand the others to the pool (api/query/routes/evidence.py).
    """
    token = _LOCAL_ONLY.set(True)
    try:
        yield
    finally:
        _LOCAL_ONLY.reset(token)


def remote(what: str) -> None:
    """Call before reading the archive or ClickHouse: raises NotLocal within `local_only()`."""
    if _LOCAL_ONLY.get():
        raise NotLocal(what)


@dataclass
class _LogTiles:
    log: TiledLog
    bundle_lock: dt.datetime | None  # the latest lock of the blocks the open bundle holds entries of


PUT_THREADS = 8
"""Tile and bundle PUTs in flight per publisher."""


def _partial_tiles(size: int) -> list[Tile]:
    return [t for t in new_tiles(0, size) if not t.is_full]


class TilePublisher:
    """Publishes the tiles and entry bundles each sealed block adds to its log (see the module)."""

    def __init__(self, archive: Any, threads: int = PUT_THREADS) -> None:
        self.archive = archive
        self._logs: dict[str, _LogTiles] = {}
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="tile-put")

    def publish(
        self,
        header: BlockHeader,
        entries: Sequence[bytes] | None,
        hashes: Sequence[bytes] | None,
        entry_lock: dt.datetime,
        evidence_lock: dt.datetime,
    ) -> int:
        """Puts what growing the log by this block publishes (`TiledLog.grow`); returns how many objects it put.

        `entries` are the block's canonical bytes (None for an expired block: no bundles then),
        `hashes` their leaf hashes (computed when None). Hash tiles are locked until
        `evidence_lock`; a bundle until the latest `entry_lock` of the blocks it holds events of.
        Raises VerificationError if the tiles do not give the block's tree root.
        """
        log_id = header.log_id
        state = self._state(log_id, header.first_leaf_index, evidence_lock)
        published = state.log.grow(header.first_leaf_index, entries, hashes)
        if state.log.root() != header.tree_root:
            del self._logs[log_id]  # the builders are past a block they could not prove: reload next time
            raise VerificationError(
                f"log {log_id} block {header.block_index}: the tiles give another root than the block's "
                f"tree root at size {header.tree_size}; run `auditlog verify`"
            )
        puts: list[tuple[Tile, bytes, dt.datetime]] = []
        carry = state.bundle_lock
        for tile, data in published:
            if not tile.is_bundle:
                puts.append((tile, data, evidence_lock))
                continue
            # the first bundle may hold entries of earlier blocks; the others only this block's
            puts.append((tile, data, entry_lock if carry is None else max(carry, entry_lock)))
            carry = None
        open_bundle = state.log.bundles is not None and state.log.size % TILE_WIDTH
        state.bundle_lock = puts[-1][2] if open_bundle else None  # the partial bundle: the last put
        # Level-0 hash tiles last: `published_size` takes one as the sign that all of its size is there.
        # The others go in parallel (S3 latency, not CPU, bounds a block's puts).
        first = [p for p in puts if p[0].level != 0]
        last = [p for p in puts if p[0].level == 0]
        for batch in (first, last):
            done = [self._pool.submit(self.archive.put_immutable, tile_key(log_id, t), d, lk) for t, d, lk in batch]
            for future in done:
                future.result()  # a conflict or an outage the retries could not ride out stops the block
        return len(puts)

    def _state(self, log_id: str, size: int, evidence_lock: dt.datetime) -> _LogTiles:
        state = self._logs.get(log_id)
        if state is not None and state.log.size == size:
            return state
        loaded = self._load(log_id, size)
        if loaded is None:
            self.catch_up(log_id, size, evidence_lock)
            state = self._logs[log_id]
        else:
            self._logs[log_id] = state = loaded
        return state

    def _load(self, log_id: str, size: int) -> _LogTiles | None:
        """The builders at `size` from its partial tiles in the archive; None if they are not there."""
        if size == 0:
            return _LogTiles(TiledLog(), None)
        if not _has_tiles(self.archive, log_id, size):
            return None
        try:
            tiles = {t: self.archive.get(tile_key(log_id, t)) for t in _partial_tiles(size)}
        except ArchiveNotFoundError:
            return None
        builder = TileBuilder.from_partial_tiles(size, tiles)
        bundles: BundleBuilder | None = None
        lock = None
        if not size % TILE_WIDTH:
            bundles = BundleBuilder(size)
        else:
            key = tile_key(log_id, Tile(ENTRIES, size // TILE_WIDTH, size % TILE_WIDTH))
            try:
                data = self.archive.get(key)
            except ArchiveNotFoundError:
                data = None  # its first entries were in an expired block: bundles start at the next one
            if data is not None:
                bundles = BundleBuilder.from_partial(size, data)
                retention = self.archive.retention(key)  # not found now would be an alarm, not a gap
                lock = retention.retain_until if retention is not None else None
        return _LogTiles(TiledLog(builder, bundles), lock)

    def catch_up(self, log_id: str, size: int, evidence_lock: dt.datetime, progress: Progress | None = None) -> int:
        """Publishes the log's tiles from its archived blocks, from what is published up to `size`.

        Blocks that expired contribute their leaf hashes (kept in `expired/`) but no bundles.
        Returns the number of blocks published. Raises TilesMissingError if no block ends at `size`.
        """
        archive = self.archive
        blocks = archive.list_blocks(log_id) if size else []
        expired = set(archive.list_expired(log_id)) if size else set()
        indexes = sorted(set(blocks) | expired)
        ends = _BlockEnds(archive, log_id, indexes, expired)
        start = published_size(archive, log_id, ends)
        self._logs[log_id] = self._load(log_id, start) or _LogTiles(TiledLog(), None)
        if start == size:
            return 0
        at = ends.position_of_end(start)
        done = 0
        while at < len(indexes):
            index = indexes[at]
            header, entries, hashes, lock = ends.read(index)
            if header.first_leaf_index >= size:
                break
            self.publish(header, entries, hashes, lock or evidence_lock, evidence_lock)
            done += 1
            if progress is not None and done % 100 == 0:
                progress(f"{log_id}: tiles published through block {index} (tree size {header.tree_size})")
            at += 1
            if header.tree_size == size:
                break
        if self._logs[log_id].log.size != size:
            raise TilesMissingError(
                f"log {log_id}: the archived blocks end at tree size {self._logs[log_id].log.size}, "
                f"not at {size}: a block is missing; run `auditlog verify`"
            )
        return done


class _BlockEnds:
    """The log's blocks (and expired blocks) by index, read lazily: where each ends, and its content."""

    def __init__(self, archive: Any, log_id: str, indexes: list[int], expired: set[int]) -> None:
        self.archive, self.log_id, self.indexes, self.expired = archive, log_id, indexes, expired
        self._headers: dict[int, BlockHeader] = {}

    def read(self, index: int) -> tuple[BlockHeader, list[bytes] | None, list[bytes] | None, dt.datetime | None]:
        """(header, entries or None, leaf hashes or None, lock of the block object or None)."""
        if index in self.expired:
            header, hashes, _ = decode_expired_block(self.archive.get(expired_key(self.log_id, index)))
            self._headers[index] = header
            return header, None, hashes, None
        key = block_key(self.log_id, index)
        header, held = decode_block(self.archive.get(key))
        entries = held if held is not None else bundle_entries(self.archive, header)
        self._headers[index] = header
        retention = self.archive.retention(key)
        return header, entries, None, retention.retain_until if retention is not None else None

    def end(self, position: int) -> int:
        index = self.indexes[position]
        if index not in self._headers:
            self.read(index)
        return self._headers[index].tree_size

    def position_of_end(self, size: int) -> int:
        """The position of the first block that starts at `size` (0 for size 0)."""
        if size == 0:
            return 0
        lo, hi = 0, len(self.indexes) - 1
        while lo <= hi:
            mid = (lo + hi) // 2
            end = self.end(mid)
            if end == size:
                return mid + 1
            lo, hi = (mid + 1, hi) if end < size else (lo, mid - 1)
        raise TilesMissingError(f"log {self.log_id}: no block ends at tree size {size}")


def _has_tiles(archive: Any, log_id: str, size: int) -> bool:
    tile = tile_for_size(0, (size - 1) // TILE_WIDTH, size)
    try:
        archive.get(tile_key(log_id, tile))
    except ArchiveNotFoundError:
        return False
    return True


def published_size(archive: Any, log_id: str, ends: _BlockEnds | None = None) -> int:
    """The largest block end of the log whose tiles are in the archive (0 if none).

    Tiles are published block after block, the level-0 tile last, so the block ends whose tiles
    are there are a prefix of the log: a binary search over them reads O(log blocks) objects.
    """
    if ends is None:
        expired = set(archive.list_expired(log_id))
        ends = _BlockEnds(archive, log_id, sorted(set(archive.list_blocks(log_id)) | expired), expired)
    lo, hi, found = 0, len(ends.indexes) - 1, 0
    while lo <= hi:
        mid = (lo + hi) // 2
        size = ends.end(mid)
        if _has_tiles(archive, log_id, size):
            found, lo = size, mid + 1
        else:
            hi = mid - 1
    return found


DERIVED = "@bundle"
"""Added to the cache keys of level-0 tiles hashed from their bundles (no archive key holds an @)."""


class TileStore:
    """Reads a log's tiles from the archive through an LRU cache bounded in bytes; thread-safe.

    Every tile path is immutable, so a cached tile never goes stale; the bounds (`cache_bytes` of
    tiles and bundles, the inner levels of `levels_cached` tiles) are what keep a reader's memory
    flat however long the logs grow (tests/unit/test_prover_memory.py). With a `disk` cache (a
    long-running server's), a tile the memory no longer holds is read from local disk, not the
    archive.
    """

    def __init__(
        self,
        archive: Any,
        cache_bytes: int = 64 << 20,
        disk: DiskTileCache | None = None,
        levels_cached: int = LEVELS_CACHED,
        entry_cache_bytes: int = 16 << 20,
    ) -> None:
        self.archive = archive
        self._entries: LRU[tuple[str, int], bytes] = LRU(max_bytes=entry_cache_bytes)
        self.disk = disk
        self._cache: LRU[str, bytes] = LRU(max_bytes=cache_bytes)
        self._levels: LRU[tuple[str, Tile], list[list[bytes]]] = LRU(capacity=levels_cached)
        self._lock = threading.Lock()
        self.reads = 0  # archive reads (cache misses), for benchmarks and tests

    def get(self, log_id: str, tile: Tile, cached: bool = True) -> bytes:
        """The tile's bytes; raises TilesMissingError if the archive does not hold it.

        `cached=False` reads the archive and keeps nothing: what the tiles API does for entry
        bundles, so one that retention removed is not served from a cache.
        """
        key = tile_key(log_id, tile)
        if not cached:
            return self._read(log_id, tile, key)
        data = self._local(key)
        if data is not None:
            return data
        data = self._read(log_id, tile, key)
        if self.disk is not None:
            self.disk.put(key, data)
        with self._lock:
            self.reads += 1
        self._cache.put(key, data)
        return data

    def _local(self, key: str) -> bytes | None:
        """The tile from memory, or from the disk cache (then kept in memory too); None if neither holds it."""
        data = self._cache.get(key)
        if data is not None:
            return data
        data = self.disk.get(key) if self.disk is not None else None
        if data is not None:
            self._cache.put(key, data)
        return data

    def _read(self, log_id: str, tile: Tile, key: str) -> bytes:
        remote(key)
        try:
            return bytes(self.archive.get(key))
        except ArchiveNotFoundError:
            raise TilesMissingError(
                f"log {log_id} has no {tile.path} in the archive; if the log was written before tiles, "
                "run `auditlog tiles migrate`"
            ) from None

    @property
    def cached_bytes(self) -> int:
        """The bytes of tiles and bundles held in memory (at most `cache_bytes`)."""
        return self._cache.held

    def forget(self, log_id: str) -> None:
        """Forgets the log's tiles in every cache, memory and disk: the next reads go to the archive."""
        prefix = log_prefix(log_id)
        self._cache.drop_where(lambda key: key.startswith(prefix))
        self._entries.drop_where(lambda key: key[0] == log_id)
        self._levels.drop_where(lambda key: key[0] in (log_id, log_id + DERIVED))
        if self.disk is not None:
            self.disk.forget(prefix)

    def clear(self) -> None:
        """Forgets every tile cached in memory (after a repair of the archive, or in a tamper test)."""
        self._levels.clear()
        self._cache.clear()
        self._entries.clear()

    def tile(self, log_id: str, tile: Tile, published: int | None = None) -> bytes:
        """`get`, and for a partial tile of a size that published none, a prefix of a wider one.

        Tiles only grow, so a tile's first W hashes (or entries) are the same in every tree that
        has them: a partial tile missing from the archive (a size that was never a checkpoint) is
        read from the full tile or, failing that, from the tile of `published` (a larger size whose
        tiles are there, e.g. the newest checkpoint's), cut to its width.
        """
        try:
            return self.get(log_id, tile)
        except TilesMissingError:
            if tile.is_full:
                raise
        wider = [tile.full()]
        if published is not None:
            edge = tile_for_size(tile.level, tile.index, published)
            if edge.width < TILE_WIDTH:
                wider.append(edge)
        for candidate in wider:
            try:
                data = self.get(log_id, candidate)
            except TilesMissingError:
                continue
            if tile.is_bundle:
                return encode_bundle(decode_bundle(data, candidate.width)[: tile.width])
            return data[: tile.size_bytes]
        raise TilesMissingError(
            f"log {log_id} has no {tile.path} (nor a wider tile) in the archive; if the log was written "
            "before tiles, run `auditlog tiles migrate`"
        )

    def reader(
        self, log_id: str, size: int, published: int | None = None, from_bundles: bool = False
    ) -> TileHashReader:
        """A TileHashReader of the log at `size` (proofs are checked against a signed checkpoint by the caller).

        `published`: a size ≥ `size` whose tiles are in the archive, for sizes that published none.
        Its nodes come from the tiles' inner levels, kept for the `levels_cached` tiles used last.

        `from_bundles`: a level-0 tile that neither cache holds, but whose entry bundle (same index
        and width) is in memory, is hashed from that bundle's entries instead of read from the
        archive: a proof has just read the event's bundle, and its tile is then one S3 GET fewer.
        Only for a caller that checks the path proves its entry in the signed tree: a bundle with
        an entry that is not the logged one gives a path that does not (Prover.proof_at then asks
        a reader without it).
        """
        if not from_bundles:
            return TileHashReader(
                size, lambda tile: self.tile(log_id, tile, published), lambda tile: self.levels(log_id, tile, published)
            )

        def levels(tile: Tile) -> list[list[bytes]]:
            if tile.level == 0:
                known = (log_id, tile) in self._levels
                if not known and self._local(tile_key(log_id, tile)) is None:
                    derived = self._derived_levels(log_id, tile)
                    if derived is not None:
                        return derived
            return self.levels(log_id, tile, published)

        return TileHashReader(size, lambda tile: self.tile(log_id, tile, published), levels)

    def _derived_levels(self, log_id: str, tile: Tile) -> list[list[bytes]] | None:
        """`tile_levels` of the level-0 tile hashed from its entry bundle; None if the bundle is not in memory.

        Kept like a read tile (memory, disk, levels), under keys of their own (DERIVED added),
        which only `reader(from_bundles=True)` reads: a stored tile is never taken for one.
        """

        def hashed() -> bytes | None:
            key = tile_key(log_id, tile) + DERIVED
            data = self._local(key)
            if data is None:
                data = self._hashed_bundle(log_id, tile)
                if data is None:
                    return None
                if self.disk is not None:
                    self.disk.put(key, data)
                self._cache.put(key, data)
            return data

        return self._levels_of((log_id + DERIVED, tile), hashed)

    def _hashed_bundle(self, log_id: str, tile: Tile) -> bytes | None:
        """The level-0 tile `tile` as the leaf hashes of its entry bundle in memory, or None."""
        bundle = self._cache.get(tile_key(log_id, Tile(ENTRIES, tile.index, tile.width)))
        if bundle is None:
            return None
        try:
            return b"".join(leaf_hashes(decode_bundle(bundle, tile.width)))
        except TileFormatError:
            return None  # the tile's own read decides, and names what is wrong

    def levels(self, log_id: str, tile: Tile, published: int | None = None) -> list[list[bytes]]:
        """`tile_levels` of a hash tile, computed once per tile while it stays among the `levels_cached` used last."""

        def read() -> bytes:
            data = self.tile(log_id, tile, published)
            if len(data) != tile.size_bytes:
                raise TileFormatError(f"{tile.path} of log {log_id} is {len(data)} bytes, want {tile.size_bytes}")
            return data

        levels = self._levels_of((log_id, tile), read)
        assert levels is not None  # read() returns bytes or raises
        return levels

    def _levels_of(self, key: tuple[str, Tile], read: Callable[[], bytes | None]) -> list[list[bytes]] | None:
        levels = self._levels.get(key)
        if levels is not None:
            return levels
        data = read()
        if data is None:
            return None
        levels = native_tile_levels()(data)
        self._levels.put(key, levels)
        return levels

    def entry(self, log_id: str, index: int, size: int) -> bytes:
        """Entry `index` of the log, as `entries`; kept in a cache of entries bounded by `entry_cache_bytes`.

        A proof needs one entry of a bundle: an event proved again is then answered without
        reading its 256-entry bundle from the disk cache (entries, like tiles, never change). The
        bound counts the entries' bytes; Python's own per-item cost (~150 B) comes on top.
        """
        found = self._entries.get((log_id, index))
        if found is None:
            found = self.entries(log_id, index, 1, size)[0]
            self._entries.put((log_id, index), found)
        return found

    def entries(self, log_id: str, first: int, count: int, size: int) -> list[bytes]:
        """Entries first .. first+count-1 of the log, from the entry bundles of `size` (whose tiles are there)."""
        return _entries(lambda bundle: self.get(log_id, bundle), first, count, size)


def _entries(get: Callable[[Tile], bytes], first: int, count: int, size: int) -> list[bytes]:
    out: list[bytes] = []
    at = first
    while at < first + count:
        bundle = tile_for_size(ENTRIES, at // TILE_WIDTH, size)
        out += bundle_slice(get(bundle), at - bundle.start, min(first + count, bundle.end) - bundle.start, bundle.width)
        at = bundle.end
    return out


def bundle_entries(
    archive: Any,
    header: BlockHeader,
    original_versions: Mapping[str, str] | None = None,
    read: dict[str, bytes] | None = None,
) -> list[bytes]:
    """The entries of a block whose object holds only its header, from its log's entry bundles.

    Read from the bundles of the tree of the block's `tree_size` (the partial bundle its seal
    published, and full ones), uncached; `original_versions` (key -> version id) pins each bundle
    to its first version, as verify reads every object, and `read` (if given) collects each
    bundle's bytes by tile path. Raises TilesMissingError naming a bundle that is not there.
    """
    log_id = header.log_id

    def get(bundle: Tile) -> bytes:
        key = tile_key(log_id, bundle)
        version = original_versions.get(key) if original_versions is not None else None
        try:
            data = bytes(archive.get(key, version_id=version) if version else archive.get(key))
            if read is not None:
                read[bundle.path] = data
            return data
        except ArchiveNotFoundError:
            raise TilesMissingError(
                f"log {log_id} block {header.block_index}: its entry bundle {bundle.path} is missing"
            ) from None

    return _entries(get, header.first_leaf_index, header.leaf_count, header.tree_size)


def bundle_keys(archive: Any, log_id: str, first: int, end: int) -> list[str]:
    """The keys of every entry bundle (full or partial) in the archive that holds a leaf of [first, end)."""
    keys: list[str] = []
    if end <= first:
        return keys
    for index in range(first // TILE_WIDTH, (end - 1) // TILE_WIDTH + 1):
        prefix = tile_key(log_id, Tile(ENTRIES, index))  # lists the full bundle and every partial one
        for key in archive.keys(prefix):
            tile = parse_tile_path(key[len(log_prefix(log_id)) :])
            if tile.index == index and tile.start < end and tile.end > first:
                keys.append(key)
    return keys
