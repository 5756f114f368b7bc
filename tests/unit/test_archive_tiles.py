"""Tiles in the archive (pipelines/io/archive/tiles.py): published with every block, caught up, read back.

Logs are built by the ingest job's own sequencer (tests/synthetic.py) into `InMemoryArchive`; the
tiles it holds must be exactly what the pure core says a tree of that size publishes, and give
every signed checkpoint's root.
"""

from __future__ import annotations

import datetime as dt
import json
from hashlib import md5

import pytest

from pipelines.archive_history import check_archive_log
from pipelines.io.archive import ArchiveConflictError, block_key, checkpoint_key, log_prefix, parse_key
from pipelines.io.archive.testing import InMemoryArchive
from pipelines.io.archive.tiles import TilePublisher, TilesMissingError, TileStore, published_size
from pipelines.io.keystore import InMemoryKeyStore
from tests.synthetic import EVIDENCE, build_logs, sealed_blocks
from transforms.blocks import encode_block_object
from transforms.checkpoint import open_checkpoint
from transforms.errors import VerificationError
from transforms.merkle import leaf_hash, verify_inclusion
from transforms.tiles import TILE_WIDTH, decode_bundle, encode_bundle, hash_tiles, new_bundles, parse_tile_path
from transforms.verify import ArchivedObject, ArchiveLogCheck, ListedTile, TileCheck

ORIGIN = "auditlog.test"


def log_entries(archive: InMemoryArchive, log_id: str) -> list[bytes]:
    out: list[bytes] = []
    for index in archive.list_blocks(log_id):
        out += archive.read_block(log_id, index)[1]
    return out


def tile_objects(archive: InMemoryArchive, log_id: str) -> dict[str, bytes]:
    prefix = log_prefix(log_id)
    return {key[len(prefix) :]: archive.get(key) for key in archive.keys(prefix + "tile/")}


def expected_objects(entries: list[bytes], sizes: list[int]) -> dict[str, bytes]:
    """Every tile and bundle a log that grew through `sizes` publishes, from the pure core."""
    hashes = [leaf_hash(e) for e in entries]
    out: dict[str, bytes] = {}
    old = 0
    for size in sizes:
        for tile, data in hash_tiles(hashes[:size], old).items():
            out[tile.path] = data
        for bundle in new_bundles(old, size):
            out[bundle.path] = encode_bundle(entries[bundle.start : bundle.end])
        old = size
    return out


def without_tiles(archive: InMemoryArchive, log_id: str) -> InMemoryArchive:
    """The log as an archive written before tiles holds it: no tiles, each block's entries in its object (v1)."""
    bare = InMemoryArchive()
    for key in archive.keys(log_prefix(log_id)):
        if "/tile/" in key:
            continue
        data = archive.get(key)
        parsed = parse_key(key)
        if parsed is not None and parsed[1] == "block":
            data = encode_block_object(*archive.read_block(log_id, parsed[2]))
        bare.put_immutable(key, data, archive.retention(key).retain_until)
    return bare


@pytest.fixture(scope="module")
def built() -> tuple[InMemoryArchive, object]:
    archive = InMemoryArchive()
    logs = build_logs(archive, None, events=1500, logs=2, block_size=97)
    return archive, logs


def test_every_block_publishes_the_tiles_and_bundles_of_its_size(built) -> None:
    archive, logs = built
    for log_id in logs.log_ids:
        entries = log_entries(archive, log_id)
        sizes = archive.list_checkpoints(log_id)
        assert sizes[-1] == len(entries) == 750
        assert tile_objects(archive, log_id) == expected_objects(entries, sizes)


def test_tiles_give_every_checkpoints_root_and_prove_every_entry(built) -> None:
    archive, logs = built
    store = TileStore(archive)
    for log_id in logs.log_ids:
        entries = log_entries(archive, log_id)
        for size in archive.list_checkpoints(log_id):
            checkpoint = open_checkpoint(
                archive.get_checkpoint(log_id, size), logs.signer.verifier(), origin=f"{ORIGIN}/{log_id}"
            )
            reader = store.reader(log_id, size)
            assert reader.root() == checkpoint.root
        size = len(entries)
        reader = store.reader(log_id, size)
        assert store.entries(log_id, 0, size, size) == entries
        for i in (0, 1, 255, 256, 300, size - 1):
            verify_inclusion(leaf_hash(entries[i]), i, size, reader.inclusion_proof(i), reader.root())


def test_bundles_are_locked_as_long_as_their_blocks_and_tiles_as_long_as_checkpoints(built) -> None:
    archive, logs = built
    log_id = logs.log_ids[0]
    prefix = log_prefix(log_id)
    block_locks = {}
    for index in archive.list_blocks(log_id):
        header = archive.read_block(log_id, index)[0]
        block_locks[header] = archive.retention(block_key(log_id, index)).retain_until
    checkpoint_lock = archive.retention(checkpoint_key(log_id, archive.list_checkpoints(log_id)[0])).retain_until
    for key in archive.keys(prefix + "tile/"):
        tile = parse_tile_path(key[len(prefix) :])
        lock = archive.retention(key).retain_until
        if tile.is_bundle:
            spanned = [
                lk for h, lk in block_locks.items() if h.first_leaf_index < tile.end and h.tree_size > tile.start
            ]
            assert lock == max(spanned), key
        else:
            assert abs(lock - checkpoint_lock) < dt.timedelta(minutes=1), key


def test_a_restarted_writer_loads_the_partial_tiles_and_goes_on() -> None:
    whole = InMemoryArchive()
    logs = build_logs(whole, None, events=900, logs=1, block_size=70)
    restarted = InMemoryArchive()
    blocks = list(sealed_blocks(900, 1, 70, logs.signer, InMemoryKeyStore(key_seed=b"auditlog-synthetic")))
    for n, (_, block) in enumerate(blocks):
        if n in (3, 7, 12):
            restarted.__dict__.pop("_tile_publisher")  # a restarted writer: no builders in memory
        restarted.put_sealed_block(block, EVIDENCE)
    log_id = logs.log_ids[0]
    assert tile_objects(restarted, log_id) == tile_objects(whole, log_id)
    assert len(tile_objects(whole, log_id)) > 10


def test_an_archive_written_before_tiles_is_caught_up_from_its_blocks() -> None:
    archive = InMemoryArchive()
    logs = build_logs(archive, None, events=800, logs=1, block_size=64)
    log_id = logs.log_ids[0]
    full = tile_objects(archive, log_id)
    bare = without_tiles(archive, log_id)
    assert published_size(bare, log_id) == 0
    lock = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    seen: list[str] = []
    assert TilePublisher(bare).catch_up(log_id, 800, lock, seen.append) == 13
    assert tile_objects(bare, log_id) == full
    assert published_size(bare, log_id) == 800
    assert TilePublisher(bare).catch_up(log_id, 800, lock) == 0  # nothing left to do


def test_half_published_archive_is_caught_up_from_where_its_tiles_end() -> None:
    archive = InMemoryArchive()
    logs = build_logs(archive, None, events=1000, logs=1, block_size=100)
    log_id = logs.log_ids[0]
    bare = without_tiles(archive, log_id)
    publisher = TilePublisher(bare)
    lock = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    assert publisher.catch_up(log_id, 400, lock) == 4
    assert published_size(bare, log_id) == 400
    assert TilePublisher(bare).catch_up(log_id, 1000, lock) == 6
    assert tile_objects(bare, log_id) == tile_objects(archive, log_id)


def test_a_tile_that_disagrees_with_the_blocks_stops_the_publisher() -> None:
    archive = InMemoryArchive()
    logs = build_logs(archive, None, events=300, logs=1, block_size=100)
    log_id = logs.log_ids[0]
    # someone wrote a wrong partial tile for size 300 before the writer got there
    bare = without_tiles(archive, log_id)
    key = f"{log_prefix(log_id)}tile/0/001.p/44"
    bare.put_immutable(key, bytes(44 * 32))
    with pytest.raises(ArchiveConflictError):
        TilePublisher(bare).catch_up(log_id, 300, dt.datetime.now(dt.UTC) + dt.timedelta(days=1))


def test_a_reader_of_missing_tiles_is_told_to_migrate() -> None:
    store = TileStore(InMemoryArchive())
    with pytest.raises(TilesMissingError, match="auditlog tiles migrate"):
        store.reader("audit.events.p0", 10).root()


def test_the_tile_cache_holds_at_most_its_bound(built) -> None:
    archive, logs = built
    store = TileStore(archive, cache_bytes=20_000)
    log_id = logs.log_ids[0]
    for size in archive.list_checkpoints(log_id):
        store.reader(log_id, size).root()
        assert store.cached_bytes <= 20_000
    assert store.entries(log_id, 0, 750, 750) == log_entries(archive, log_id)
    assert store.cached_bytes <= 20_000


def test_bundles_hold_canonical_json(built) -> None:
    archive, logs = built
    log_id = logs.log_ids[1]
    key = f"{log_prefix(log_id)}tile/entries/000"
    events = decode_bundle(archive.get(key), TILE_WIDTH)
    assert all(json.loads(e)["event_id"] for e in events)


# --------------------------------------------------------------------------- verify checks the tiles


def verify_log(archive: InMemoryArchive, logs: object, log_id: str) -> object:
    return check_archive_log(archive, log_id, logs.signer.verifier(), f"{ORIGIN}/{log_id}")


def fresh_log(events: int = 600) -> tuple[InMemoryArchive, object, str]:
    archive = InMemoryArchive()
    logs = build_logs(archive, None, events=events, logs=1, block_size=90)
    return archive, logs, logs.log_ids[0]


def test_verify_finds_every_tile_as_the_blocks_say() -> None:
    archive, logs, log_id = fresh_log()
    checked = verify_log(archive, logs, log_id)
    assert checked.findings == []
    assert checked.tiles_checked == len(tile_objects(archive, log_id)) > 10


def test_verify_of_a_log_without_tiles_finds_nothing_and_counts_none() -> None:
    archive, logs, log_id = fresh_log()
    bare = without_tiles(archive, log_id)
    checked = verify_log(bare, logs, log_id)
    assert checked.findings == [] and checked.tiles_checked == 0


@pytest.mark.parametrize(
    ("tamper", "kinds"),
    [
        ("overwrite", {"archive object overwritten"}),
        ("delete", {"deleted"}),
        ("replace", {"archive object overwritten", "modified"}),
        ("insert", {"inserted"}),
    ],
)
@pytest.mark.parametrize("path", ["tile/0/001", "tile/0/002.p/88", "tile/entries/000", "tile/entries/002.p/88"])
def test_verify_reports_a_tampered_tile_or_bundle(tamper: str, kinds: set[str], path: str) -> None:
    archive, logs, log_id = fresh_log()
    key = log_prefix(log_id) + path
    original = archive.get(key)
    if tamper == "overwrite":  # a second version; the locked original still verifies
        archive.overwrite_unconditionally(key, original[:-1] + bytes([original[-1] ^ 1]))
    elif tamper == "delete":
        archive.delete(key)
    elif tamper == "replace":  # the original version itself is gone, another stands in its place
        archive.objects[key] = []
        archive.put_immutable(key, original[:-1] + bytes([original[-1] ^ 1]))
        archive.overwrite_unconditionally(key, original)
    else:
        key = log_prefix(log_id) + "tile/0/001.p/3"
        archive.put_immutable(key, bytes(96))
    checked = verify_log(archive, logs, log_id)
    if tamper == "replace" and "/entries/" in path:  # the blocks' entries are read there: the chain breaks
        kinds = {"chain broken", "archive object overwritten"}
    assert {f.kind.value for f in checked.findings} == kinds, checked.findings
    assert all(key in f.detail for f in checked.findings if f.kind.value != "chain broken")


def test_a_replay_over_blocks_archived_before_tiles_is_no_conflict_and_publishes_their_tiles() -> None:
    whole = InMemoryArchive()
    logs = build_logs(whole, None, events=700, logs=1, block_size=100)
    log_id = logs.log_ids[0]
    old = without_tiles(whole, log_id)  # v1 blocks holding their entries, no tiles
    blocks = [b for _, b in sealed_blocks(700, 1, 100, logs.signer, InMemoryKeyStore(key_seed=b"auditlog-synthetic"))]

    for block in blocks[3:]:  # the job replays from block 3 (a restore older than the archive)
        old.put_sealed_block(block, EVIDENCE)

    assert tile_objects(old, log_id) == tile_objects(whole, log_id)
    assert all(len(old.object_versions(k)) == 1 for k in old.keys(log_prefix(log_id)))  # nothing rewritten
    tampered = sealed_blocks(700, 1, 100, logs.signer, InMemoryKeyStore(key_seed=b"another key: other bytes"))
    with pytest.raises((ArchiveConflictError, VerificationError)):  # other bytes for block 5: an alarm
        old.put_sealed_block(next(b for i, (_, b) in enumerate(tampered) if i == 5), EVIDENCE)


def test_a_bundle_altered_where_no_block_reads_its_entries_is_modified() -> None:
    """Block 2 reads entries 180..255 from the full bundle 000; entry 0 there was read by block 0 from 000.p/90.

    Verify compares the bundles it read byte for byte (not through their ETags): an altered entry
    that no block's chain covers in that bundle is still named.
    """
    archive, logs, log_id = fresh_log()
    key = log_prefix(log_id) + "tile/entries/000"
    original = archive.get(key)
    altered = original[:2] + bytes([original[2] ^ 1]) + original[3:]  # entry 0's first byte
    archive.objects[key] = []
    archive.put_immutable(key, altered)
    checked = verify_log(archive, logs, log_id)
    assert [(f.kind.value, key in f.detail) for f in checked.findings] == [("modified", True)], checked.findings


def test_the_tile_check_compares_the_bundles_it_was_handed_byte_for_byte() -> None:
    """A bundle read for a block's entries is held to the rebuilt bytes as it is, not through an ETag."""
    archive, logs, log_id = fresh_log()
    check = ArchiveLogCheck(log_id, logs.signer.verifier(), f"{ORIGIN}/{log_id}")
    tiles = TileCheck(log_id)
    for index in range(len(archive.list_blocks(log_id))):
        key = block_key(log_id, index)
        header, entries = archive.read_block(log_id, index)
        read = {}
        if index == 2:  # block 2 read the full bundle 000; hand the check other bytes for it
            bundle = bytearray(archive.get(log_prefix(log_id) + "tile/entries/000"))
            bundle[2] ^= 1
            read["tile/entries/000"] = bytes(bundle)
        verified = check.add_block(index, ArchivedObject(key, archive.get(key), entries=tuple(entries)))
        assert verified is not None
        tiles.add_block(*verified, read=read)
    prefix = log_prefix(log_id)
    listed = [
        ListedTile(prefix + path, (f'"{md5(data).hexdigest()}"',))
        for path, data in sorted(tile_objects(archive, log_id).items())
    ]
    findings, found = tiles.findings(listed, prefix)
    assert [(f.kind.value, f.detail.split()[0]) for f in findings] == [
        ("modified", log_prefix(log_id) + "tile/entries/000")
    ]
    assert found == len(listed) - 1
