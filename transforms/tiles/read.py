"""Proofs read from tiles.

`TileHashReader`: any node, root, inclusion or consistency proof of a tree of a given size, read
through a `fetch(Tile) -> bytes` function; `inclusion_tiles` and `consistency_tiles`: the tiles a
proof reads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from transforms.errors import InvalidProofError
from transforms.merkle import EMPTY_ROOT, HASH_SIZE, _consistency_path, _inclusion_path, node_hash
from transforms.tiles.hashes import tile_hash
from transforms.tiles.paths import TILE_HEIGHT, TILE_WIDTH, Tile, TileFormatError, tile_for_size

TileFetch = Callable[[Tile], bytes]
"""Returns a hash tile's data: `width` × 32 bytes. It may raise whatever its storage raises."""
TileLevels = Callable[[Tile], Sequence[Sequence[bytes]]]
"""Returns `tile_levels` of a hash tile's data (checked to be `width` × 32 bytes), e.g. from a cache."""


def _perfect_ranges(lo: int, hi: int) -> list[tuple[int, int]]:
    """[lo, hi) of one left-balanced tree split into its perfect, aligned subtrees: (height, index)."""
    n = hi - lo
    if n & (n - 1) == 0 and lo % n == 0:
        height = n.bit_length() - 1
        return [(height, lo >> height)]
    k = 1 << ((n - 1).bit_length() - 1)
    return _perfect_ranges(lo, lo + k) + _perfect_ranges(lo + k, hi)


def _node_tile(height: int, index: int, size: int) -> tuple[Tile, int, int]:
    """The tile of a tree of `size` that holds node (height, index), and the node's slice in it (hashes)."""
    level, inner = divmod(height, TILE_HEIGHT)
    first = index << inner  # the node's first hash at tree level 8·level
    tile = tile_for_size(level, first >> TILE_HEIGHT, size)
    at = first % TILE_WIDTH
    if at + (1 << inner) > tile.width:
        raise InvalidProofError(f"node (height {height}, index {index}) is not complete in a tree of size {size}")
    return tile, at, 1 << inner


class TileHashReader:
    """The hashes of the tree of `size` leaves, read from its tiles through `fetch`.

    `node`, `root`, `inclusion_proof` and `consistency_proof` give exactly what transforms/merkle.py
    gives for the same leaves; each proof reads a few tiles per tile level (`inclusion_tiles`). Tiles
    fetched are kept for the reader's lifetime, so make one reader per request (and cache tiles,
    bounded, in `fetch`). With `levels`, a node is looked up in its tile's `tile_levels` instead of
    rehashed from the tile's hashes (a source that caches them saves most of a proof's hashing).
    Only the tiles' lengths are checked: verify what is built against a signed checkpoint.
    """

    __slots__ = ("_fetch", "_levels", "_levels_of", "_nodes", "_tiles", "size")

    def __init__(self, size: int, fetch: TileFetch, levels: TileLevels | None = None) -> None:
        if size < 0:
            raise InvalidProofError(f"tree size {size} is negative")
        self.size = size
        self._fetch = fetch
        self._levels = levels
        self._levels_of: dict[Tile, Sequence[Sequence[bytes]]] = {}  # each tile's levels, asked once
        self._tiles: dict[Tile, bytes] = {}
        self._nodes: dict[tuple[int, int], bytes] = {}

    def tile(self, tile: Tile) -> bytes:
        data = self._tiles.get(tile)
        if data is None:
            data = self._fetch(tile)
            if len(data) != tile.size_bytes:
                raise TileFormatError(f"{tile.path} is {len(data)} bytes, want {tile.size_bytes}")
            self._tiles[tile] = data
        return data

    def node(self, height: int, index: int) -> bytes:
        """The root of the perfect subtree of 2^height leaves starting at leaf index << height."""
        if height < 0 or index < 0 or (index + 1) << height > self.size:
            raise InvalidProofError(f"node (height {height}, index {index}) is outside a tree of size {self.size}")
        h = self._nodes.get((height, index))
        if h is None:
            tile, at, count = _node_tile(height, index, self.size)
            if self._levels is not None:
                levels = self._levels_of.get(tile)
                if levels is None:
                    levels = self._levels_of[tile] = self._levels(tile)
                h = levels[count.bit_length() - 1][at // count]
            else:
                h = tile_hash(self.tile(tile)[at * HASH_SIZE : (at + count) * HASH_SIZE])
            self._nodes[height, index] = h
        return h

    def leaf_hash(self, index: int) -> bytes:
        return self.node(0, index)

    def subtree(self, lo: int, hi: int) -> bytes:
        """The root of leaves [lo, hi) as one left-balanced tree (what a proof step asks for)."""
        parts = [self.node(h, i) for h, i in _perfect_ranges(lo, hi)]
        acc = parts[-1]
        for h in reversed(parts[:-1]):
            acc = node_hash(h, acc)
        return acc

    def root(self) -> bytes:
        return self.subtree(0, self.size) if self.size else EMPTY_ROOT

    def inclusion_proof(self, index: int) -> list[bytes]:
        """Leaf `index`'s audit path in this tree; equals `merkle.inclusion_proof(leaves[:size], index)`."""
        return _inclusion_path(self.size, index, self.subtree)

    def consistency_proof(self, old_size: int) -> list[bytes]:
        """The proof that the first `old_size` leaves are a prefix; equals `merkle.consistency_proof`."""
        return _consistency_path(self.size, old_size, self.subtree)


def _tiles_of(walk: Callable[[Callable[[int, int], bytes]], object], size: int) -> list[Tile]:
    ranges: list[tuple[int, int]] = []

    def record(lo: int, hi: int) -> bytes:
        ranges.append((lo, hi))
        return EMPTY_ROOT

    walk(record)
    tiles = {_node_tile(h, i, size)[0] for lo, hi in ranges for h, i in _perfect_ranges(lo, hi)}
    return sorted(tiles)


def inclusion_tiles(index: int, size: int) -> list[Tile]:
    """The hash tiles an inclusion proof of leaf `index` in a tree of `size` reads."""
    return _tiles_of(lambda subtree: _inclusion_path(size, index, subtree), size)


def consistency_tiles(old_size: int, size: int) -> list[Tile]:
    """The hash tiles a consistency proof from `old_size` to `size` reads."""
    return _tiles_of(lambda subtree: _consistency_path(size, old_size, subtree), size)
