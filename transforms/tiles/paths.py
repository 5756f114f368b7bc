"""Tile coordinates and their canonical paths, and which tiles a growing tree publishes.

`Tile` (a hash tile's level, index and width, or an entry bundle's), `tile_path` and
`parse_tile_path` (tile/<L>/<N>[.p/<W>], tile/entries/<N>[.p/<W>]), `tile_for_size`, and
`new_tiles` / `new_bundles` (Go's `tlog.NewTiles`). The package's docstring describes the layout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from transforms.errors import InvalidProofError, VerificationError
from transforms.merkle import HASH_SIZE

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT  # 256 hashes, or entries, in a full tile
FULL_TILE_BYTES = TILE_WIDTH * HASH_SIZE  # 8,192
MAX_LEVEL = 63  # the spec's bound on <L>
ENTRIES = -1  # the level of entry bundles (Go's tlog.Tile L = -1, "data")


class TileFormatError(VerificationError):
    """A tile path, a hash tile or an entry bundle does not follow c2sp.org/tlog-tiles."""


@dataclass(frozen=True, order=True)
class Tile:
    """One tile: `level` 0..63 for a hash tile, `ENTRIES` (-1) for an entry bundle; `index` N; `width` W."""

    level: int
    index: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        if not ENTRIES <= self.level <= MAX_LEVEL:
            raise TileFormatError(f"tile level {self.level} is outside {ENTRIES}..{MAX_LEVEL}")
        if self.index < 0:
            raise TileFormatError(f"tile index {self.index} is negative")
        if not 1 <= self.width <= TILE_WIDTH:
            raise TileFormatError(f"tile width {self.width} is outside 1..{TILE_WIDTH}")

    @property
    def is_full(self) -> bool:
        return self.width == TILE_WIDTH

    @property
    def is_bundle(self) -> bool:
        return self.level == ENTRIES

    @property
    def path(self) -> str:
        """`tile/<L>/<N>[.p/<W>]` or `tile/entries/<N>[.p/<W>]`."""
        return tile_path(self.level, self.index, self.width)

    @property
    def start(self) -> int:
        """The first leaf index the tile spans."""
        return self.index << (TILE_HEIGHT * (max(self.level, 0) + 1))

    @property
    def end(self) -> int:
        """One past the last leaf index the tile's `width` hashes (or entries) span."""
        return self.start + (self.width << (TILE_HEIGHT * max(self.level, 0)))

    @property
    def size_bytes(self) -> int:
        """The length of a hash tile's data (`width` × 32); entry bundles have no fixed length."""
        return self.width * HASH_SIZE

    def full(self) -> Tile:
        """The full tile at the same coordinates."""
        return Tile(self.level, self.index)


def _index_elements(n: int) -> str:
    text = f"{n % 1000:03d}"
    while n >= 1000:
        n //= 1000
        text = f"x{n % 1000:03d}/{text}"
    return text


def tile_path(level: int, index: int, width: int = TILE_WIDTH) -> str:
    """The canonical path of a tile: `tile/<L>/<N>[.p/<W>]`, or `tile/entries/…` for level `ENTRIES`."""
    Tile(level, index, width)  # validates
    head = "tile/entries/" if level == ENTRIES else f"tile/{level}/"
    tail = "" if width == TILE_WIDTH else f".p/{width}"
    return head + _index_elements(index) + tail


_PATH = re.compile(
    r"tile/(?P<level>entries|0|[1-9][0-9]?)/(?P<index>(?:x[0-9]{3}/)*[0-9]{3})(?:\.p/(?P<width>[1-9][0-9]{0,2}))?"
)


def parse_tile_path(path: str) -> Tile:
    """The tile a canonical path names; anything else (leading `x000`, `.p/256`, L > 63) is refused."""
    m = _PATH.fullmatch(path)
    if m is None:
        raise TileFormatError(f"{path!r} is not a tlog-tiles path (tile/<L>/<N>[.p/<W>] or tile/entries/<N>[.p/<W>])")
    level = ENTRIES if m["level"] == "entries" else int(m["level"])
    index = 0
    for element in m["index"].split("/"):
        index = index * 1000 + int(element.lstrip("x"))
    width = int(m["width"]) if m["width"] else TILE_WIDTH
    if level > MAX_LEVEL or (m["width"] and width >= TILE_WIDTH):
        raise TileFormatError(f"{path!r} names no tile (level 0..{MAX_LEVEL}, partial width 1..{TILE_WIDTH - 1})")
    tile = Tile(level, index, width)
    if tile.path != path:
        raise TileFormatError(f"{path!r} is not canonical; the tile's path is {tile.path!r}")
    return tile


def tile_for_size(level: int, index: int, size: int) -> Tile:
    """Hash tile (`level`, `index`) as it exists in a tree of `size` leaves (full, or the partial edge).

    `level` may be `ENTRIES` for the entry bundle of level-0 tile `index`. Raises InvalidProofError
    if the tree has no such tile.
    """
    hashes = size >> (TILE_HEIGHT * max(level, 0))  # hashes at this tile level in the tree
    width = min(TILE_WIDTH, hashes - (index << TILE_HEIGHT))
    if width < 1 or index < 0:
        what = "entry bundle" if level == ENTRIES else f"level {level} tile"
        raise InvalidProofError(f"a tree of size {size} has no {what} {index}")
    return Tile(level, index, width)


def new_tiles(old_size: int, new_size: int) -> list[Tile]:
    """The hash tiles to publish when a tree grows from `old_size` to `new_size`, by level then index.

    Every full tile completed since `old_size`, and the partial tile of `new_size` at each level where
    it differs from `old_size`'s (Go's `tlog.NewTiles` with height 8). None for a tree of size 0.
    """
    if not 0 <= old_size <= new_size:
        raise InvalidProofError(f"old size {old_size} is outside 0..{new_size}")
    tiles: list[Tile] = []
    level = 0
    while new_size >> (TILE_HEIGHT * level) > 0:
        old_n = old_size >> (TILE_HEIGHT * level)
        new_n = new_size >> (TILE_HEIGHT * level)
        if old_n != new_n:
            tiles += [Tile(level, n) for n in range(old_n >> TILE_HEIGHT, new_n >> TILE_HEIGHT)]
            if width := new_n % TILE_WIDTH:
                tiles.append(Tile(level, new_n >> TILE_HEIGHT, width))
        level += 1
    return tiles


def new_bundles(old_size: int, new_size: int) -> list[Tile]:
    """The entry bundles to publish when a tree grows from `old_size` to `new_size` (level-0's tiles)."""
    return [Tile(ENTRIES, t.index, t.width) for t in new_tiles(old_size, new_size) if t.level == 0]
