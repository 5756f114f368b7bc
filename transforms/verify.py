"""What `auditlog verify` concludes, and the pure checks behind it: no I/O, no Beam, no ClickHouse.

The WORM archive is the source of truth. `ArchiveLogCheck` replays one log's archived objects
(the original version at every key, plus what happened to the key since) and recomputes every
leaf hash, block root, tree root, chain link, checkpoint signature and the consistency between
successive checkpoints, and says what the search index must hold for each block
(`ExpectedRows`, whose `block_digest` says what goes into one). The comparison with ClickHouse
itself lives beside its adapter (pipelines/io/clickhouse/compare.py).

Every disagreement becomes a `Finding` that names the store, the kind of tampering, the log, and
where known the leaf index, block and event id.

Retention (transforms/retention.py) is not tampering: given a `RetentionClock`, an event whose
retention ended (and that no legal hold keeps) is not expected in ClickHouse, and a block object
that expired after its retention is replayed from the header and leaf hashes `auditlog expire`
left in its place. Both are counted as "expired by policy"; a row or block that goes missing
while its retention runs is "deleted".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from hashlib import md5, sha256
from typing import Any, TypeVar

from transforms.blocks import BlockHeader, decode_block, decode_expired_block, verify_block
from transforms.checkpoint import Checkpoint, open_checkpoint
from transforms.errors import VerificationError
from transforms.merkle import MerkleTree, leaf_hashes, verify_consistency
from transforms.note import Verifier
from transforms.retention import RetentionClock
from transforms.tiles import Tile, TiledLog, TileFormatError, parse_tile_path

T = TypeVar("T")


class Kind(StrEnum):
    MODIFIED = "modified"
    DELETED = "deleted"
    INSERTED = "inserted"
    REORDERED = "reordered"
    CHAIN_BROKEN = "chain broken"
    BAD_SIGNATURE = "bad signature"
    ROLLED_BACK = "checkpoint rolled back"
    FORKED = "checkpoint forked"
    OVERWRITTEN = "archive object overwritten"


class Store(StrEnum):
    ARCHIVE = "archive"
    CLICKHOUSE = "clickhouse"


@dataclass(frozen=True)
class Finding:
    """One disagreement: which store, what kind, where, and what exactly."""

    store: Store
    kind: Kind
    log_id: str
    detail: str
    leaf_index: int | None = None
    event_id: str | None = None
    block_index: int | None = None
    tenant_id: str | None = None
    occurred_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "store": self.store.value,
            "kind": self.kind.value,
            "log_id": self.log_id,
            "leaf_index": self.leaf_index,
            "event_id": self.event_id,
            "tenant_id": self.tenant_id,
            "occurred_at": self.occurred_at,
            "block_index": self.block_index,
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Finding:
        """The finding `to_json` describes (how a pipeline's results come back from its files)."""
        return cls(
            Store(data["store"]),
            Kind(data["kind"]),
            data["log_id"],
            data["detail"],
            leaf_index=data.get("leaf_index"),
            event_id=data.get("event_id"),
            block_index=data.get("block_index"),
            tenant_id=data.get("tenant_id"),
            occurred_at=data.get("occurred_at"),
        )

    def concerns(self, tenant_id: str | None = None, since: str | None = None) -> bool:
        """False only for an event finding of another tenant, or older than `since` (canonical UTC time).

        Findings about the structure (chain, checkpoints, archive objects) concern everyone.
        """
        if tenant_id is not None and self.tenant_id is not None and self.tenant_id != tenant_id:
            return False
        return since is None or self.occurred_at is None or self.occurred_at >= since

    def __str__(self) -> str:
        where = [f"log {self.log_id}"]
        if self.block_index is not None:
            where.append(f"block {self.block_index}")
        if self.leaf_index is not None:
            where.append(f"leaf {self.leaf_index}")
        if self.event_id:
            where.append(f"event {self.event_id}")
        return f"[{self.store.value}] {self.kind.value}: {', '.join(where)}: {self.detail}"


@dataclass(frozen=True)
class ArchivedObject:
    """What the archive holds at one key: the original (first) version, and what happened since.

    `original` is None when no version with data survives. `versions` counts versions with data;
    more than one means a write without If-None-Match. `deleted` means the current version is a
    delete marker (the locked original is still there).
    """

    key: str
    original: bytes | None
    versions: int = 1
    deleted: bool = False
    current: bytes | None = None  # the newest data version, when it is not the original
    # A block object that holds only its header (auditlog-block/v2): its entries, read from the
    # log's entry bundles (their original versions), or why they could not be; and the bytes of
    # each bundle read (tile path -> its original version), which `TileCheck` compares as they are.
    entries: tuple[bytes, ...] | None = None
    missing: str = ""
    bundles: Mapping[str, bytes] = field(default_factory=dict)


# --------------------------------------------------------------------------- what the index must hold


def block_digest(leaf_hashes: Sequence[bytes]) -> bytes:
    """Returns SHA-256 of a block's leaf hashes concatenated in leaf order.

    ClickHouse must reproduce it per block twice: over SHA-256(0x00 ‖ canonical) of the
    audit_logs rows and over the leaf_hash column of audit_leaves, each sorted by leaf index
    (`pipelines/io/clickhouse/digest.py`). The rest of a row (its leaf_hash and block_hash columns, the
    search columns against the canonical bytes, distinct and contiguous leaf indexes) comes back
    as counts beside the digest, so the expected value stays one hash per block.
    """
    return sha256(b"".join(leaf_hashes)).digest()


@dataclass(frozen=True)
class ExpectedRows:
    """The rows one block must have in a table: how many, which leaves, and their `block_digest`."""

    digest: bytes
    rows: int
    first_leaf: int
    last_leaf: int

    @classmethod
    def whole(cls, header: BlockHeader, digest: bytes) -> ExpectedRows:
        return cls(digest, header.leaf_count, header.first_leaf_index, header.tree_size - 1)


# --------------------------------------------------------------------------- the archive


@dataclass
class ArchiveLog:
    """One log as the archive proves it: the verified prefix and everything found on the way."""

    log_id: str
    findings: list[Finding] = field(default_factory=list)
    tree: MerkleTree = field(default_factory=MerkleTree)
    headers: dict[int, BlockHeader] = field(default_factory=dict)
    digests: dict[int, bytes] = field(default_factory=dict)
    checkpoints: dict[int, Checkpoint] = field(default_factory=dict)
    visible_checkpoints: list[int] = field(default_factory=list)
    notes: dict[int, str] = field(default_factory=dict)  # the signed note of each verified checkpoint
    events: int = 0
    # Blocks whose audit_logs rows are not all expected (retention ended): their expected rows, or
    # None when no row is; every other block expects all its rows.
    partial_rows: dict[int, ExpectedRows | None] = field(default_factory=dict)
    expired_events: int = 0  # events whose retention ended: not expected in ClickHouse
    expired_blocks: int = 0  # block objects that expired; replayed from their leaf hashes
    tiles_checked: int = 0  # tlog-tiles objects found as the verified blocks say (0: none published)

    def expected_rows(self, block_index: int) -> ExpectedRows | None:
        """The audit_logs rows a verified block must have (None: none, all its events expired)."""
        if block_index in self.partial_rows:
            return self.partial_rows[block_index]
        return ExpectedRows.whole(self.headers[block_index], self.digests[block_index])

    @property
    def size(self) -> int:
        """Leaves covered by verified blocks (the archive's verified tree size)."""
        return self.tree.size

    @property
    def committed(self) -> Checkpoint | None:
        """The largest verified checkpoint."""
        return self.checkpoints[max(self.checkpoints)] if self.checkpoints else None

    @property
    def committed_note(self) -> str:
        """The signed note of the largest verified checkpoint ("" if none)."""
        return self.notes[max(self.notes)] if self.notes else ""

    def header_of_leaf(self, index: int) -> BlockHeader | None:
        for header in self.headers.values():  # few blocks are asked about: only on a drill-down
            if header.first_leaf_index <= index < header.tree_size:
                return header
        return None


class ArchiveLogCheck:
    """Replays one log's archive, block by block in index order, then its checkpoints.

    The tree is extended only by blocks that verify and follow on; after the first block that
    does not, the rest of the log cannot be checked against the tree and is reported once.
    """

    def __init__(self, log_id: str, verifier: Verifier, origin: str, clock: RetentionClock | None = None) -> None:
        self.log = ArchiveLog(log_id)
        self.verifier = verifier
        self.origin = origin
        self.clock = clock
        self._prev: BlockHeader | None = None
        self._next_index = 0
        self._broken = False

    def _find(self, store: Store, kind: Kind, detail: str, **where: Any) -> None:
        self.log.findings.append(Finding(store, kind, self.log.log_id, detail, **where))

    def _object_history(self, obj: ArchivedObject, what: str, **where: Any) -> None:
        if obj.versions > 1:
            differs = obj.current is not None and obj.current != obj.original
            self._find(
                Store.ARCHIVE,
                Kind.OVERWRITTEN,
                f"{obj.key} has {obj.versions} versions"
                + (" and the newest differs from the original" if differs else "")
                + "; the first (the locked original) is the one verified",
                **where,
            )
            if what == "checkpoint" and differs and obj.current is not None:
                try:
                    replaced = open_checkpoint(obj.current, self.verifier, origin=self.origin)
                except VerificationError as exc:
                    self._find(Store.ARCHIVE, Kind.BAD_SIGNATURE, f"the newest version of {obj.key}: {exc}")
                    return
                original = None
                if obj.original is not None:
                    try:
                        original = open_checkpoint(obj.original, self.verifier, origin=self.origin)
                    except VerificationError:
                        original = None
                if original is None or (replaced.size, replaced.root) != (original.size, original.root):
                    self._find(
                        Store.ARCHIVE,
                        Kind.FORKED,
                        f"the newest version of {obj.key} is a validly signed checkpoint for another tree",
                    )
        if obj.deleted:
            self._find(
                Store.ARCHIVE,
                Kind.DELETED,
                f"{what} {obj.key} was deleted (a delete marker hides the locked original, which is verified)",
                **where,
            )

    def add_block(self, index: int, obj: ArchivedObject) -> tuple[BlockHeader, list[bytes], list[bytes]] | None:
        """Checks the archived block at `index`; call in ascending index order.

        Returns the block's header, entries and their leaf hashes when it verifies and follows on,
        else None.
        """

        def decode(data: bytes) -> tuple[BlockHeader, list[bytes], list[bytes]]:
            header, entries = decode_block(data)
            if entries is None:  # a v2 object: the entries are in the log's bundles
                if obj.entries is None:
                    raise VerificationError(obj.missing or "the block's entries are not in its log's entry bundles")
                entries = list(obj.entries)
            return header, leaf_hashes(entries), entries

        followed = self._follow(index, obj, "block", decode)
        if followed is None:
            return None
        header, hashes, entries = followed
        kept = self.clock.kept(entries) if self.clock is not None else None
        if kept is not None:  # some events' retention ended: only the rest must have rows
            self.log.expired_events += len(entries) - len(kept)
            first = header.first_leaf_index
            self.log.partial_rows[index] = (
                ExpectedRows(block_digest([hashes[i] for i in kept]), len(kept), first + kept[0], first + kept[-1])
                if kept
                else None
            )
        return header, entries, hashes

    def add_expired_block(self, index: int, obj: ArchivedObject) -> tuple[BlockHeader, list[bytes]] | None:
        """Checks the header and leaf hashes left in place of block `index` after it expired.

        Call in the block order of `add_block`, for an index whose block object no longer exists.
        Returns (header, leaf hashes) when they verify and follow on, else None.
        """
        followed = self._follow(index, obj, "expired block", decode_expired_block)
        if followed is None:
            return None
        header, hashes, retain_until = followed
        if self.clock is not None and retain_until > self.clock.now:
            self._find(
                Store.ARCHIVE,
                Kind.DELETED,
                f"the block object was removed before its retention ended ({retain_until}); its leaf hashes "
                "still verify, its events are gone",
                block_index=index,
            )
        self.log.partial_rows[index] = None
        self.log.expired_events += header.leaf_count
        self.log.expired_blocks += 1
        return header, hashes

    def _follow(
        self, index: int, obj: ArchivedObject, what: str, decode: Callable[[bytes], tuple[BlockHeader, list[bytes], T]]
    ) -> tuple[BlockHeader, list[bytes], T] | None:
        """Extends the log by the block at `index` if it follows on and its leaf hashes give its roots.

        `decode` turns the object into (header, leaf hashes, what else it holds). Anything that does
        not check out is a finding, and the rest of the log cannot be checked.
        """
        self._object_history(obj, what, block_index=index)
        if self._broken:
            return None
        if index != self._next_index:
            self._gap(index)
            return None
        if obj.original is None:
            self._find(Store.ARCHIVE, Kind.DELETED, f"no version of {obj.key} holds data", block_index=index)
            self._broken = True
            return None
        try:
            header, hashes, rest = decode(obj.original)
            if header.log_id != self.log.log_id or header.block_index != index:
                raise VerificationError(f"the object at {obj.key} holds block {header.log_id}/{header.block_index}")
            verify_block(header, self._prev, hashes)
            if header.first_leaf_index != self.log.tree.size:
                raise VerificationError(
                    f"block starts at leaf {header.first_leaf_index}, the log holds {self.log.tree.size} leaves"
                )
            self.log.tree.extend(hashes)
            if self.log.tree.root() != header.tree_root:
                raise VerificationError(f"tree root after the block is not {header.tree_root.hex()}")
        except (VerificationError, ValueError, KeyError) as exc:
            self._find(Store.ARCHIVE, Kind.CHAIN_BROKEN, str(exc), block_index=index)
            self._broken = True
            return None
        self.log.headers[index] = header
        self.log.digests[index] = block_digest(hashes)
        self.log.events += header.leaf_count
        self._prev = header
        self._next_index = index + 1
        return header, hashes, rest

    def _gap(self, index: int) -> None:
        """Reports blocks missing before `index`; the rest of the log cannot be checked."""
        self._find(
            Store.ARCHIVE,
            Kind.DELETED,
            f"blocks {self._next_index}..{index - 1} are missing from the archive (no version left); "
            "later blocks cannot be checked against the tree",
            block_index=self._next_index,
        )
        self._broken = True

    def add_checkpoint(self, size: int, obj: ArchivedObject) -> None:
        """Checks the archived checkpoint at tree size `size`; call after every block, ascending."""
        self._object_history(obj, "checkpoint")
        if not obj.deleted:
            self.log.visible_checkpoints.append(size)
        if obj.original is None:
            return
        try:
            checkpoint = open_checkpoint(obj.original, self.verifier, origin=self.origin)
        except VerificationError as exc:
            self._find(Store.ARCHIVE, Kind.BAD_SIGNATURE, f"checkpoint {obj.key}: {exc}")
            return
        if checkpoint.size != size:
            self._find(Store.ARCHIVE, Kind.FORKED, f"{obj.key} holds a checkpoint of size {checkpoint.size}")
            return
        if size > self.log.tree.size:
            if not self._broken:
                self._find(
                    Store.ARCHIVE,
                    Kind.DELETED,
                    f"a signed checkpoint covers {size} leaves but the archive's blocks end at {self.log.tree.size}",
                )
            return
        if self.log.tree.root(size) != checkpoint.root:
            self._find(
                Store.ARCHIVE,
                Kind.FORKED,
                f"signed checkpoint at size {size} has root {checkpoint.root.hex()}, "
                f"the archived leaves give {self.log.tree.root(size).hex()}",
            )
            return
        previous = self.log.committed
        if previous is not None:
            proof = self.log.tree.consistency_proof(previous.size, size)
            try:
                verify_consistency(previous.size, size, proof, previous.root, checkpoint.root)
            except VerificationError as exc:
                self._find(Store.ARCHIVE, Kind.FORKED, f"checkpoints {previous.size} → {size}: {exc}")
                return
        self.log.checkpoints[size] = checkpoint
        self.log.notes[size] = obj.original.decode("utf-8")

    def finish(self, witness: Checkpoint | None = None) -> ArchiveLog:
        """Closes the log: every block needs its checkpoint, and nothing verified before may be gone.

        `witness` is the newest checkpoint a previous clean verify saw (its signature was checked
        then); the archive must still reach it and agree with it.
        """
        log = self.log
        for index, header in log.headers.items():
            if header.tree_size not in log.checkpoints and index != max(log.headers):
                self._find(
                    Store.ARCHIVE,
                    Kind.DELETED,
                    f"no valid checkpoint at tree size {header.tree_size}, where the block ends",
                    block_index=index,
                )
        visible = max(log.visible_checkpoints, default=0)
        held = max(log.checkpoints, default=0)
        if visible < held:
            self._find(
                Store.ARCHIVE,
                Kind.ROLLED_BACK,
                f"the newest visible checkpoint is at size {visible}, but the archive's locked originals "
                f"reach size {held}: newer objects were hidden",
            )
        if witness is not None:
            if witness.size > log.tree.size:
                self._find(
                    Store.ARCHIVE,
                    Kind.ROLLED_BACK,
                    f"a previous verify saw a signed checkpoint at size {witness.size}; the archive now "
                    f"proves only {log.tree.size} leaves",
                )
            elif log.tree.root(witness.size) != witness.root:
                self._find(
                    Store.ARCHIVE,
                    Kind.FORKED,
                    f"the checkpoint a previous verify saw at size {witness.size} has root "
                    f"{witness.root.hex()}, the archive now gives {log.tree.root(witness.size).hex()}",
                )
        return log


# --------------------------------------------------------------------------- the log's tiles


@dataclass(frozen=True)
class ListedTile:
    """One tile key as the archive lists it: every version's ETag, newest first ("" for a delete marker)."""

    key: str
    etags: tuple[str, ...]


_SAME = "read: as expected"
_DIFFERENT = "read: different bytes"


class TileCheck:
    """A log's C2SP tlog-tiles as its verified blocks say they must be, against the archive's listing.

    Each verified block is grown into a `TiledLog` (the writer's own rule), giving the bytes of
    every tile and bundle the log published; the archive's listing must hold each, once, with the
    ETag (the MD5 the store computed when it was written) of those bytes, and nothing else. A
    bundle that holds events of an expired block is not expected (its bytes are gone) but may stay
    until `auditlog expire` deletes it. After a block that does not verify, only what was expected
    up to it is checked.
    """

    def __init__(self, log_id: str) -> None:
        self.log_id = log_id
        self._tiled = TiledLog()
        # path -> hex MD5 of its bytes, or _SAME / _DIFFERENT where its original was read and compared
        self._expected: dict[str, str] = {}
        self._expired: list[tuple[int, int]] = []  # leaf ranges of expired blocks
        self._broken = False

    def stop(self) -> None:
        """The log's chain broke: only what its verified blocks published so far is expected."""
        self._broken = True

    def add_block(
        self,
        header: BlockHeader,
        entries: Sequence[bytes] | None,
        hashes: Sequence[bytes] | None,
        read: Mapping[str, bytes] | None = None,
    ) -> None:
        """A verified block (entries and/or leaf hashes; an expired one has hashes only), in log order.

        `read` holds the original bytes of tiles already read from the archive (a block's entry
        bundles): those are compared byte for byte rather than through the listing's ETag, which
        saves hashing every event's bytes again with MD5.
        """
        if self._broken:
            return
        if header.first_leaf_index != self._tiled.size:
            self._broken = True  # a gap: the chain check reports it; tiles past it are not checked
            return
        if entries is None:
            self._expired.append((header.first_leaf_index, header.tree_size))
        for tile, data in self._tiled.grow(header.first_leaf_index, entries, hashes):
            original = read.get(tile.path) if read else None
            if original is None:
                self._expected[tile.path] = md5(data).hexdigest()
            else:
                self._expected[tile.path] = _SAME if original == data else _DIFFERENT

    def _of_expired_events(self, tile: Tile) -> bool:
        return tile.is_bundle and any(lo < tile.end and tile.start < hi for lo, hi in self._expired)

    def findings(self, listed: Sequence[ListedTile], prefix: str) -> tuple[list[Finding], int]:
        """(findings, tiles found as expected) for the tiles listed under the log's `prefix`."""
        out: list[Finding] = []

        def find(kind: Kind, detail: str) -> None:
            out.append(Finding(Store.ARCHIVE, kind, self.log_id, detail))

        if not listed:
            return [], 0  # a log written before tiles: `auditlog tiles migrate` publishes them
        missing_checked = not self._broken
        found = 0
        seen: set[str] = set()
        for item in listed:
            path = item.key[len(prefix) :]
            try:
                tile = parse_tile_path(path)
            except TileFormatError:
                find(Kind.INSERTED, f"{item.key} is not a tlog-tiles path")
                continue
            if len(item.etags) > 1 or not item.etags[0]:
                find(
                    Kind.OVERWRITTEN if item.etags[0] else Kind.DELETED,
                    f"{item.key} has {len(item.etags)} versions"
                    + (" (the newest a delete marker)" if not item.etags[0] else ""),
                )
            want = self._expected.get(path)
            if want is None:
                if self._broken or self._of_expired_events(tile):
                    continue
                if tile.end > self._tiled.size:
                    find(
                        Kind.ROLLED_BACK,
                        f"{item.key} reaches past the verified blocks (tree size {self._tiled.size}): "
                        "blocks the tiles were published from are gone",
                    )
                else:
                    find(Kind.INSERTED, f"{item.key} is not a tile or bundle the log's verified blocks publish")
                continue
            seen.add(path)
            if want == _SAME:
                found += 1
            elif want == _DIFFERENT or item.etags[-1].strip('"') != want:
                find(Kind.MODIFIED, f"{item.key} does not hold the bytes the log's verified blocks give it")
            else:
                found += 1
        for path in sorted(set(self._expected) - seen) if missing_checked else ():
            find(Kind.DELETED, f"{prefix}{path} is missing: the log's verified blocks publish it")
        return out, found
