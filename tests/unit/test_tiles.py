"""C2SP tlog-tiles (the transforms/tiles package): paths, hash tiles, entry bundles and proofs read from tiles.

Vectors: the spec's own examples (paths, the tiles of a tree of 70,000 and of 256 leaves) and tile
digests that Go's golang.org/x/mod/sumdb/tlog (NewTiles + ReadTileData) computed for the entries
b"entry 0" … b"entry 599" (tests/interop checks many more against Go live). Properties: the
streaming builders equal the batch reference for any chunking and any resume point; proofs read from
tiles equal transforms/merkle.py's for every tree size up to 3,000; a proof reads only the tiles its
tree size publishes, and exactly those `inclusion_tiles` / `consistency_tiles` name.
"""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.errors import InvalidProofError, VerificationError
from transforms.merkle import MerkleTree, leaf_hash, root
from transforms.tiles import (
    ENTRIES,
    MAX_ENTRY_BYTES,
    BundleBuilder,
    EntryTooLargeError,
    Tile,
    TileBuilder,
    TileFormatError,
    TileHashReader,
    bundle_slice,
    consistency_tiles,
    decode_bundle,
    encode_bundle,
    hash_tiles,
    inclusion_tiles,
    new_bundles,
    new_tiles,
    parse_tile_path,
    tile_for_size,
    tile_hash,
    tile_levels,
    tile_path,
)

VECTOR_ENTRIES = [b"entry %d" % i for i in range(600)]
# sha256 of each tile's data, as Go's tlog.ReadTileData wrote them for VECTOR_ENTRIES.
GO_TILE_DIGESTS = {
    (0, 600): {
        "tile/0/000": "b0f6ca2ff42508faf8c6bb4ea8bb9c74243b19d4174fdc4fd17bdad9099e605e",
        "tile/0/001": "5b4af7f8c276af63acf25814d12ef3d04d3ed33d10431e9f8535876604e53acf",
        "tile/0/002.p/88": "ed05608d4fe01f6be650d6782fd5c38413664ab3c7e58b2ce06d07811ef7abbe",
        "tile/1/000.p/2": "8152514257f01fd795091dbf4b4ca2b407d81384d1a2813483012d733fdd0585",
    },
    (256, 513): {
        "tile/0/001": "5b4af7f8c276af63acf25814d12ef3d04d3ed33d10431e9f8535876604e53acf",
        "tile/0/002.p/1": "6f62b1651270d261b2f6ca608106a0c9d531670753dc87cc1cebcb308185c2d6",
        "tile/1/000.p/2": "8152514257f01fd795091dbf4b4ca2b407d81384d1a2813483012d733fdd0585",
    },
}


def _hashes(n: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    return [leaf_hash(rng.randbytes(rng.randrange(12))) for _ in range(n)]


# --------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("tile", "path"),
    [
        (Tile(0, 0), "tile/0/000"),
        (Tile(0, 1234067), "tile/0/x001/x234/067"),  # the spec's example
        (Tile(3, 1234067, 1), "tile/3/x001/x234/067.p/1"),
        (Tile(1, 999), "tile/1/999"),
        (Tile(1, 1000), "tile/1/x001/000"),
        (Tile(63, 5, 255), "tile/63/005.p/255"),
        (Tile(ENTRIES, 0, 3), "tile/entries/000.p/3"),
        (Tile(ENTRIES, 1_000_000), "tile/entries/x001/x000/000"),
    ],
)
def test_tile_paths(tile: Tile, path: str) -> None:
    assert tile.path == path == tile_path(tile.level, tile.index, tile.width)
    assert parse_tile_path(path) == tile


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/0",  # not 3 digits
        "tile/0/x000/001",  # leading x000: not canonical
        "tile/00/000",  # leading zero in L
        "tile/64/000",  # L beyond 63
        "tile/0/000.p/256",  # a full tile is never .p/256
        "tile/0/000.p/0",
        "tile/0/000.p/010",
        "tile/0/001/002",  # last element with x only
        "tile/0/x001",  # last element must not have x
        "tile/entries/000.p/",
        "tile/data/000",
        "tile/8/0/000",  # Go's sumdb path with a height
        "/tile/0/000",
        "tile/0/000/",
        "tile/-1/000",
    ],
)
def test_non_canonical_paths_are_refused(path: str) -> None:
    with pytest.raises(TileFormatError):
        parse_tile_path(path)


@given(
    level=st.integers(ENTRIES, 63),
    index=st.integers(0, 10**15),
    width=st.integers(1, 256),
)
def test_any_tile_path_round_trips(level: int, index: int, width: int) -> None:
    tile = Tile(level, index, width)
    assert parse_tile_path(tile.path) == tile


@pytest.mark.parametrize(("level", "index", "width"), [(-2, 0, 1), (64, 0, 1), (0, -1, 1), (0, 0, 0), (0, 0, 257)])
def test_impossible_tiles_are_refused(level: int, index: int, width: int) -> None:
    with pytest.raises(TileFormatError):
        Tile(level, index, width)


# --------------------------------------------------------------------------- which tiles


def test_the_specs_tree_of_70000_and_of_256() -> None:
    tiles = new_tiles(0, 70_000)
    full0 = [t for t in tiles if t.level == 0 and t.is_full]
    assert len(full0) == 273 and full0[-1] == Tile(0, 272)
    assert [t for t in tiles if not (t.level == 0 and t.is_full)] == [
        Tile(0, 273, 112),
        Tile(1, 0),
        Tile(1, 1, 17),
        Tile(2, 0, 1),
    ]
    assert new_tiles(0, 256) == [Tile(0, 0), Tile(1, 0, 1)]
    assert new_tiles(0, 0) == [] and new_tiles(5, 5) == []
    assert new_bundles(0, 70_000)[-1] == Tile(ENTRIES, 273, 112) and len(new_bundles(0, 70_000)) == 274
    assert new_bundles(256, 256) == [] and new_bundles(255, 256) == [Tile(ENTRIES, 0)]


@given(st.lists(st.integers(0, 200_000), min_size=2, max_size=6))
def test_growing_step_by_step_publishes_every_full_tile_once(sizes: list[int]) -> None:
    sizes.sort()
    published = [t for a, b in zip(sizes, sizes[1:], strict=False) for t in new_tiles(a, b)]
    full = [t for t in published if t.is_full]
    assert len(full) == len(set(full))
    assert set(full) == {t for t in new_tiles(0, sizes[-1]) if t.is_full} - {
        t for t in new_tiles(0, sizes[0]) if t.is_full
    }
    # The last size's partial tiles are all there; and each tile covers only leaves below its size.
    final = sizes[-1]
    assert {t for t in new_tiles(0, final) if not t.is_full} <= set(published) | {
        t for t in new_tiles(0, sizes[0]) if not t.is_full
    }
    for t in new_tiles(0, final):
        assert t.end <= final and tile_for_size(t.level, t.index, final) == t


def test_tile_for_size_refuses_tiles_beyond_the_tree() -> None:
    assert tile_for_size(0, 1, 300) == Tile(0, 1, 44)
    assert tile_for_size(ENTRIES, 0, 300) == Tile(ENTRIES, 0)
    for level, index, size in [(0, 2, 512), (1, 0, 255), (0, 0, 0)]:
        with pytest.raises(InvalidProofError):
            tile_for_size(level, index, size)


# --------------------------------------------------------------------------- hash tiles


def test_tiles_equal_go_vectors() -> None:
    hashes = [leaf_hash(e) for e in VECTOR_ENTRIES]
    for (old, new), digests in GO_TILE_DIGESTS.items():
        tiles = hash_tiles(hashes[:new], old)
        assert {t.path: hashlib.sha256(d).hexdigest() for t, d in tiles.items()} == digests
    # What the levels mean: level 0 holds the leaf hashes, level 1 the roots of full level-0 tiles.
    tiles = hash_tiles(hashes)
    assert tiles[Tile(0, 2, 88)] == b"".join(hashes[512:600])
    assert tiles[Tile(1, 0, 2)] == root(hashes[:256]) + root(hashes[256:512])
    assert tile_hash(tiles[Tile(0, 1)]) == root(hashes[256:512])


def test_tile_hash_needs_a_power_of_two_of_hashes() -> None:
    h = _hashes(3)
    assert tile_hash(h[0]) == h[0]
    assert tile_hash(h[0] + h[1]) == root(h[:2])
    for bad in (b"", h[0] + h[1] + h[2], h[0][:31]):
        with pytest.raises(TileFormatError):
            tile_hash(bad)


@settings(max_examples=40, deadline=None)
@given(size=st.integers(0, 70_000), chunks=st.lists(st.integers(1, 5_000), max_size=8), seed=st.integers(0, 3))
def test_the_builder_streams_the_batch_tiles_and_resumes_from_partial_tiles(
    size: int, chunks: list[int], seed: int
) -> None:
    hashes = _hashes(size, seed)
    builder = TileBuilder()
    published: dict[Tile, bytes] = {}
    done, at = 0, 0
    for n in [*chunks, size]:
        step = hashes[at : at + n]
        for t, d in builder.extend(step):
            assert t.is_full and t not in published
            published[t] = d
        at += len(step)
        if at >= size:
            break
        # Resume a fresh builder from the partial tiles at this size: it must go on identically.
        partial = dict(builder.partial_tiles())
        assert set(partial) == {t for t in new_tiles(0, at) if not t.is_full}
        builder = TileBuilder.from_partial_tiles(at, partial)
        assert builder.root() == root(hashes[:at])
        done += 1
    partial = dict(builder.partial_tiles())
    assert builder.size == size and builder.root() == root(hashes)
    assert {**published, **partial} == hash_tiles(hashes)


def test_resuming_from_the_wrong_partial_tiles_is_refused() -> None:
    b = TileBuilder()
    b.extend(_hashes(600))
    partial = dict(b.partial_tiles())
    with pytest.raises(TileFormatError, match="missing"):
        TileBuilder.from_partial_tiles(600, {t: d for t, d in partial.items() if t.level == 0})
    with pytest.raises(TileFormatError, match="not the partial tiles"):
        TileBuilder.from_partial_tiles(601, partial)
    short = {t: (d[:-1] if t.level == 1 else d) for t, d in partial.items()}
    with pytest.raises(TileFormatError, match="bytes"):
        TileBuilder.from_partial_tiles(600, short)
    # Shapes only: a changed hash is caught by comparing root() with the signed checkpoint.
    changed = {t: (bytes(32) + d[32:] if t.level == 1 else d) for t, d in partial.items()}
    assert TileBuilder.from_partial_tiles(600, changed).root() != b.root()


# --------------------------------------------------------------------------- entry bundles


def test_bundle_vector() -> None:
    assert encode_bundle([b"", b"a", b"bc"]) == b"\x00\x00" + b"\x00\x01a" + b"\x00\x02bc"
    assert decode_bundle(b"\x00\x00\x00\x01a\x00\x02bc", 3) == [b"", b"a", b"bc"]
    big = b"x" * MAX_ENTRY_BYTES
    assert encode_bundle([big])[:2] == b"\xff\xff" and decode_bundle(encode_bundle([big])) == [big]


def test_entries_over_65535_bytes_are_refused() -> None:
    with pytest.raises(EntryTooLargeError, match="65,536 bytes"):
        encode_bundle([b"ok", b"x" * (MAX_ENTRY_BYTES + 1)])
    builder = BundleBuilder()
    builder.append(b"ok")
    with pytest.raises(EntryTooLargeError, match="entry 1 "):
        builder.append(b"x" * (MAX_ENTRY_BYTES + 1))
    assert builder.size == 1


@pytest.mark.parametrize(
    ("data", "width"),
    [
        (b"", None),  # empty
        (b"\x00", None),  # half a length
        (b"\x00\x02a", None),  # claims more than is there
        (b"\x00\x01a\x00", None),  # trailing byte
        (b"\x00\x01a", 2),  # too few
        (b"\x00\x01a\x00\x00", 1),  # too many
        (b"\x00\x00" * 257, None),  # more than a tile
    ],
)
def test_malformed_bundles_are_refused(data: bytes, width: int | None) -> None:
    with pytest.raises(TileFormatError):
        decode_bundle(data, width)
    with pytest.raises(TileFormatError):
        bundle_slice(data, 0, 1, width)  # a slice checks the whole bundle as decoding it does


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=256), st.integers(0, 256), st.integers(0, 256))
def test_a_slice_of_a_bundle_is_the_slice_of_its_entries(entries: list[bytes], first: int, end: int) -> None:
    assert bundle_slice(encode_bundle(entries), first, end, len(entries)) == entries[first:end]


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=256))
def test_bundles_round_trip_and_every_truncation_fails(entries: list[bytes]) -> None:
    data = encode_bundle(entries)
    assert decode_bundle(data, len(entries)) == entries
    for cut in range(len(data)):
        with pytest.raises(TileFormatError):
            decode_bundle(data[:cut], len(entries))


@settings(max_examples=30, deadline=None)
@given(size=st.integers(0, 1_200), cut=st.integers(0, 1_200))
def test_the_bundle_builder_streams_and_resumes(size: int, cut: int) -> None:
    cut = min(cut, size)
    entries = [b"e%d" % i for i in range(size)]
    first = BundleBuilder()
    out = dict(first.extend(entries[:cut]))
    partial = first.partial_bundle()
    assert (partial is None) == (cut % 256 == 0)
    resumed = BundleBuilder.from_partial(cut, partial[1] if partial else None)
    out.update(resumed.extend(entries[cut:]))
    last = resumed.partial_bundle()
    if last:
        out[last[0]] = last[1]
    assert sorted(out) == new_bundles(0, size)
    for t, data in out.items():
        assert decode_bundle(data, t.width) == entries[t.index * 256 : t.index * 256 + t.width]


# --------------------------------------------------------------------------- proofs from tiles


def _reader(published: dict[Tile, bytes], size: int, fetched: set[Tile], levels: bool = False) -> TileHashReader:
    """A reader of `published`; with `levels`, one whose nodes come from `tile_levels` (as TileStore's)."""
    allowed = set(new_tiles(0, size))

    def fetch(tile: Tile) -> bytes:
        # A reader of a tree of `size` may only ask for tiles that size publishes (the spec:
        # never an arbitrary partial tile).
        assert tile in allowed, f"{tile.path} is not a tile of size {size}"
        fetched.add(tile)
        return published[tile]

    return TileHashReader(size, fetch, (lambda tile: tile_levels(fetch(tile))) if levels else None)


def test_proofs_from_tiles_equal_merkle_proofs_for_every_size_up_to_3000() -> None:
    """Every size: the root, one inclusion and one consistency proof (random), the last leaf's and
    the previous size's; every index and old size at small sizes and at tile edges."""
    n = 3_000
    hashes = _hashes(n)
    tree = MerkleTree(hashes)
    rng = random.Random(3)
    exhaustive = {*range(1, 41), 255, 256, 257, 511, 512, 513, 767, 768, 769}
    builder = TileBuilder()
    full: dict[Tile, bytes] = {}
    for size in range(1, n + 1):
        full.update(builder.append(hashes[size - 1]))
        published = {**full, **dict(builder.partial_tiles())}
        assert _reader(published, size, set()).root() == tree.root(size), size
        everything = size in exhaustive
        indexes = range(size) if everything else {size - 1, rng.randrange(size)}
        for i in indexes:
            fetched: set[Tile] = set()
            reader = _reader(published, size, fetched)
            assert reader.leaf_hash(i) == hashes[i]
            fetched.clear()
            proof = _reader(published, size, fetched).inclusion_proof(i)
            assert proof == tree.inclusion_proof(i, size), (i, size)
            assert fetched == set(inclusion_tiles(i, size))
            fetched.clear()
            assert _reader(published, size, fetched, levels=True).inclusion_proof(i) == proof
            assert fetched == set(inclusion_tiles(i, size))
        for m in range(size + 1) if everything else {size - 1, rng.randrange(size + 1)}:
            fetched = set()
            proof = _reader(published, size, fetched).consistency_proof(m)
            assert proof == tree.consistency_proof(m, size), (m, size)
            assert fetched == set(consistency_tiles(m, size))
            assert _reader(published, size, set(), levels=True).consistency_proof(m) == proof


@settings(max_examples=25, deadline=None)
@given(size=st.integers(65_530, 70_000), data=st.data())
def test_proofs_across_three_tile_levels(size: int, data: st.DataObject) -> None:
    hashes = _hashes(size, 11)
    tree = MerkleTree(hashes)
    published = hash_tiles(hashes)
    reader = _reader(published, size, set())
    assert reader.root() == tree.root()
    i = data.draw(st.integers(0, size - 1))
    m = data.draw(st.integers(0, size))
    assert reader.inclusion_proof(i) == tree.inclusion_proof(i)
    assert reader.consistency_proof(m) == tree.consistency_proof(m)
    with_levels = _reader(published, size, set(), levels=True)
    assert with_levels.root() == tree.root()
    assert with_levels.inclusion_proof(i) == tree.inclusion_proof(i)
    assert with_levels.consistency_proof(m) == tree.consistency_proof(m)
    # A proof reads at most a few tiles a level, never the whole log.
    assert len(inclusion_tiles(i, size)) <= 6 and len(consistency_tiles(m, size)) <= 8


def test_the_reader_refuses_short_tiles_and_nodes_outside_the_tree() -> None:
    hashes = _hashes(300)
    published = hash_tiles(hashes)
    reader = TileHashReader(300, lambda t: published[t][:-1])
    with pytest.raises(TileFormatError, match="bytes, want"):
        reader.leaf_hash(0)
    reader = TileHashReader(300, lambda t: published[t])
    for height, index in [(0, 300), (9, 0), (8, 1), (-1, 0)]:
        with pytest.raises(InvalidProofError):
            reader.node(height, index)
    with pytest.raises(InvalidProofError):
        reader.inclusion_proof(300)
    with pytest.raises(InvalidProofError):
        reader.consistency_proof(301)
    assert TileHashReader(0, lambda t: b"").root() == root([])
    assert issubclass(TileFormatError, VerificationError)
