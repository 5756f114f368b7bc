"""Inclusion proofs (pipelines/prover.py): bundles that verify, what is not provable yet, what is refused.

The Prover takes the newest signed checkpoint from the archive and the hashes from the log's tiles
there, and hands out a tlog-proof@v1 bundle only once the tiles give the signed root (and the head
extends the one seen before). Here the archive is `InMemoryArchive`, so tiles can be made to lie,
and ClickHouse a list with the one lookup the Prover makes. Which witnessed checkpoint a bundle
carries is tests/unit/test_prover_cosigned.py.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.io.archive import tile_key
from pipelines.io.archive.testing import InMemoryArchive
from pipelines.prover import EventNotFound, Prover
from pipelines.witnessing import cosigned_key
from transforms.checkpoint import Checkpoint, sign_checkpoint
from transforms.cosignature import CosignatureSigner, add_cosignatures, check_cosigned
from transforms.errors import NoteFormatError, SignatureError, VerificationError
from transforms.merkle import leaf_hash, root, verify_consistency
from transforms.note import Signer
from transforms.tiles import Tile, encode_bundle, hash_tiles, new_bundles
from transforms.tlogproof import parse_proof, verify_proof

PREFIX = "auditlog.test"
LOG = "audit.events.p0"
ORIGIN = f"{PREFIX}/{LOG}"
TENANT = "t_1000"
SIGNER = Signer.generate(PREFIX)
WITNESS = CosignatureSigner.generate("witness.test/w1")


def entry(i: int) -> bytes:
    return json.dumps({"event_id": f"evt_{i}", "tenant_id": TENANT}, separators=(",", ":")).encode()


class Index:
    """The ClickHouse lookups a Prover makes, over a list a test can change."""

    def __init__(self, entries: list[bytes]) -> None:
        self.entries = list(entries)
        self.leaves = [leaf_hash(e) for e in entries]
        self.retained = True  # what the index says of an event whose retention stamp has passed

    def event_place(self, tenant_id: str, event_id: str) -> tuple[str, int] | None:
        found = self.find_event(tenant_id, event_id)
        return (found["log_id"], found["leaf_index"]) if found else None

    def is_retained(self, tenant_id: str, event_id: str) -> bool:
        return self.retained

    def find_event(self, tenant_id: str, event_id: str) -> dict | None:
        for i, canonical in enumerate(self.entries):
            doc = json.loads(canonical)
            if (doc["tenant_id"], doc["event_id"]) == (tenant_id, event_id):
                return {"log_id": LOG, "leaf_index": i, "canonical": canonical}
        return None


def checkpoint_note(leaves: list[bytes], size: int, signer: Signer = SIGNER, origin: str = ORIGIN) -> str:
    return sign_checkpoint(Checkpoint(origin, size, root(leaves[:size])), signer)


def publish(archive: InMemoryArchive, entries: list[bytes], size: int, old: int = 0) -> None:
    """The tiles and bundles a log of `entries` publishes growing from `old` to `size`, as the writer puts them."""
    for tile, data in hash_tiles([leaf_hash(e) for e in entries[:size]], old).items():
        archive.put_immutable(tile_key(LOG, tile), data)
    for bundle in new_bundles(old, size):
        archive.put_immutable(tile_key(LOG, bundle), encode_bundle(entries[bundle.start : bundle.end]))


def grow(archive: InMemoryArchive, index: Index, size: int, old: int = 0) -> None:
    publish(archive, index.entries, size, old)
    archive.put_checkpoint(LOG, size, checkpoint_note(index.leaves, size))


def deployment(n: int, checkpoints: tuple[int, ...]) -> tuple[InMemoryArchive, Index, Prover]:
    """`n` events indexed, the tiles and checkpoints of the given sizes archived, and a Prover over both."""
    index = Index([entry(i) for i in range(n)])
    archive = InMemoryArchive()
    old = 0
    for size in checkpoints:
        grow(archive, index, size, old)
        old = size
    return archive, index, Prover(archive, index, SIGNER.verifier(), PREFIX)


# --------------------------------------------------------------------------- bundles


def test_every_event_under_the_newest_checkpoint_gets_a_bundle_that_verifies() -> None:
    _, index, prover = deployment(10, (4, 10))

    for i in range(10):
        proof = prover.proof(TENANT, f"evt_{i}")

        bundle, checkpoint = verify_proof(proof.text, SIGNER.verifier(), entry=entry(i), origin=ORIGIN)
        assert (proof.tenant_id, proof.event_id, proof.log_id, proof.leaf_index) == (TENANT, f"evt_{i}", LOG, i)
        assert proof.canonical == entry(i) and bundle.index == i
        assert checkpoint == proof.checkpoint and checkpoint.size == 10  # the newest checkpoint
        with pytest.raises(VerificationError):  # and it proves that entry, not another
            verify_proof(proof.text, SIGNER.verifier(), entry=entry((i + 1) % 10))
    assert prover.tiles.reads == 2  # the tree's one hash tile and one bundle, read once, not once per proof


def test_an_event_past_the_newest_checkpoint_is_not_provable_until_the_next_one() -> None:
    archive, index, prover = deployment(12, (10,))
    prover.proof(TENANT, "evt_3")

    with pytest.raises(EventNotFound) as caught:
        prover.proof(TENANT, "evt_11")
    assert str(caught.value) == f"no signed checkpoint of log {LOG} covers leaf 11 yet; retry after the next block"

    grow(archive, index, 12, 10)
    proof = prover.proof(TENANT, "evt_11")
    assert proof.checkpoint.size == 12
    verify_proof(proof.text, SIGNER.verifier(), entry=entry(11))
    assert prover.proof(TENANT, "evt_10").checkpoint.size == 12
    assert prover.tiles.reads == 4  # the tile and bundle of 10, then of 12


def test_a_log_without_any_checkpoint_has_nothing_to_prove_against() -> None:
    _, _, prover = deployment(3, ())

    with pytest.raises(EventNotFound) as caught:
        prover.proof(TENANT, "evt_0")
    assert str(caught.value) == f"no signed checkpoint of log {LOG} covers leaf 0 yet; retry after the next block"


@pytest.mark.parametrize(("tenant", "event_id"), [(TENANT, "evt_99"), ("t_1001", "evt_1")])
def test_an_event_the_index_does_not_hold_for_that_tenant_is_not_found(tenant: str, event_id: str) -> None:
    _, _, prover = deployment(4, (4,))

    with pytest.raises(EventNotFound) as caught:
        prover.proof(tenant, event_id)
    assert str(caught.value) == f"no event {event_id!r} for tenant {tenant!r} in ClickHouse"


def test_consistency_between_any_two_sizes_comes_from_the_tiles_of_a_verified_head() -> None:
    archive, index, prover = deployment(600, (300, 600))

    for old, new in ((0, 7), (4, 7), (7, 300), (255, 257), (256, 599), (300, 600)):
        found = prover.consistency(LOG, old, new)
        assert found.note == archive.get_checkpoint(LOG, 600)
        assert found.old_root == root(index.leaves[:old]) and found.new_root == root(index.leaves[:new])
        verify_consistency(old, new, found.proof, found.old_root, found.new_root)
    with pytest.raises(EventNotFound):
        prover.consistency(LOG, 4, 601)


class CountingArchive(InMemoryArchive):
    """Counts the reads of each key."""

    def __init__(self) -> None:
        super().__init__()
        self.read: dict[str, int] = {}

    def get(self, key: str, version_id: str | None = None) -> bytes:
        self.read[key] = self.read.get(key, 0) + 1
        return super().get(key, version_id)


def counting_deployment(n: int) -> tuple[CountingArchive, Index, Prover]:
    index = Index([entry(i) for i in range(n)])
    archive = CountingArchive()
    grow(archive, index, n)
    return archive, index, Prover(archive, index, SIGNER.verifier(), PREFIX)


def test_a_proof_hashes_its_level_0_tile_from_the_bundle_it_read_instead_of_reading_the_tile() -> None:
    archive, index, prover = counting_deployment(600)  # tiles 0 and 1 full, 2 partial: the head reads only 2

    proof = prover.proof(TENANT, "evt_5")

    verify_proof(proof.text, SIGNER.verifier(), entry=index.entries[5])
    assert archive.read.get(tile_key(LOG, Tile(-1, 0))) == 1
    assert tile_key(LOG, Tile(0, 0)) not in archive.read
    assert archive.read.get(tile_key(LOG, Tile(0, 2, 88))) == 1  # the head's check reads the edge
    # Another event of the same bundle: nothing more is read, from the bundle or the tile.
    before = dict(archive.read)
    verify_proof(prover.proof(TENANT, "evt_200").text, SIGNER.verifier(), entry=index.entries[200])
    assert archive.read == before


def test_an_edited_neighbour_in_the_bundle_does_not_cost_a_logged_event_its_proof() -> None:
    archive, index, prover = counting_deployment(600)
    logged = index.entries[7]
    edited = logged.replace(b'"tenant_id"', b'"note":"edited","tenant_id"')
    bundle = tile_key(LOG, Tile(-1, 0))
    archive.overwrite_unconditionally(bundle, encode_bundle([*index.entries[:7], edited, *index.entries[8:256]]))

    # evt_6's path holds leaf 7's hash: hashed from the edited bundle it does not verify, so the
    # stored level-0 tile is read and decides.
    proof = prover.proof(TENANT, "evt_6")

    verify_proof(proof.text, SIGNER.verifier(), entry=index.entries[6])
    assert archive.read.get(tile_key(LOG, Tile(0, 0))) == 1
    with pytest.raises(VerificationError):  # and the edited one itself is still refused
        prover.proof(TENANT, "evt_7")


# --------------------------------------------------------------------------- what is refused


def test_tiles_that_do_not_give_the_signed_root_are_refused() -> None:
    archive, index, prover = deployment(10, (10,))
    key = tile_key(LOG, Tile(0, 0, 10))
    forged = bytearray(archive.get(key))
    forged[6 * 32] ^= 1
    archive.overwrite_unconditionally(key, bytes(forged))

    with pytest.raises(VerificationError) as caught:
        prover.proof(TENANT, "evt_2")
    assert str(caught.value) == f"the tiles of log {LOG} do not give the signed root at size 10; run `auditlog verify`"


def test_a_newer_checkpoint_that_does_not_extend_the_verified_head_is_refused() -> None:
    archive, index, prover = deployment(10, (4,))
    prover.proof(TENANT, "evt_1")  # the head of 4 leaves is verified and kept
    rewritten = Index(list(index.entries))
    rewritten.entries[1] = b'{"event_id":"evt_1","tenant_id":"rewritten"}'
    rewritten.leaves[1] = leaf_hash(rewritten.entries[1])
    publish(archive, rewritten.entries, 10, 4)  # tiles of 10 over the rewritten leaves, signed
    archive.put_checkpoint(LOG, 10, checkpoint_note(rewritten.leaves, 10))

    with pytest.raises(VerificationError) as caught:
        prover.proof(TENANT, "evt_7")
    assert str(caught.value).startswith(f"log {LOG}: the checkpoint at 10 does not extend the one at 4 seen before")


def test_a_log_without_tiles_is_told_to_migrate() -> None:
    index = Index([entry(i) for i in range(5)])
    archive = InMemoryArchive()
    archive.put_checkpoint(LOG, 5, checkpoint_note(index.leaves, 5))
    prover = Prover(archive, index, SIGNER.verifier(), PREFIX)

    with pytest.raises(LookupError, match="auditlog tiles migrate"):
        prover.proof(TENANT, "evt_0")


def test_a_bundled_event_that_is_not_the_logged_entry_gets_no_proof() -> None:
    archive, index, prover = deployment(8, (8,))
    logged = index.entries[5]
    edited = logged.replace(b'"tenant_id"', b'"note":"edited","tenant_id"')
    bundle = tile_key(LOG, Tile(-1, 0, 8))
    archive.overwrite_unconditionally(bundle, encode_bundle([*index.entries[:5], edited, *index.entries[6:]]))

    with pytest.raises(VerificationError):  # the hash tiles still hold the logged entry's leaf
        prover.proof(TENANT, "evt_5")

    # unchecked (what the query API hands the browser): the bundle is for the logged entry
    unchecked = prover.proof_at(TENANT, "evt_5", LOG, 5, edited, check=False)
    verify_proof(unchecked.text, SIGNER.verifier(), entry=logged)
    with pytest.raises(VerificationError):
        verify_proof(unchecked.text, SIGNER.verifier(), entry=edited)


def test_an_event_past_its_retention_is_not_found_unless_the_index_still_keeps_it() -> None:
    past = b'{"event_id":"evt_0","retention":{"class":"short","until":"2020-01-01T00:00:00.000Z"},"tenant_id":"t_1000"}'
    index = Index([past, entry(1)])
    archive = InMemoryArchive()
    grow(archive, index, 2)
    prover = Prover(archive, index, SIGNER.verifier(), PREFIX)

    assert prover.proof(TENANT, "evt_0").canonical == past  # held (or not expired in the index yet)
    index.retained = False
    with pytest.raises(EventNotFound, match="past its retention"):
        prover.proof(TENANT, "evt_0")
    assert prover.proof(TENANT, "evt_1").leaf_index == 1


def test_a_checkpoint_signed_by_another_key_is_refused() -> None:
    _, index, prover = deployment(6, ())
    publish(prover.archive, index.entries, 6)
    prover.archive.put_checkpoint(LOG, 6, checkpoint_note(index.leaves, 6, signer=Signer.generate(PREFIX)))

    with pytest.raises(SignatureError, match="no signature from a known key"):
        prover.proof(TENANT, "evt_0")


def test_a_checkpoint_of_another_log_is_refused() -> None:
    _, index, prover = deployment(6, ())
    publish(prover.archive, index.entries, 6)
    prover.archive.put_checkpoint(LOG, 6, checkpoint_note(index.leaves, 6, origin=f"{PREFIX}/audit.events.p1"))

    with pytest.raises(NoteFormatError) as caught:
        prover.proof(TENANT, "evt_0")
    assert str(caught.value) == f"checkpoint origin '{PREFIX}/audit.events.p1' is not the expected '{ORIGIN}'"


# --------------------------------------------------------------------------- witnessed checkpoints


def cosign(archive: InMemoryArchive, size: int, note: str) -> None:
    line = WITNESS.cosign(note.split("\n\n")[0] + "\n", 1_767_225_600)
    archive.put_immutable(cosigned_key(LOG, size, WITNESS.verifier()), add_cosignatures(note, [line]).encode())


def test_a_bundle_carries_the_witnessed_checkpoint_when_one_holds_the_event() -> None:
    archive, _, prover = deployment(10, (4, 10))
    cosign(archive, 4, archive.get_checkpoint(LOG, 4))

    early, late = prover.proof(TENANT, "evt_2"), prover.proof(TENANT, "evt_4")

    _, checkpoint = verify_proof(early.text, SIGNER.verifier(), entry=entry(2))
    assert checkpoint.size == early.checkpoint.size == 4  # cosigned, though older than 10
    note = parse_proof(early.text).signed_checkpoint
    report = check_cosigned(note, SIGNER.verifier(), [WITNESS.verifier()], min_witnesses=1)
    assert [(c.witness, c.timestamp) for c in report.cosigned] == [(WITNESS.name, 1_767_225_600)]
    assert late.checkpoint.size == 10  # leaf 4 is not in the tree of 4 leaves
    verify_proof(late.text, SIGNER.verifier(), entry=entry(4))


def test_a_witnessed_checkpoint_that_is_not_the_verified_trees_is_refused() -> None:
    # A split view: a checkpoint of size 4 signed with the log's key but over other leaves, which a
    # witness cosigned. The newest checkpoint (10) and the tiles agree; the bundle must not carry it.
    archive, index, prover = deployment(10, (10,))
    forked = checkpoint_note([leaf_hash(b"other")] * 4, 4)
    archive.put_checkpoint(LOG, 4, forked)
    cosign(archive, 4, forked)

    with pytest.raises(VerificationError) as caught:
        prover.proof(TENANT, "evt_2")
    assert str(caught.value) == f"log {LOG}: the tiles do not give the cosigned checkpoint's root at 4"


# --------------------------------------------------------------------------- a property


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_any_event_under_any_checkpoints_proves_against_the_newest_and_only_its_own_bytes(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 40), label="events")
    sizes = data.draw(st.sets(st.integers(1, n), min_size=1, max_size=4), label="checkpoint sizes")
    i = data.draw(st.integers(0, max(sizes) - 1), label="leaf")
    _, _, prover = deployment(n, tuple(sorted(sizes)))

    proof = prover.proof(TENANT, f"evt_{i}")

    _, checkpoint = verify_proof(proof.text, SIGNER.verifier(), entry=entry(i), origin=ORIGIN)
    assert checkpoint.size == max(sizes)
    flipped = bytearray(entry(i))
    position = data.draw(st.integers(0, len(flipped) - 1), label="byte")
    flipped[position] ^= data.draw(st.integers(1, 255), label="flip")
    with pytest.raises(VerificationError):
        verify_proof(proof.text, SIGNER.verifier(), entry=bytes(flipped))
