"""Entry bundles: each entry as a big-endian uint16 length and its bytes.

`encode_bundle`, `decode_bundle` and `BundleBuilder` (a growing log's bundles), and the 16-bit length
prefix's cap on an entry (`MAX_ENTRY_BYTES`, `EntryTooLargeError`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from transforms.merkle import leaf_hash
from transforms.tiles.paths import ENTRIES, TILE_HEIGHT, TILE_WIDTH, Tile, TileFormatError

MAX_ENTRY_BYTES = 0xFFFF  # the 16-bit length prefix of an entry bundle


class EntryTooLargeError(ValueError):
    """An entry is longer than an entry bundle's 16-bit length prefix can say (65,535 bytes)."""

    def __init__(self, size: int, index: int | None = None) -> None:
        self.size = size
        where = f"entry {index}" if index is not None else "an entry"
        super().__init__(
            f"{where} is {size:,} bytes; a tlog-tiles entry bundle holds entries of at most "
            f"{MAX_ENTRY_BYTES:,} bytes (docs/design.md §13)"
        )


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


def _spans(data: bytes, width: int | None) -> list[tuple[int, int]]:
    """Where each entry of a bundle lies ([start, end) in `data`); with `width`, exactly that many."""
    spans: list[tuple[int, int]] = []
    at, total = 0, len(data)
    while at < total:
        if total - at < 2:
            raise TileFormatError(f"entry bundle ends inside the length of entry {len(spans)} (byte {at})")
        start = at + 2
        at = start + (data[at] << 8 | data[at + 1])
        if at > total:
            raise TileFormatError(
                f"entry {len(spans)} claims {at - start} bytes at byte {start - 2}, only {total - start} are left"
            )
        spans.append((start, at))
        if len(spans) > TILE_WIDTH:
            raise TileFormatError(f"entry bundle holds more than {TILE_WIDTH} entries")
    if width is not None and len(spans) != width:
        raise TileFormatError(f"entry bundle holds {len(spans)} entries, want {width}")
    if not spans:
        raise TileFormatError("entry bundle is empty")
    return spans


def decode_bundle(data: bytes, width: int | None = None) -> list[bytes]:
    """The entries of a bundle; with `width`, exactly that many and nothing left over."""
    return [data[start:end] for start, end in _spans(data, width)]


def bundle_slice(data: bytes, first: int, end: int, width: int | None = None) -> list[bytes]:
    """Entries first .. end-1 of a bundle, checked as `decode_bundle` checks it, copying only those."""
    return [data[start:stop] for start, stop in _spans(data, width)[first:end]]


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
