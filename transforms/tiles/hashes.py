"""Hash tiles: their contents, in one batch or streaming.

`tile_hash` (a tile's inner levels rehashed), `hash_tiles` (the tiles a growing tree publishes, from
all its leaf hashes at once) and `TileBuilder` (the same, streaming, in O(log n) memory).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from hashlib import sha256

from transforms.errors import InvalidProofError
from transforms.merkle import EMPTY_ROOT, HASH_SIZE, NODE_PREFIX, node_hash, node_level
from transforms.tiles.paths import TILE_HEIGHT, TILE_WIDTH, Tile, TileFormatError, new_tiles


def _hashes(data: bytes | bytearray, what: str = "tile") -> list[bytes]:
    if len(data) % HASH_SIZE:
        raise TileFormatError(f"{what} is {len(data)} bytes, not a whole number of {HASH_SIZE}-byte hashes")
    return [bytes(data[i : i + HASH_SIZE]) for i in range(0, len(data), HASH_SIZE)]


def tile_hash(data: bytes | bytearray) -> bytes:
    """The root of the perfect subtree whose 2^k bottom hashes are `data` (one hash is its own root)."""
    count = len(data) // HASH_SIZE
    if len(data) % HASH_SIZE or not count or count & (count - 1):
        raise TileFormatError(f"tile_hash needs a power of two of 32-byte hashes, got {len(data)} bytes")
    level = bytes(data)
    while len(level) > HASH_SIZE:
        level = node_level(level)
    return level


def tile_levels(data: bytes | bytearray) -> list[list[bytes]]:
    """Every complete node a tile holds, by height within it.

    [0] is the tile's hashes and [k][j] the root of its hashes j·2^k .. (j+1)·2^k - 1.

    A tile of width W (full or partial) has W >> k nodes at height k; computed once, any node a
    proof asks of the tile is a lookup (`TileHashReader` with a `levels` source).
    """
    level = _hashes(data)
    levels = [level]
    while len(level) > 1:
        level = [sha256(NODE_PREFIX + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        levels.append(level)
    return levels


def hash_tiles(leaf_hashes: Sequence[bytes], old_size: int = 0) -> dict[Tile, bytes]:
    """The contents of `new_tiles(old_size, len(leaf_hashes))`, from all the tree's leaf hashes at once.

    The batch reference: `TileBuilder` gives the same tiles in O(log n) memory.
    """
    size = len(leaf_hashes)
    wanted = new_tiles(old_size, size)
    levels: list[list[bytes]] = [list(leaf_hashes)]
    while len(levels[-1]) >= TILE_WIDTH:
        below = levels[-1]
        levels.append(
            [tile_hash(b"".join(below[i : i + TILE_WIDTH])) for i in range(0, len(below) - TILE_WIDTH + 1, TILE_WIDTH)]
        )
    out: dict[Tile, bytes] = {}
    for t in wanted:
        first = t.index * TILE_WIDTH
        out[t] = b"".join(levels[t.level][first : first + t.width])
    return out


class TileBuilder:
    """The hash tiles of a growing tree, streaming: leaf hashes in, tiles out, O(log n) state.

    The state is the partial tile of each level (at most 255 hashes a level), which is exactly what
    a tree of the current size publishes as its `.p/<W>` tiles; `from_partial_tiles` resumes from
    them. `extend` returns each full tile completed, lowest level first within one leaf.
    """

    __slots__ = ("_pending", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._pending: list[bytearray] = []

    @classmethod
    def from_partial_tiles(cls, size: int, tiles: Mapping[Tile, bytes]) -> TileBuilder:
        """A builder at `size`, from the partial tiles of that size (`partial_tiles()` of a builder there).

        Only the shapes can be checked here; compare `root()` with the size's signed checkpoint.
        """
        if size < 0:
            raise InvalidProofError(f"tree size {size} is negative")
        builder = cls()
        builder._size = size
        want = [t for t in new_tiles(0, size) if not t.is_full]
        extra = set(tiles) - set(want)
        if extra:
            raise TileFormatError(f"tiles {sorted(t.path for t in extra)} are not the partial tiles of size {size}")
        level = 0
        while size >> (TILE_HEIGHT * level) > 0:
            builder._pending.append(bytearray())
            level += 1
        for t in want:
            if t not in tiles:
                raise TileFormatError(f"the partial tile {t.path} of size {size} is missing")
            data = tiles[t]
            if len(data) != t.size_bytes:
                raise TileFormatError(f"{t.path} is {len(data)} bytes, want {t.size_bytes}")
            builder._pending[t.level] += data
        return builder

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf: bytes) -> list[tuple[Tile, bytes]]:
        """Appends one leaf hash; returns the full tiles it completes."""
        if len(leaf) != HASH_SIZE:
            raise InvalidProofError(f"leaf hash must be {HASH_SIZE} bytes, got {len(leaf)}")
        done: list[tuple[Tile, bytes]] = []
        self._size += 1
        h, level, count = leaf, 0, self._size  # count: hashes at this level once h is in
        while True:
            if level == len(self._pending):
                self._pending.append(bytearray())
            pending = self._pending[level]
            pending += h
            if count % TILE_WIDTH:
                break
            data = bytes(pending)
            pending.clear()
            done.append((Tile(level, (count >> TILE_HEIGHT) - 1), data))
            h, level, count = tile_hash(data), level + 1, count >> TILE_HEIGHT
        return done

    def extend(self, leaves: Iterable[bytes]) -> list[tuple[Tile, bytes]]:
        """Appends many leaf hashes; returns every full tile completed, in the order completed."""
        done: list[tuple[Tile, bytes]] = []
        for leaf in leaves:
            done += self.append(leaf)
        return done

    def partial_tiles(self) -> list[tuple[Tile, bytes]]:
        """The partial tiles of the current size, by level (none where the level's count is a multiple of 256)."""
        out = []
        for level, pending in enumerate(self._pending):
            if pending:
                count = self._size >> (TILE_HEIGHT * level)
                out.append((Tile(level, count >> TILE_HEIGHT, len(pending) // HASH_SIZE), bytes(pending)))
        return out

    def root(self) -> bytes:
        """The tree's root, from the partial tiles alone (the compact range of the size)."""
        subtrees: list[bytes] = []  # left to right: higher levels hold the leftmost subtrees
        for pending in reversed(self._pending):
            hashes, at = len(pending) // HASH_SIZE, 0
            for bit in reversed(range(TILE_HEIGHT)):
                if hashes >> bit & 1:
                    subtrees.append(tile_hash(pending[at * HASH_SIZE : (at + (1 << bit)) * HASH_SIZE]))
                    at += 1 << bit
        if not subtrees:
            return EMPTY_ROOT
        acc = subtrees[-1]
        for h in reversed(subtrees[:-1]):
            acc = node_hash(h, acc)
        return acc
