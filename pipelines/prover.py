"""Inclusion proofs for indexed events, against the newest signed checkpoint in the WORM archive.

The checkpoint comes from the archive (the source of truth) and is opened with the deployment's
key; leaf hashes come from ClickHouse and are accepted only if they give the checkpoint's root.
Each log's leaves are kept as a `MerkleTree` and extended when a newer checkpoint appears, so a
proof costs O(log² n) hashes instead of a read of the whole log: what `auditlog proof`, exports
with proofs and the query API's proof endpoint all use.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from pipelines.io.archive import COSIGNED_DIR
from pipelines.witnessing import list_cosigned
from transforms.checkpoint import Checkpoint, open_checkpoint
from transforms.cosignature import add_cosignatures, split_note
from transforms.errors import AuditlogError, VerificationError
from transforms.merkle import MerkleTree
from transforms.note import Verifier
from transforms.tlogproof import format_proof, verify_proof


class EventNotFound(AuditlogError, LookupError):
    """The event is not indexed, or no signed checkpoint covers it yet."""


@dataclass
class _LogTree:
    tree: MerkleTree
    checkpoint: Checkpoint
    note: str


@dataclass(frozen=True)
class Proof:
    tenant_id: str
    event_id: str
    log_id: str
    leaf_index: int
    canonical: bytes
    text: str  # the tlog-proof@v1 bundle
    checkpoint: Checkpoint


class Prover:
    """Builds and self-checks tlog-proof@v1 bundles; safe to share between threads."""

    def __init__(self, archive: Any, clickhouse: Any, verifier: Verifier, origin_prefix: str) -> None:
        self.archive = archive
        self.clickhouse = clickhouse
        self.verifier = verifier
        self.origin_prefix = origin_prefix
        self._trees: dict[str, _LogTree] = {}
        self._lock = threading.Lock()

    def _tree(self, log_id: str, index: int) -> _LogTree:
        with self._lock:
            cached = self._trees.get(log_id)
            if cached is not None and cached.checkpoint.size > index:
                return cached
            latest = self.archive.latest_checkpoint(log_id)
            if latest is None or latest[0] <= index:
                raise EventNotFound(
                    f"no signed checkpoint of log {log_id} covers leaf {index} yet; retry after the next block"
                )
            size, note = latest
            checkpoint = open_checkpoint(note, self.verifier, origin=f"{self.origin_prefix}/{log_id}")
            tree = cached.tree if cached is not None else MerkleTree()
            if tree.size > size:
                raise VerificationError(
                    f"log {log_id}: the archive's newest checkpoint ({size}) is older than one seen before "
                    f"({tree.size}); run `auditlog verify`"
                )
            leaves = self.clickhouse.leaf_hashes(log_id, size)
            if [tree.leaf(i) for i in range(tree.size)] != leaves[: tree.size]:
                raise VerificationError(f"log {log_id}: ClickHouse's leaves changed; run `auditlog verify`")
            tree.extend(leaves[tree.size :])
            if tree.root(size) != checkpoint.root:
                raise VerificationError(
                    f"ClickHouse's leaves of {log_id} do not give the signed root at size {size}; run `auditlog verify`"
                )
            self._trees[log_id] = _LogTree(tree, checkpoint, note)
            return self._trees[log_id]

    def tree_for(self, log_id: str, size: int) -> tuple[MerkleTree, str]:
        """Returns the log's verified tree holding at least `size` leaves, and the checkpoint note it matches."""
        log = self._tree(log_id, size - 1)
        return log.tree, log.note

    def proof(self, tenant_id: str, event_id: str) -> Proof:
        """Returns the event's proof, verified before it is handed out.

        Raises:
            EventNotFound: the event is not indexed, or not yet under a checkpoint.
            VerificationError: the stored event or leaves disagree with the signed log.
        """
        found = self.clickhouse.find_event(tenant_id, event_id)
        if found is None:
            raise EventNotFound(f"no event {event_id!r} for tenant {tenant_id!r} in ClickHouse")
        return self.proof_at(tenant_id, event_id, found["log_id"], found["leaf_index"], found["canonical"])

    def proof_at(
        self, tenant_id: str, event_id: str, log_id: str, index: int, canonical: bytes, check: bool = True
    ) -> Proof:
        """Like `proof`, for an event whose place and bytes the caller already read.

        With `check=False` the bundle is handed out even when `canonical` is not the logged entry
        (the query API lets the browser find that out for itself); the tree and checkpoint are
        always checked.
        """
        log = self._tree(log_id, index)
        size, note, checkpoint = log.checkpoint.size, log.note, log.checkpoint
        cosigned = self._cosigned(log_id, index + 1, size)
        if cosigned is not None:
            size, note = cosigned
            checkpoint = open_checkpoint(note, self.verifier, origin=f"{self.origin_prefix}/{log_id}")
            if log.tree.root(size) != checkpoint.root:
                raise VerificationError(f"log {log_id}: the cosigned checkpoint at {size} is not the verified tree's")
        text = format_proof(index, log.tree.inclusion_proof(index, size), note)
        if check:
            verify_proof(text, self.verifier, entry=canonical)
        return Proof(tenant_id, event_id, log_id, index, canonical, text, checkpoint)

    def _cosigned(self, log_id: str, min_size: int, max_size: int) -> tuple[int, str] | None:
        """The checkpoint in [min_size, max_size] that the most witnesses cosigned, or None.

        Among those cosigned by as many, the newest: a bundle for `verify-proof --min-witnesses N`
        should carry every cosignature it can, and a witness that lags behind the others still
        counts on the older checkpoint it did cosign. Its note is the operator's with every
        witness's cosignature lines added (pipelines/witnessing/).
        """
        if not hasattr(self.archive, "keys"):
            return None
        by_size: dict[int, list[str]] = {}
        for (name, key_id), sizes in list_cosigned(self.archive, log_id).items():
            for size in sizes:
                if min_size <= size <= max_size:
                    by_size.setdefault(size, []).append(f"{size:015d}.{name}.{key_id}.cosig")
        if not by_size:
            return None
        size = max(by_size, key=lambda s: (len(by_size[s]), s))
        note = self.archive.get_checkpoint(log_id, size)
        prefix = f"logs/{log_id}/{COSIGNED_DIR}/"
        for name in sorted(by_size[size]):
            _, lines = split_note(self.archive.get(prefix + name).decode("utf-8"))
            note = add_cosignatures(note, lines)
        return size, note
