"""Inclusion and consistency proofs, read from each log's tiles in the WORM archive, against its signed checkpoints.

The checkpoint comes from the archive (the source of truth) and is opened with the deployment's
key; the hashes come from the log's C2SP tlog-tiles (pipelines/io/archive/tiles.py) through a
cache bounded in bytes, and a head is accepted only once its tiles give the checkpoint's root and
prove it an extension of the head seen before. A proof reads a few tiles per 8 tree levels, and
the memory it takes does not grow with the log: what `auditlog proof`, exports with proofs and the
query API's proof and consistency endpoints all use. Where an event sits (log, leaf index) comes
from the local place index when one is given and holds it (pipelines/io/places.py, what `auditlog
serve` keeps), else from ClickHouse's point lookup; its bytes are checked against the proof before
a bundle goes out.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from pipelines.io.archive import COSIGNED_DIR
from pipelines.io.archive.tiles import TilesMissingError, TileStore, remote
from pipelines.io.places import PlaceIndex
from pipelines.witnessing import list_cosigned
from transforms.checkpoint import Checkpoint, open_checkpoint
from transforms.cosignature import add_cosignatures, split_note
from transforms.errors import AuditlogError, VerificationError
from transforms.merkle import EMPTY_ROOT, leaf_hash, verify_consistency, verify_inclusion
from transforms.note import Verifier
from transforms.retention import KEPT_FOREVER, parse_time
from transforms.tlogproof import format_proof, verify_proof

COSIGNED_LIST_TTL_S = 5.0
"""How stale the list of witnesses' cosignatures a proof picks from may be (a LIST per proof otherwise)."""
MAX_COSIGNED_NOTES = 4096
"""Cosigned notes (and checked roots) kept; the cache starts afresh when full (each entry is small)."""


class EventNotFound(AuditlogError, LookupError):
    """The event is not indexed, or no signed checkpoint covers it yet."""


@dataclass(frozen=True)
class Head:
    """A log's signed checkpoint whose tiles were checked, and when it was read."""

    checkpoint: Checkpoint
    note: str
    read_at: float

    @property
    def size(self) -> int:
        return self.checkpoint.size


@dataclass(frozen=True)
class Proof:
    tenant_id: str
    event_id: str
    log_id: str
    leaf_index: int
    canonical: bytes
    text: str  # the tlog-proof@v1 bundle
    checkpoint: Checkpoint


@dataclass(frozen=True)
class Consistency:
    old_root: bytes
    new_root: bytes
    proof: list[bytes]
    note: str  # the checkpoint the newer tree is a prefix of


class Prover:
    """Builds and self-checks tlog-proof@v1 bundles from tiles; safe to share between threads."""

    def __init__(
        self,
        archive: Any,
        clickhouse: Any,
        verifier: Verifier,
        origin_prefix: str,
        tiles: TileStore | None = None,
        places: PlaceIndex | None = None,
    ) -> None:
        self.archive = archive
        self.clickhouse = clickhouse
        self.places = places
        self.verifier = verifier
        self.origin_prefix = origin_prefix
        self.tiles = tiles if tiles is not None else TileStore(archive)
        self._heads: dict[str, Head] = {}
        self._cosigned_lists: dict[str, tuple[float, dict[tuple[str, str], list[int]]]] = {}
        self._cosigned_notes: dict[tuple[str, int, tuple[str, ...]], str] = {}
        self._checked_roots: set[tuple[str, int, bytes]] = set()  # (log, size, root) the tiles gave
        self._lock = threading.Lock()

    def head(self, log_id: str, covering: int = -1, max_age: float | None = None) -> Head:
        """The log's newest checked head that holds leaf `covering`.

        The archive is read again only when the head known does not hold it (or is older than
        `max_age` seconds): then the checkpoints since are listed, not the whole folder.

        Raises:
            EventNotFound: no signed checkpoint of the log covers the leaf yet.
            VerificationError: the checkpoint's signature, its tiles, or its consistency with the
                head seen before is wrong.
        """
        with self._lock:
            known = self._heads.get(log_id)
        now = time.monotonic()
        if known is not None and known.size > covering and (max_age is None or now - known.read_at <= max_age):
            return known
        remote(f"the checkpoints of log {log_id}")
        latest = self.archive.latest_checkpoint(log_id, after=known.size if known else None)
        if latest is None:
            if known is not None and known.size > covering:
                return self._keep(log_id, Head(known.checkpoint, known.note, now))
            what = f"covers leaf {covering}" if covering >= 0 else "exists"
            raise EventNotFound(f"no signed checkpoint of log {log_id} {what} yet; retry after the next block")
        size, note = latest
        checkpoint = open_checkpoint(note, self.verifier, origin=f"{self.origin_prefix}/{log_id}")
        if checkpoint.size != size:
            raise VerificationError(
                f"log {log_id}: the checkpoint archived as size {size} signs size {checkpoint.size}; "
                "run `auditlog verify`"
            )
        try:
            self._check_head(log_id, checkpoint, known)
        except VerificationError:
            if self.tiles.disk is None:
                raise
            # A disk cache that outlived its archive (a bucket made again under the same name) must
            # not raise a false alarm: read the log's tiles from the archive again before calling it one.
            self.tiles.forget(log_id)
            self._check_head(log_id, checkpoint, known)
        if size <= covering:
            raise EventNotFound(
                f"no signed checkpoint of log {log_id} covers leaf {covering} yet; retry after the next block"
            )
        return self._keep(log_id, Head(checkpoint, note, now))

    def _check_head(self, log_id: str, checkpoint: Checkpoint, known: Head | None) -> None:
        """Raises VerificationError unless the tiles give the checkpoint's root and extend `known`."""
        size = checkpoint.size
        reader = self.tiles.reader(log_id, size)
        if reader.root() != checkpoint.root:
            raise VerificationError(
                f"the tiles of log {log_id} do not give the signed root at size {size}; run `auditlog verify`"
            )
        if known is not None:
            try:
                verify_consistency(
                    known.size, size, reader.consistency_proof(known.size), known.checkpoint.root, checkpoint.root
                )
            except VerificationError as exc:
                raise VerificationError(
                    f"log {log_id}: the checkpoint at {size} does not extend the one at {known.size} seen before "
                    f"({exc}); run `auditlog verify`"
                ) from None

    def _keep(self, log_id: str, head: Head) -> Head:
        with self._lock:
            known = self._heads.get(log_id)
            if known is None or known.size <= head.size:
                self._heads[log_id] = head
            return self._heads[log_id]

    def consistency(self, log_id: str, from_size: int, to_size: int) -> Consistency:
        """The RFC 9162 consistency proof from `from_size` to `to_size`, from the tiles of a checked head."""
        head = self.head(log_id, to_size - 1)
        reader = self.tiles.reader(log_id, to_size, published=head.size)
        old_root = reader.subtree(0, from_size) if from_size else EMPTY_ROOT
        return Consistency(old_root, reader.root(), reader.consistency_proof(from_size), head.note)

    def find(self, tenant_id: str, event_id: str) -> tuple[str, int, bytes]:
        """(log id, leaf index, canonical bytes) of a retained event under a signed checkpoint.

        The place is the local place index's (pipelines/io/places.py) when it holds the event, else
        ClickHouse's point lookup (`event_place`); the bytes are the logged entry, read from its
        entry bundle, and a place from the local index counts only if that entry names the tenant
        and event asked for. An event whose retention stamp has passed is found only while the
        index still holds it retained (a legal hold, or expiry not yet applied).

        Raises:
            EventNotFound: the event is not indexed, its retention ended, or no checkpoint covers it yet.
        """
        found = self._find_local(tenant_id, event_id)
        if found is None:
            remote("the event's place in ClickHouse")
            place = self.clickhouse.event_place(tenant_id, event_id)
            if place is None:
                raise EventNotFound(f"no event {event_id!r} for tenant {tenant_id!r} in ClickHouse")
            canonical = self.entry(*place)
            found = place[0], place[1], canonical, _fields(canonical)
        log_id, index, canonical, fields = found
        if _retention_ended(fields):
            remote("whether a hold keeps the event, from ClickHouse")
            if not self.clickhouse.is_retained(tenant_id, event_id):
                raise EventNotFound(f"event {event_id!r} of tenant {tenant_id!r} is past its retention")
        return log_id, index, canonical

    def _find_local(self, tenant_id: str, event_id: str) -> tuple[str, int, bytes, dict[str, Any]] | None:
        place = self.places.lookup(tenant_id, event_id) if self.places is not None else None
        if place is None:
            return None
        try:
            canonical = self.entry(*place)
        except TilesMissingError:
            return None  # its bundle is gone (expired): ClickHouse's answer decides
        fields = _fields(canonical)
        if fields.get("tenant_id") != tenant_id or fields.get("event_id") != event_id:
            return None  # another event under the same 64-bit key
        return place[0], place[1], canonical, fields

    def entry(self, log_id: str, index: int) -> bytes:
        """The logged bytes of leaf `index`, from its entry bundle (checked against a proof by whoever uses them)."""
        head = self.head(log_id, index)
        return self.tiles.entry(log_id, index, head.size)

    def proof(self, tenant_id: str, event_id: str) -> Proof:
        """Returns the event's proof, verified before it is handed out.

        Raises:
            EventNotFound: the event is not indexed, past its retention, or not yet under a checkpoint.
            VerificationError: the stored event or tiles disagree with the signed log.
        """
        log_id, index, canonical = self.find(tenant_id, event_id)
        return self.proof_at(tenant_id, event_id, log_id, index, canonical)

    def proof_at(
        self, tenant_id: str, event_id: str, log_id: str, index: int, canonical: bytes, check: bool = True
    ) -> Proof:
        """Like `proof`, for an event whose place and bytes the caller already read.

        With `check=False` the bundle is handed out even when `canonical` is not the logged entry
        (the query API lets the browser find that out for itself); the head and its tiles are
        always checked.
        """
        head = self.head(log_id, index)
        size, note, checkpoint = head.size, head.note, head.checkpoint
        cosigned = self._cosigned(log_id, index + 1, size)
        published = None
        if cosigned is not None:
            size, note = cosigned
            checkpoint = open_checkpoint(note, self.verifier, origin=f"{self.origin_prefix}/{log_id}")
            published = head.size
            reader = self.tiles.reader(log_id, size, published)
            if (log_id, size, checkpoint.root) not in self._checked_roots:
                if reader.root() != checkpoint.root:
                    raise VerificationError(
                        f"log {log_id}: the tiles do not give the cosigned checkpoint's root at {size}"
                    )
                with self._lock:
                    if len(self._checked_roots) >= MAX_COSIGNED_NOTES:
                        self._checked_roots.clear()
                    self._checked_roots.add((log_id, size, checkpoint.root))
        # The event's level-0 tile is hashed from its entry bundle, just read (one S3 GET fewer,
        # TileStore.reader). That path is kept only if it proves `canonical` in the signed tree;
        # otherwise (`canonical` or another entry of the bundle is not the logged one) the
        # stored tile gives the path, as it always did.
        path = self.tiles.reader(log_id, size, published, from_bundles=True).inclusion_proof(index)
        if not _proves(canonical, index, path, checkpoint):
            path = self.tiles.reader(log_id, size, published).inclusion_proof(index)
        text = format_proof(index, path, note)
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
        for (name, key_id), sizes in self._cosigned_list(log_id).items():
            for size in sizes:
                if min_size <= size <= max_size:
                    by_size.setdefault(size, []).append(f"{size:015d}.{name}.{key_id}.cosig")
        if not by_size:
            return None
        size = max(by_size, key=lambda s: (len(by_size[s]), s))
        names = tuple(sorted(by_size[size]))
        with self._lock:
            note = self._cosigned_notes.get((log_id, size, names))
        if note is None:
            remote(f"the cosigned checkpoint of log {log_id} at {size}")
            note = self.archive.get_checkpoint(log_id, size)
            prefix = f"logs/{log_id}/{COSIGNED_DIR}/"
            for name in names:
                _, lines = split_note(self.archive.get(prefix + name).decode("utf-8"))
                note = add_cosignatures(note, lines)
            with self._lock:
                if len(self._cosigned_notes) >= MAX_COSIGNED_NOTES:
                    self._cosigned_notes.clear()
                self._cosigned_notes[log_id, size, names] = note
        return size, note

    def _cosigned_list(self, log_id: str) -> dict[tuple[str, str], list[int]]:
        """`list_cosigned` of the log, listed again at most every COSIGNED_LIST_TTL_S (one LIST, not one a proof)."""
        now = time.monotonic()
        with self._lock:
            cached = self._cosigned_lists.get(log_id)
        if cached is not None and now - cached[0] <= COSIGNED_LIST_TTL_S:
            return cached[1]
        remote(f"the cosignatures of log {log_id}")
        listed = list_cosigned(self.archive, log_id)
        with self._lock:
            self._cosigned_lists[log_id] = (now, listed)
        return listed


def _proves(entry: bytes, index: int, path: list[bytes], checkpoint: Checkpoint) -> bool:
    """Whether `path` proves `entry` at `index` in the checkpoint's tree (whose signature was checked)."""
    try:
        verify_inclusion(leaf_hash(entry), index, checkpoint.size, path, checkpoint.root)
    except VerificationError:
        return False
    return True


def _fields(canonical: bytes) -> dict[str, Any]:
    """The entry's top-level fields, or {} if it is not a JSON object (a caller checks it against a proof)."""
    try:
        doc = json.loads(canonical)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _retention_ended(fields: dict[str, Any]) -> bool:
    try:
        until = fields["retention"]["until"]
        return bool(until) and until != KEPT_FOREVER and parse_time(until) <= dt.datetime.now(dt.UTC)
    except (ValueError, KeyError, TypeError):
        return False  # no stamp (an event logged before retention classes): kept
