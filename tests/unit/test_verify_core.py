"""The verifier's pure core against an in-memory archive: every archive-side tamper kind, and the row comparison.

ClickHouse's side of the comparison (its SQL digests) runs against real chDB in
tests/integration/test_tamper.py; here the row-level classification gets table tests.
"""

from __future__ import annotations

import json

import pytest

from pipelines.archive_history import check_archive_log
from pipelines.io.archive import block_key, checkpoint_key, tile_key
from pipelines.io.archive.testing import InMemoryArchive
from pipelines.io.clickhouse.compare import IndexedRow, compare_rows, diff_fields
from tests.synthetic import ORIGIN, build_logs
from transforms.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from transforms.note import Signer
from transforms.tiles import ENTRIES, tile_for_size
from transforms.verify import ArchiveLog, Kind, Store

LOG = "audit.events.p0"
ORIGIN_OF_LOG = f"{ORIGIN}/{LOG}"


@pytest.fixture(scope="module")
def pristine() -> tuple[InMemoryArchive, Signer]:
    archive = InMemoryArchive()
    built = build_logs(archive, None, events=400, logs=2, block_size=40)
    return archive, built.signer


@pytest.fixture
def archive(pristine: tuple[InMemoryArchive, Signer]) -> InMemoryArchive:
    original, _ = pristine
    copy = InMemoryArchive()
    copy.objects = {k: list(v) for k, v in original.objects.items()}
    return copy


@pytest.fixture
def signer(pristine: tuple[InMemoryArchive, Signer]) -> Signer:
    return pristine[1]


def check(archive: InMemoryArchive, signer: Signer, witness: Checkpoint | None = None) -> ArchiveLog:
    return check_archive_log(archive, LOG, signer.verifier(), ORIGIN_OF_LOG, witness)


def kinds(log: ArchiveLog) -> set[tuple[Store, Kind]]:
    return {(f.store, f.kind) for f in log.findings}


def newest(archive: InMemoryArchive) -> tuple[int, int]:
    blocks = archive.list_blocks(LOG)
    return blocks[-1], archive.list_checkpoints(LOG)[-1]


def test_an_untouched_archive_verifies_clean(archive, signer):
    log = check(archive, signer)
    assert log.findings == []
    assert log.events == 200 and len(log.headers) == 5 and log.committed.size == 200


def test_a_second_version_at_a_block_key_is_named_and_the_original_still_verifies(archive, signer):
    archive.overwrite_unconditionally(block_key(LOG, 2), b"auditlog-block/v1\nforged\n")
    log = check(archive, signer)
    assert kinds(log) == {(Store.ARCHIVE, Kind.OVERWRITTEN)}
    assert log.findings[0].block_index == 2 and "newest differs" in log.findings[0].detail
    assert log.committed.size == 200


def test_tail_truncation_by_delete_markers_is_deleted_and_rolled_back(archive, signer):
    block, size = newest(archive)
    archive.delete(block_key(LOG, block))
    archive.delete(checkpoint_key(LOG, size))
    found = kinds(check(archive, signer))
    assert (Store.ARCHIVE, Kind.DELETED) in found
    assert (Store.ARCHIVE, Kind.ROLLED_BACK) in found


def test_objects_gone_for_good_are_caught_by_the_witness(archive, signer):
    witness = check(archive, signer).committed
    block, size = newest(archive)
    del archive.objects[block_key(LOG, block)]
    del archive.objects[checkpoint_key(LOG, size)]
    log = check(archive, signer, witness)
    assert kinds(log) == {(Store.ARCHIVE, Kind.ROLLED_BACK)}
    assert "previous verify saw a signed checkpoint at size 200" in log.findings[0].detail


def test_a_witness_with_another_root_is_a_fork(archive, signer):
    log = check(archive, signer, Checkpoint(ORIGIN_OF_LOG, 80, b"\x11" * 32))
    assert kinds(log) == {(Store.ARCHIVE, Kind.FORKED)}


def test_a_missing_middle_block_stops_the_chain(archive, signer):
    del archive.objects[block_key(LOG, 1)]
    log = check(archive, signer)
    assert (Store.ARCHIVE, Kind.DELETED) in kinds(log)
    assert log.size == 40  # only block 0 verifies; nothing after a gap is trusted


def test_a_checkpoint_replaced_with_another_keys_signature(archive, signer):
    _, size = newest(archive)
    other = Signer.generate(ORIGIN)
    root = open_checkpoint(archive.get_checkpoint(LOG, size), signer.verifier()).root
    archive.overwrite_unconditionally(
        checkpoint_key(LOG, size), sign_checkpoint(Checkpoint(ORIGIN_OF_LOG, size, root), other).encode()
    )
    found = kinds(check(archive, signer))
    assert found == {(Store.ARCHIVE, Kind.OVERWRITTEN), (Store.ARCHIVE, Kind.BAD_SIGNATURE)}


def test_a_validly_signed_checkpoint_for_another_tree_is_a_fork(archive, signer):
    forged = sign_checkpoint(Checkpoint(ORIGIN_OF_LOG, 60, b"\x22" * 32), signer)
    archive.put_checkpoint(LOG, 60, forged)
    log = check(archive, signer)
    assert kinds(log) == {(Store.ARCHIVE, Kind.FORKED)}
    assert "size 60" in log.findings[0].detail


def test_a_checkpoint_beyond_the_archived_blocks_means_blocks_are_gone(archive, signer):
    log = check(archive, signer)
    archive.put_checkpoint(LOG, 240, sign_checkpoint(Checkpoint(ORIGIN_OF_LOG, 240, log.tree.root()), signer))
    assert (Store.ARCHIVE, Kind.DELETED) in kinds(check(archive, signer))


def test_a_block_whose_entries_were_altered_breaks_the_chain(archive, signer):
    header, _ = archive.read_block(LOG, 3)
    key = tile_key(LOG, tile_for_size(ENTRIES, 0, header.tree_size))  # the bundle its entries are read from
    data = archive.objects[key][0].data
    assert data is not None
    at = data.rindex(b'"SUCCESS"')  # in the bundle's last entries: block 3's
    archive.objects[key][0].data = data[:at] + b'"FAILURE"' + data[at + 9 :]  # as if written so
    assert data != archive.objects[key][0].data
    log = check(archive, signer)
    assert (Store.ARCHIVE, Kind.CHAIN_BROKEN) in kinds(log)
    assert log.findings[0].block_index == 3


# --------------------------------------------------------------------------- row comparison


@pytest.fixture
def verified(archive: InMemoryArchive, signer: Signer) -> tuple[ArchiveLog, dict[int, bytes]]:
    log = check(archive, signer)
    _, entries = archive.read_block(LOG, 0)
    return log, dict(enumerate(entries))


def row_for(log: ArchiveLog, entries: dict[int, bytes], index: int, **changes: object) -> IndexedRow:
    header = log.headers[0]
    canonical = entries[index]
    doc = json.loads(canonical)
    base = IndexedRow(
        leaf_index=index,
        tenant_id=doc["tenant_id"],
        event_id=doc["event_id"],
        leaf_hash=log.tree.leaf(index),
        canonical_hash=log.tree.leaf(index),
        block_index=0,
        block_hash=header.hash(),
        bad_columns=(),
        canonical=canonical,
        occurred_at=doc["occurred_at"],
    )
    return IndexedRow(**{**base.__dict__, **changes})


def compare(log: ArchiveLog, entries: dict[int, bytes], rows: list[IndexedRow]) -> list[tuple[Kind, int]]:
    index_of = {log.tree.leaf(i): i for i in range(log.size)}
    return sorted((f.kind, f.leaf_index) for f in compare_rows(log, entries, rows, index_of))


def test_rows_that_match_the_archive_give_no_findings(verified):
    log, entries = verified
    assert compare(log, entries, [row_for(log, entries, i) for i in entries]) == []


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        ("column", [(Kind.MODIFIED, 5)]),
        ("canonical", [(Kind.MODIFIED, 5)]),
        ("delete", [(Kind.DELETED, 5)]),
        ("insert beyond", [(Kind.INSERTED, 10_000)]),
        ("duplicate", [(Kind.INSERTED, 5)]),
        ("forged beside", [(Kind.INSERTED, 5)]),
        ("swap", [(Kind.REORDERED, 5), (Kind.REORDERED, 6)]),
    ],
)
def test_each_row_tampering_is_named(verified, tamper, expected):
    log, entries = verified
    rows = {i: [row_for(log, entries, i)] for i in entries}
    other = json.loads(entries[5])
    other["action"] = "forged.action"
    forged = json.dumps(other, sort_keys=True, separators=(",", ":")).encode()
    if tamper == "column":
        rows[5] = [row_for(log, entries, 5, bad_columns=("action",))]
    elif tamper == "canonical":
        rows[5] = [row_for(log, entries, 5, canonical=forged, canonical_hash=b"\x01" * 32)]
    elif tamper == "delete":
        del rows[5]
    elif tamper == "insert beyond":
        rows[10_000] = [row_for(log, entries, 5, leaf_index=10_000)]
    elif tamper == "duplicate":
        rows[5].append(row_for(log, entries, 5))
    elif tamper == "forged beside":
        rows[5].append(row_for(log, entries, 5, canonical=forged, canonical_hash=b"\x01" * 32, event_id="evt_forged"))
    elif tamper == "swap":
        rows[5], rows[6] = [row_for(log, entries, 6, leaf_index=5)], [row_for(log, entries, 5, leaf_index=6)]
    found = compare(log, entries, [r for rs in rows.values() for r in rs])
    assert found == expected


def test_a_modified_row_names_the_fields_that_changed():
    a = b'{"action":"read","actor":{"id":"u1","type":"USER"},"result":"SUCCESS"}'
    b = b'{"action":"delete","actor":{"id":"u2","type":"USER"},"result":"SUCCESS"}'
    assert diff_fields(a, b) == ["action", "actor.id"]


def test_tenant_and_since_narrow_event_findings_but_never_structural_ones():
    from transforms.verify import Finding

    row = Finding(Store.CLICKHOUSE, Kind.MODIFIED, LOG, "x", 5, "evt_1", 0, "t_1000", "2026-05-01T00:00:00.000Z")
    chain = Finding(Store.ARCHIVE, Kind.CHAIN_BROKEN, LOG, "y", block_index=3)
    assert row.concerns("t_1000") and not row.concerns("t_1001")
    assert row.concerns(since="2026-04-30T00:00:00.000Z") and not row.concerns(since="2026-05-02T00:00:00.000Z")
    assert chain.concerns("t_1001", "2030-01-01T00:00:00.000Z")
