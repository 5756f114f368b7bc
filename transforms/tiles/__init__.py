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
length caps an entry at 65,535 bytes (`MAX_ENTRY_BYTES`): the schema caps metadata so that every
valid event fits, and a larger entry is refused where its canonical bytes are made (docs/design.md
§1, §13), so every log stays readable by any tlog client; `encode_bundle` refuses one too.

What is here, all pure:

- `Tile`, `tile_path`, `parse_tile_path`: coordinates and their canonical paths.
- `new_tiles(old, new)`, `new_bundles(old, new)`: what growing a tree from `old` to `new` leaves
  publishes (Go's `tlog.NewTiles`), and `hash_tiles(leaf_hashes, old)`, their contents in one batch.
- `TileBuilder`: the same, streaming, in O(log n) memory: leaf hashes in, full tiles out as they
  complete, the partial tiles of the current size on demand. Its state *is* the partial tiles of a
  checkpointed size, so a publisher resumes from what it published (and checks `root()` against
  the checkpoint). `BundleBuilder` does the same for entry bundles.
- `encode_bundle`, `decode_bundle`, `bundle_slice`: entry bundles (`bundle_slice` copies out only the
  entries asked for).
- `TileHashReader`: any node, root, inclusion or consistency proof of a tree of a given size, read
  through a `fetch(Tile) -> bytes` function; the proofs are exactly transforms/merkle.py's. The
  reader only checks shapes: tiles come from storage a verifier does not trust, so whoever uses a
  proof verifies it against a signed checkpoint (`verify_inclusion`, `verify_consistency`).
  `inclusion_tiles` and `consistency_tiles` name the tiles a proof reads.

The package, one module a part (each re-exported here):

    paths       Tile, tile_path, parse_tile_path, tile_for_size, new_tiles, new_bundles
    hashes      tile_hash, tile_levels, hash_tiles, TileBuilder
    bundles     MAX_ENTRY_BYTES, EntryTooLargeError, encode_bundle, decode_bundle, bundle_slice, BundleBuilder
    read        TileHashReader, TileFetch, inclusion_tiles, consistency_tiles
    log         TiledLog: what each block of a growing log publishes (the writer's and verify's rule)
"""

from transforms.tiles.bundles import (
    MAX_ENTRY_BYTES,
    BundleBuilder,
    EntryTooLargeError,
    bundle_slice,
    decode_bundle,
    encode_bundle,
)
from transforms.tiles.hashes import TileBuilder, hash_tiles, tile_hash, tile_levels
from transforms.tiles.log import TiledLog
from transforms.tiles.paths import (
    ENTRIES,
    FULL_TILE_BYTES,
    TILE_HEIGHT,
    TILE_WIDTH,
    Tile,
    TileFormatError,
    new_bundles,
    new_tiles,
    parse_tile_path,
    tile_for_size,
    tile_path,
)
from transforms.tiles.read import TileFetch, TileHashReader, consistency_tiles, inclusion_tiles

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
    "TiledLog",
    "consistency_tiles",
    "bundle_slice",
    "decode_bundle",
    "encode_bundle",
    "hash_tiles",
    "inclusion_tiles",
    "new_bundles",
    "new_tiles",
    "parse_tile_path",
    "tile_for_size",
    "tile_hash",
    "tile_levels",
    "tile_path",
]
