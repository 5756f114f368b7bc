"""A tiled log growing block by block: what each block publishes, the one rule the writer and verify share.

`TiledLog.grow(first, entries, hashes)` appends a block's leaves and returns every tile and bundle
that growing the log to its new size publishes: the full hash tiles and bundles completed, then
the partial tiles and the partial bundle of the new size. A block whose events expired comes with
its leaf hashes only (`entries` None): its hash tiles are published, but no bundle holding any of
its entries can be, so bundles start again at the next bundle boundary after it.

The state is O(log n): the partial tiles of the current size and the open bundle.
"""

from __future__ import annotations

from collections.abc import Sequence

from transforms.errors import VerificationError
from transforms.merkle import leaf_hash
from transforms.tiles.bundles import BundleBuilder
from transforms.tiles.hashes import TileBuilder
from transforms.tiles.paths import TILE_WIDTH, Tile


class TiledLog:
    """The tiles of a log grown block by block (see the module)."""

    __slots__ = ("bundles", "tiles")

    def __init__(self, tiles: TileBuilder | None = None, bundles: BundleBuilder | None = None) -> None:
        """An empty log by default, or the log at the size of `tiles`.

        There `bundles` is None when the open bundle's first entries are gone (an expired block).
        """
        self.tiles = tiles if tiles is not None else TileBuilder()
        self.bundles = bundles if tiles is not None else BundleBuilder()
        if self.bundles is not None and self.bundles.size != self.tiles.size:
            raise VerificationError(f"bundles at size {self.bundles.size}, tiles at {self.tiles.size}")

    @property
    def size(self) -> int:
        return self.tiles.size

    def grow(
        self, first: int, entries: Sequence[bytes] | None, hashes: Sequence[bytes] | None = None
    ) -> list[tuple[Tile, bytes]]:
        """Appends one block's leaves at `first` (the current size); returns what the new size publishes.

        Order: full hash tiles as completed, the partial hash tiles, then the bundles (full, partial).
        `hashes` default to the entries' leaf hashes; one of the two is needed.
        """
        if first != self.size:
            raise VerificationError(f"a block starting at leaf {first} cannot follow a log of size {self.size}")
        if hashes is None:
            if entries is None:
                raise ValueError("a block needs its entries or its leaf hashes")
            hashes = [leaf_hash(e) for e in entries]
        out = self.tiles.extend(hashes)
        out += self.tiles.partial_tiles()
        if entries is None:
            self.bundles = None
            return out
        if self.bundles is None:
            skip = -first % TILE_WIDTH
            if skip >= len(entries):
                return out
            self.bundles, entries = BundleBuilder(first + skip), entries[skip:]
        out += self.bundles.extend(entries)
        partial = self.bundles.partial_bundle()
        if partial is not None:
            out.append(partial)
        return out

    def root(self) -> bytes:
        return self.tiles.root()
