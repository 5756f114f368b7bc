"""C2SP tlog-tiles: tile coordinates and paths, hash tiles, entry bundles, and proofs read from tiles.

A log's tree (docs/design.md §2) is published as static, immutable resources (c2sp.org/tlog-tiles,
the layout of Go's checksum database, Sunlight and Tessera), with tiles of height 8:

    tile/<L>/<N>[.p/<W>]         hash tile: W (1..256) hashes at tree level 8·L
    tile/entries/<N>[.p/<W>]     entry bundle: the W entries of level-0 tile N

The hash tile at level L, index N holds, for i < W, MTH(D[(N·256 + i)·256^L : (N·256 + i + 1)·256^L]):
leaf hashes at level 0, and at level L ≥ 1 the root of each *full* tile of level L−1. A full tile
has 256 hashes (8,192 bytes); the rightmost tile of each level is partial, `.p/<W>` with W = ⌊size /
256^L⌋ mod 256, and is never hashed into the level above. The levels inside a tile (tree levels
8·L+1 … 8·L+7) are not stored: they are rehashed from the tile (`tile_hash`). N is written in
3-digit path elements, all but the last prefixed with `x` (1234067 → `x001/x234/067`).

An entry bundle is the concatenation, for each entry, of its length as a big-endian uint16 and its
bytes; entry i of bundle N hashes (RFC 9162 leaf hash) to hash i of level-0 tile N. The 16-bit
length caps an entry at 65,535 bytes (`MAX_ENTRY_BYTES`): auditlog refuses a larger event when it
makes its canonical bytes (docs/design.md §1, §13), so every log stays readable by any tlog client;
`encode_bundle` refuses one too.

What is here, all pure:

- `Tile`, `tile_path`, `parse_tile_path`: coordinates and their canonical paths.
- `new_tiles(old, new)`, `new_bundles(old, new)`: what growing a tree from `old` to `new` leaves
  publishes (Go's `tlog.NewTiles`), and `hash_tiles(leaf_hashes, old)`, their contents in one batch.
- `TileBuilder`: the same, streaming, in O(log n) memory: leaf hashes in, full tiles out as they
  complete, the partial tiles of the current size on demand. Its state *is* the partial tiles of a
  checkpointed size, so a publisher resumes from what it published (and checks `root()` against
  the checkpoint). `BundleBuilder` does the same for entry bundles.
- `encode_bundle`, `decode_bundle`: entry bundles.
- `TileHashReader`: any node, root, inclusion or consistency proof of a tree of a given size, read
  through a `fetch(Tile) -> bytes` function; the proofs are exactly transforms/merkle.py's. The
  reader only checks shapes: tiles come from storage a verifier does not trust, so whoever uses a
  proof verifies it against a signed checkpoint (`verify_inclusion`, `verify_consistency`).
  `inclusion_tiles` and `consistency_tiles` name the tiles a proof reads.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from hashlib import sha256

from transforms.errors import InvalidProofError, VerificationError
from transforms.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    NODE_PREFIX,
    _consistency_path,
    _inclusion_path,
    leaf_hash,
    node_hash,
)

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT  # 256 hashes, or entries, in a full tile
FULL_TILE_BYTES = TILE_WIDTH * HASH_SIZE  # 8,192
MAX_LEVEL = 63  # the spec's bound on <L>
ENTRIES = -1  # the level of entry bundles (Go's tlog.Tile L = -1, "data")
MAX_ENTRY_BYTES = 0xFFFF  # the 16-bit length prefix of an entry bundle

__all__ = [
    "ENTRIES",
    "FULL_TILE_BYTES",
    "MAX_ENTRY_BYTES",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "BundleBuilder",
    "EntryTooLargeError",
    "Tile",
    "TileBuilder",
    "TileFetch",
    "TileFormatError",
    "TileHashReader",
    "consistency_tiles",
    "decode_bundle",
    "encode_bundle",
    "hash_tiles",
    "inclusion_tiles",
    "new_bundles",
    "new_tiles",
    "parse_tile_path",
    "tile_for_size",
    "tile_hash",
    "tile_path",
]


class TileFormatError(VerificationError):
    """A tile path, a hash tile or an entry bundle does not follow c2sp.org/tlog-tiles."""


class EntryTooLargeError(ValueError):
    """An entry is longer than an entry bundle's 16-bit length prefix can say (65,535 bytes)."""

    def __init__(self, size: int, index: int | None = None) -> None:
        self.size = size
        where = f"entry {index}" if index is not None else "an entry"
        super().__init__(
            f"{where} is {size:,} bytes; a tlog-tiles entry bundle holds entries of at most "
            f"{MAX_ENTRY_BYTES:,} bytes (docs/design.md §13)"
        )


# --------------------------------------------------------------------------- coordinates and paths


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


# --------------------------------------------------------------------------- hash tiles


def _hashes(data: bytes | bytearray, what: str = "tile") -> list[bytes]:
    if len(data) % HASH_SIZE:
        raise TileFormatError(f"{what} is {len(data)} bytes, not a whole number of {HASH_SIZE}-byte hashes")
    return [bytes(data[i : i + HASH_SIZE]) for i in range(0, len(data), HASH_SIZE)]


def tile_hash(data: bytes | bytearray) -> bytes:
    """The root of the perfect subtree whose 2^k bottom hashes are `data` (one hash is its own root)."""
    level = _hashes(data)
    if not level or len(level) & (len(level) - 1):
        raise TileFormatError(f"tile_hash needs a power of two of hashes, got {len(level)}")
    while len(level) > 1:
        level = [sha256(NODE_PREFIX + level[i] + level[i + 1]).digest() for i in range(0, len(level), 2)]
    return level[0]


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


# --------------------------------------------------------------------------- entry bundles


def encode_bundle(entries: Iterable[bytes]) -> bytes:
    """An entry bundle: each entry as a big-endian uint16 length and its bytes (1..256 entries)."""
    out = bytearray()
    count = 0
    for i, entry in enumerate(entries):
        if len(entry) > MAX_ENTRY_BYTES:
            raise EntryTooLargeError(len(entry), i)
        out += len(entry).to_bytes(2, "big")
        out += entry
        count += 1
    if not 1 <= count <= TILE_WIDTH:
        raise TileFormatError(f"an entry bundle holds 1..{TILE_WIDTH} entries, got {count}")
    return bytes(out)


def decode_bundle(data: bytes, width: int | None = None) -> list[bytes]:
    """The entries of a bundle; with `width`, exactly that many and nothing left over."""
    entries: list[bytes] = []
    at = 0
    while at < len(data):
        if len(data) - at < 2:
            raise TileFormatError(f"entry bundle ends inside the length of entry {len(entries)} (byte {at})")
        n = int.from_bytes(data[at : at + 2], "big")
        if len(data) - at - 2 < n:
            raise TileFormatError(
                f"entry {len(entries)} claims {n} bytes at byte {at}, only {len(data) - at - 2} are left"
            )
        entries.append(data[at + 2 : at + 2 + n])
        at += 2 + n
        if len(entries) > TILE_WIDTH:
            raise TileFormatError(f"entry bundle holds more than {TILE_WIDTH} entries")
    if width is not None and len(entries) != width:
        raise TileFormatError(f"entry bundle holds {len(entries)} entries, want {width}")
    if not entries:
        raise TileFormatError("entry bundle is empty")
    return entries


class BundleBuilder:
    """Entry bundles of a growing log: entries in, full bundles out, the partial bundle on demand.

    The state is the entries of the current partial bundle (at most 255); `from_partial` resumes.
    """

    __slots__ = ("_pending", "_size")

    def __init__(self, size: int = 0, partial: Sequence[bytes] = ()) -> None:
        if size < 0 or len(partial) != size % TILE_WIDTH:
            raise TileFormatError(
                f"a log of size {size} has a partial bundle of {size % TILE_WIDTH}, got {len(partial)}"
            )
        self._size = size
        self._pending = list(partial)

    @classmethod
    def from_partial(cls, size: int, data: bytes | None) -> BundleBuilder:
        """A builder at `size` from its partial bundle's bytes (None when size is a multiple of 256)."""
        return cls(size, decode_bundle(data, size % TILE_WIDTH) if data is not None else ())

    @property
    def size(self) -> int:
        return self._size

    def append(self, entry: bytes) -> tuple[Tile, bytes] | None:
        """Adds one entry; returns the full bundle it completes, if any."""
        if len(entry) > MAX_ENTRY_BYTES:
            raise EntryTooLargeError(len(entry), self._size)
        self._pending.append(entry)
        self._size += 1
        if self._size % TILE_WIDTH:
            return None
        data, self._pending = encode_bundle(self._pending), []
        return Tile(ENTRIES, (self._size >> TILE_HEIGHT) - 1), data

    def extend(self, entries: Iterable[bytes]) -> list[tuple[Tile, bytes]]:
        done = []
        for entry in entries:
            full = self.append(entry)
            if full is not None:
                done.append(full)
        return done

    def partial_bundle(self) -> tuple[Tile, bytes] | None:
        """The partial bundle of the current size, or None when the size is a multiple of 256."""
        if not self._pending:
            return None
        return Tile(ENTRIES, self._size >> TILE_HEIGHT, len(self._pending)), encode_bundle(self._pending)

    def pending_leaf_hashes(self) -> list[bytes]:
        return [leaf_hash(e) for e in self._pending]


# --------------------------------------------------------------------------- proofs from tiles

TileFetch = Callable[[Tile], bytes]
"""Returns a hash tile's data: `width` × 32 bytes. It may raise whatever its storage raises."""


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
    bounded, in `fetch`). Only the tiles' lengths are checked: verify what is built against a signed
    checkpoint.
    """

    __slots__ = ("_fetch", "_nodes", "_tiles", "size")

    def __init__(self, size: int, fetch: TileFetch) -> None:
        if size < 0:
            raise InvalidProofError(f"tree size {size} is negative")
        self.size = size
        self._fetch = fetch
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
            h = self._nodes[height, index] = tile_hash(self.tile(tile)[at * HASH_SIZE : (at + count) * HASH_SIZE])
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
