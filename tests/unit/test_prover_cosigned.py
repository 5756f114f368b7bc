"""Which witnessed checkpoint a proof bundle carries (pipelines/prover.py, `Prover._cosigned`).

A bundle should carry as many witnesses' cosignatures as any checkpoint holding the event has, so
that `verify-proof --min-witnesses N` passes whenever the archive could make it pass; among equally
witnessed checkpoints the newest wins.
"""

from __future__ import annotations

from pipelines.io.archive import COSIGNED_DIR
from pipelines.prover import Prover
from pipelines.witnessing import safe_name
from transforms.checkpoint import Checkpoint, sign_checkpoint
from transforms.cosignature import CosignatureSigner, add_cosignatures, check_cosigned
from transforms.merkle import leaf_hash, root
from transforms.note import Signer

ORIGIN_PREFIX = "auditlog.test"
LOG = "t1"
LEAVES = [leaf_hash(f"entry {i}".encode()) for i in range(12)]
LOG_SIGNER = Signer.generate(f"{ORIGIN_PREFIX}/{LOG}")
ALICE = CosignatureSigner.generate("alice.example/w")
BOB = CosignatureSigner.generate("bob.example/w")


class Objects:
    """The few archive calls `_cosigned` makes, over a dict."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.checkpoints: dict[int, str] = {}

    def keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))

    def get(self, key: str) -> bytes:
        return self.objects[key]

    def get_checkpoint(self, log_id: str, size: int) -> str:
        assert log_id == LOG
        return self.checkpoints[size]


def archive_with(cosigned: dict[int, list[CosignatureSigner]]) -> Objects:
    archive = Objects()
    for size, witnesses in cosigned.items():
        note = sign_checkpoint(Checkpoint(f"{ORIGIN_PREFIX}/{LOG}", size, root(LEAVES[:size])), LOG_SIGNER)
        archive.checkpoints[size] = note
        for w in witnesses:
            key = f"logs/{LOG}/{COSIGNED_DIR}/{size:015d}.{safe_name(w.name)}.{w.key_id:08x}.cosig"
            line = w.cosign(note.split("\n\n")[0] + "\n", 1_700_000_000)
            archive.objects[key] = add_cosignatures(note, [line]).encode()
    return archive


def chosen(archive: Objects, min_size: int, max_size: int) -> tuple[int, int]:
    prover = Prover(archive, clickhouse=None, verifier=LOG_SIGNER.verifier(), origin_prefix=ORIGIN_PREFIX)
    found = prover._cosigned(LOG, min_size, max_size)
    assert found is not None
    size, note = found
    report = check_cosigned(note, LOG_SIGNER.verifier(), [ALICE.verifier(), BOB.verifier()], min_witnesses=0)
    return size, len(report.cosigned)


def test_the_checkpoint_most_witnesses_cosigned_wins_over_a_newer_one() -> None:
    archive = archive_with({4: [ALICE, BOB], 8: [ALICE]})
    assert chosen(archive, 1, 12) == (4, 2)


def test_among_equally_witnessed_checkpoints_the_newest_wins() -> None:
    archive = archive_with({4: [ALICE], 8: [ALICE], 10: [BOB]})
    assert chosen(archive, 1, 12) == (10, 1)


def test_only_checkpoints_that_hold_the_event_count() -> None:
    archive = archive_with({4: [ALICE, BOB], 8: [ALICE]})
    assert chosen(archive, 5, 12) == (8, 1)  # leaf 4 is not in the tree of size 4


def test_no_cosigned_checkpoint_in_range_is_none() -> None:
    archive = archive_with({4: [ALICE, BOB]})
    prover = Prover(archive, clickhouse=None, verifier=LOG_SIGNER.verifier(), origin_prefix=ORIGIN_PREFIX)
    assert prover._cosigned(LOG, 5, 12) is None
