"""ClickHouse held against the archive: what `auditlog verify` finds in the search index.

The archive's replay (transforms/verify.py, `ArchiveLogCheck`) says what each block's rows must
be (`ExpectedRows`). `compare_index` holds one log's tables against it, first per block through
digests the database computes itself (pipelines/io/clickhouse/digest.py: the SQL, `block_digest`
what goes into one), and `compare_rows` row by row only where a digest disagrees;
`check_leftover_rows` checks rows the archive no longer requires (retention ended). Pure: the
adapter (index.py) reads the snapshots, these compare them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from transforms.blocks import BlockHeader
from transforms.checkpoint import open_checkpoint
from transforms.errors import VerificationError
from transforms.note import Verifier
from transforms.retention import RetentionClock
from transforms.verify import ArchiveLog, ExpectedRows, Finding, Kind, Store


@dataclass(frozen=True)
class IndexDigest:
    """One (log, block_index column) group of a ClickHouse table, as the database summarised it."""

    log_id: str
    block_index: int
    rows: int
    distinct_leaves: int
    min_leaf: int
    max_leaf: int
    digest: bytes
    hash_mismatches: int = 0  # rows whose leaf_hash column is not the hash of their canonical bytes
    bad_rows: int = 0  # rows whose search columns disagree with their canonical bytes
    block_hash: bytes | None = None  # the group's block_hash column, None unless one value

    def agrees_with(self, expected: ExpectedRows, block_hash: bytes | None = None) -> bool:
        """True if the group is exactly the expected rows (and, given `block_hash`, names that block)."""
        return (
            self.rows == self.distinct_leaves == expected.rows
            and (self.min_leaf, self.max_leaf) == (expected.first_leaf, expected.last_leaf)
            and self.digest == expected.digest
            and self.hash_mismatches == 0
            and self.bad_rows == 0
            and (block_hash is None or self.block_hash == block_hash)
        )


@dataclass(frozen=True)
class IndexedRow:
    """One audit_logs row as the drill-down reads it (the hash is recomputed by the database)."""

    leaf_index: int
    tenant_id: str
    event_id: str
    leaf_hash: bytes
    canonical_hash: bytes
    block_index: int
    block_hash: bytes
    bad_columns: tuple[str, ...]
    canonical: bytes
    occurred_at: str = ""


def diff_fields(original: bytes, stored: bytes) -> list[str]:
    """Returns the dotted paths whose values differ between two canonical JSON documents."""
    try:
        a, b = json.loads(original), json.loads(stored)
    except ValueError:
        return ["(not JSON)"]
    out: list[str] = []

    def walk(x: Any, y: Any, path: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for key in sorted(set(x) | set(y)):
                walk(x.get(key), y.get(key), f"{path}.{key}" if path else key)
        elif x != y:
            out.append(path or "(document)")

    walk(a, b, "")
    return out


def _identity(entry: bytes) -> tuple[str | None, str | None, str | None]:
    """(event_id, tenant_id, occurred_at) of a canonical entry, None where unreadable."""
    try:
        doc = json.loads(entry)
    except ValueError:
        return None, None, None
    if not isinstance(doc, dict):
        return None, None, None
    values = (doc.get("event_id"), doc.get("tenant_id"), doc.get("occurred_at"))
    return tuple(v if isinstance(v, str) else None for v in values)  # type: ignore[return-value]


def compare_rows(
    log: ArchiveLog,
    entries: Mapping[int, bytes],
    rows: Iterable[IndexedRow],
    leaf_index_of: Mapping[bytes, int],
    clock: RetentionClock | None = None,
) -> list[Finding]:
    """Row-level comparison of audit_logs with the archive over the leaves in `entries`.

    With a `clock`, an archived event whose retention ended may have no row (expired by policy).

    `entries` maps leaf index → archived canonical bytes for the range under suspicion; `rows`
    are every audit_logs row of the log whose leaf index or block index touches that range;
    `leaf_index_of` maps an archived leaf hash to its index (to tell a moved row from an edited one).
    """
    found: list[Finding] = []
    by_index: dict[int, list[IndexedRow]] = {}
    for row in rows:
        by_index.setdefault(row.leaf_index, []).append(row)

    def add(kind: Kind, detail: str, index: int, who: IndexedRow | bytes) -> None:
        header = log.header_of_leaf(index)
        block = header.block_index if header else None
        identity = (who.event_id, who.tenant_id, who.occurred_at or None) if isinstance(who, IndexedRow) else None
        event_id, tenant_id, occurred_at = identity or _identity(who)  # type: ignore[arg-type]
        found.append(
            Finding(Store.CLICKHOUSE, kind, log.log_id, detail, index, event_id, block, tenant_id, occurred_at)
        )

    for index in sorted(set(by_index) | set(entries)):
        entry = entries.get(index)
        at = by_index.get(index, [])
        if entry is None:
            if index < log.size:
                continue  # outside the suspected range; its own block's check covers it
            for row in at:
                detail = f"a row at leaf {index}, beyond the archive's {log.size} leaves"
                add(Kind.INSERTED, detail, index, row)
            continue
        expected = log.tree.leaf(index)
        if not at:
            if clock is None or clock.keeps(entry):
                add(Kind.DELETED, "the archived event has no row in audit_logs", index, entry)
            continue
        genuine = [row for row in at if row.canonical_hash == expected]
        for row in at:
            if row.canonical_hash == expected:
                if row is not genuine[0]:
                    add(Kind.INSERTED, "a second row repeats this archived event", index, row)
                    continue
                header = log.header_of_leaf(index)
                wrong = list(row.bad_columns)
                if row.leaf_hash != expected:
                    wrong.append("leaf_hash")
                if header and (row.block_index, row.block_hash) != (header.block_index, header.hash()):
                    wrong.append("block_index/block_hash")
                if wrong:
                    add(
                        Kind.MODIFIED,
                        f"column(s) {', '.join(wrong)} disagree with the archived event",
                        index,
                        row,
                    )
                continue
            moved_from = leaf_index_of.get(row.canonical_hash)
            if moved_from is not None and moved_from != index:
                add(
                    Kind.REORDERED,
                    f"the row of the event archived at leaf {moved_from} claims leaf {index}",
                    index,
                    row,
                )
            elif genuine:
                add(Kind.INSERTED, "a forged row beside the genuine one", index, row)
            else:
                changed = diff_fields(entry, row.canonical)
                add(
                    Kind.MODIFIED,
                    f"canonical bytes differ from the archive in {', '.join(changed) or 'bytes'}",
                    index,
                    entry,
                )
    return found


def check_leftover_rows(log: ArchiveLog, rows: Iterable[IndexedRow]) -> list[Finding]:
    """Checks rows the archive does not require (their events' retention ended, or their block expired).

    Such a row may be missing, but one that is there must be a true copy of the archived event at
    its leaf (the leaf hash the archive proves), with columns that agree with its bytes: otherwise
    expiry would be a hiding place for forged or edited rows.
    """
    found: list[Finding] = []
    seen: set[int] = set()
    for row in rows:
        header = log.header_of_leaf(row.leaf_index) if row.leaf_index < log.size else None

        def add(kind: Kind, detail: str, row: IndexedRow = row, header: BlockHeader | None = header) -> None:
            block = header.block_index if header else None
            found.append(
                Finding(
                    Store.CLICKHOUSE,
                    kind,
                    log.log_id,
                    detail,
                    row.leaf_index,
                    row.event_id,
                    block,
                    row.tenant_id,
                    row.occurred_at or None,
                )
            )

        if header is None:
            add(Kind.INSERTED, f"a row at leaf {row.leaf_index}, beyond the archive's {log.size} leaves")
            continue
        if row.canonical_hash != log.tree.leaf(row.leaf_index):
            add(Kind.MODIFIED, "a row whose retention ended, but whose bytes are not the archived event's")
            continue
        if row.leaf_index in seen:
            add(Kind.INSERTED, "a second row repeats this archived event")
            continue
        seen.add(row.leaf_index)
        wrong = list(row.bad_columns)
        if row.leaf_hash != row.canonical_hash:
            wrong.append("leaf_hash")
        if (row.block_index, row.block_hash) != (header.block_index, header.hash()):
            wrong.append("block_index/block_hash")
        if wrong:
            add(Kind.MODIFIED, f"column(s) {', '.join(wrong)} disagree with the archived event")
    return found


@dataclass
class IndexSnapshot:
    """What ClickHouse holds for one log, in the compact form the first pass compares."""

    log_digests: list[IndexDigest] = field(default_factory=list)
    leaf_digests: list[IndexDigest] = field(default_factory=list)
    headers: dict[int, list[str]] = field(default_factory=dict)
    checkpoints: dict[int, list[str]] = field(default_factory=dict)
    leftover: list[IndexedRow] = field(default_factory=list)  # rows whose retention ended, not yet deleted


def compare_index(
    log: ArchiveLog, index: IndexSnapshot, verifier: Verifier, origin: str
) -> tuple[list[Finding], set[int], list[tuple[int, int]]]:
    """Holds one log's ClickHouse tables against its archive, block by block.

    Returns (findings, archive blocks whose rows need a row-level look, extra leaf ranges to look
    at). Blocks the archive has not yet checkpointed are not expected in ClickHouse. Rows whose
    retention ended (`index.leftover`) may be gone; those still there must be true copies of
    their archived events (`check_leftover_rows`).
    """
    found: list[Finding] = []
    committed = log.committed.size if log.committed else 0
    expected_blocks = {i: h for i, h in log.headers.items() if h.tree_size <= committed}
    suspects: set[int] = set()
    extra_ranges: list[tuple[int, int]] = []

    def add(kind: Kind, detail: str, **where: Any) -> None:
        found.append(Finding(Store.CLICKHOUSE, kind, log.log_id, detail, **where))

    found.extend(check_leftover_rows(log, index.leftover))
    for table, digests in (("audit_logs", index.log_digests), ("audit_leaves", index.leaf_digests)):
        seen: set[int] = set()
        for d in digests:
            seen.add(d.block_index)
            header = expected_blocks.get(d.block_index)
            if header is not None:
                if table == "audit_logs":
                    rows = log.expected_rows(d.block_index)
                    if rows is not None and d.agrees_with(rows, header.hash()):
                        continue
                elif d.agrees_with(ExpectedRows.whole(header, log.digests[d.block_index])):
                    continue
            if header is not None:
                suspects.add(d.block_index)
            if d.max_leaf >= log.size or header is None:
                extra_ranges.append((d.min_leaf, d.max_leaf))
            for leaf in (d.min_leaf, d.max_leaf):
                owner = log.header_of_leaf(leaf)
                if owner is not None:
                    suspects.add(owner.block_index)
            if table == "audit_leaves":
                add(
                    Kind.MODIFIED if header is not None else Kind.INSERTED,
                    f"audit_leaves rows of block {d.block_index} disagree with the archive "
                    f"({d.rows} rows, leaves {d.min_leaf}..{d.max_leaf})",
                    block_index=d.block_index,
                )
        for missing in sorted(set(expected_blocks) - seen):
            if table == "audit_logs" and log.expected_rows(missing) is None:
                continue  # every event of the block expired by policy
            suspects.add(missing)
            if table == "audit_leaves":
                add(Kind.DELETED, "the block's audit_leaves rows are missing", block_index=missing)

    for i, header in expected_blocks.items():
        stored = index.headers.get(i, [])
        text = header.canonical_bytes().decode()
        if not stored:
            add(Kind.DELETED, "the block's audit_blocks row is missing", block_index=i)
        elif any(s != text for s in stored) or len(stored) > 1:
            add(Kind.MODIFIED, "the audit_blocks row differs from the archived header", block_index=i)
    for i in sorted(set(index.headers) - set(expected_blocks)):
        add(Kind.INSERTED, "an audit_blocks row for a block the archive has not committed", block_index=i)

    for size in log.checkpoints:
        if not index.checkpoints.get(size):
            add(Kind.DELETED, f"the checkpoint at size {size} is missing from audit_checkpoints")
    for size, notes in sorted(index.checkpoints.items()):
        for note in notes:
            try:
                checkpoint = open_checkpoint(note, verifier, origin=origin)
            except VerificationError as exc:
                add(Kind.BAD_SIGNATURE, f"audit_checkpoints row at size {size}: {exc}")
                continue
            archived = log.checkpoints.get(size)
            if checkpoint.size != size:
                add(Kind.FORKED, f"audit_checkpoints row at size {size} holds a checkpoint of size {checkpoint.size}")
            elif archived is not None and archived.root != checkpoint.root:
                add(Kind.FORKED, f"validly signed checkpoint at size {size} disagrees with the archive's root")
            elif archived is None and size > committed:
                found.append(
                    Finding(
                        Store.ARCHIVE,
                        Kind.DELETED,
                        log.log_id,
                        f"ClickHouse holds a validly signed checkpoint at size {size}; the archive's verified "
                        f"head is {committed}: the archive lost its newest objects (tail truncation)",
                    )
                )
    newest_indexed = max(index.checkpoints, default=0)
    if committed and newest_indexed < committed and log.checkpoints:
        add(
            Kind.ROLLED_BACK,
            f"ClickHouse's newest checkpoint is at size {newest_indexed}, the archive's at {committed}",
        )
    return found, suspects, extra_ranges
