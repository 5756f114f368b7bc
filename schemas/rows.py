"""ClickHouse rows derived from canonical bytes: the ingest sink and `rebuild` use this one function.

A row is a function of an entry's canonical bytes and its place in the log, so ClickHouse can
always be rebuilt from the WORM archive alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from transforms.blocks import BlockHeader
from transforms.jcs import canonicalize
from transforms.merkle import leaf_hash
from transforms.retention import LegalHold

ROW_FOREVER = "2299-12-31T23:59:59.999Z"
"""The latest time a DateTime64 column holds: the retain_until of entries kept forever (or longer)."""
NO_HOLD = datetime(1970, 1, 1, tzinfo=UTC)

AUDIT_LOG_COLUMNS = (
    "tenant_id",
    "event_id",
    "occurred_at",
    "actor_id",
    "actor_type",
    "actor_email_hash",
    "action",
    "resource_id",
    "resource_type",
    "result",
    "request_id",
    "metadata",
    "log_id",
    "leaf_index",
    "leaf_hash",
    "block_index",
    "block_hash",
    "canonical",
    "retention_class",
    "retain_until",
    "hold_until",
)
LEAF_COLUMNS = ("log_id", "leaf_index", "leaf_hash", "tenant_id", "event_id", "block_index")
BLOCK_COLUMNS = (
    "log_id",
    "block_index",
    "first_leaf_index",
    "leaf_count",
    "tree_size",
    "tree_root",
    "block_root",
    "prev_block_hash",
    "block_hash",
    "min_event_time",
    "max_event_time",
    "header",
)
CHECKPOINT_COLUMNS = ("log_id", "tree_size", "root", "block_index", "note")


def parse_time(text: str) -> datetime:
    """Parses the canonical `YYYY-MM-DDTHH:MM:SS.mmmZ` form."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def audit_log_row(
    canonical: bytes,
    log_id: str,
    leaf_index: int,
    block_index: int,
    block_hash: bytes,
    holds: Sequence[LegalHold] = (),
) -> tuple[Any, ...]:
    """Returns the audit_logs row (in AUDIT_LOG_COLUMNS order) of one canonical entry.

    `holds` are the legal holds active now: a row they cover gets the latest of their ends as
    `hold_until`, which keeps ClickHouse's TTL from deleting it (see `auditlog hold`).
    """
    doc = orjson.loads(canonical)
    actor = doc["actor"]
    email = doc.get("pii", {}).get("actor.email")
    retention = doc.get("retention") or {}
    until = min(retention.get("until") or ROW_FOREVER, ROW_FOREVER)
    # A hold keeps what had not yet expired when it was placed (transforms.retention.retained).
    held = [h.until for h in holds if h.covers(doc["tenant_id"], actor["id"]) and until > h.placed_at]
    return (
        doc["tenant_id"],
        doc["event_id"],
        parse_time(doc["occurred_at"]),
        actor["id"],
        actor["type"],
        email.get("kh", "") if email else "",
        doc["action"],
        doc["resource"]["id"],
        doc["resource"]["type"],
        doc["result"],
        doc.get("request_id", ""),
        canonicalize(doc.get("metadata", {})).decode(),
        log_id,
        leaf_index,
        leaf_hash(canonical),
        block_index,
        block_hash,
        canonical.decode(),
        retention.get("class", ""),
        parse_time(until),
        parse_time(max(held)) if held else NO_HOLD,
    )


def block_rows(
    header: BlockHeader, entries: list[bytes], holds: Sequence[LegalHold] = ()
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], tuple[Any, ...]]:
    """Returns (audit_logs rows, audit_leaves rows, the audit_blocks row) of one sealed block."""
    block_hash = header.hash()
    logs = [
        audit_log_row(c, header.log_id, header.first_leaf_index + i, header.block_index, block_hash, holds)
        for i, c in enumerate(entries)
    ]
    leaves = [(r[12], r[13], r[14], r[0], r[1], header.block_index) for r in logs]
    return logs, leaves, block_row(header)


def expired_block_rows(header: BlockHeader, leaf_hashes: list[bytes]) -> tuple[list[tuple[Any, ...]], tuple[Any, ...]]:
    """(audit_leaves rows, the audit_blocks row) of a block whose events expired: leaf hashes only."""
    leaves = [
        (header.log_id, header.first_leaf_index + i, h, "", "", header.block_index) for i, h in enumerate(leaf_hashes)
    ]
    return leaves, block_row(header)


def block_row(header: BlockHeader) -> tuple[Any, ...]:
    """The audit_blocks row of a block header."""
    return (
        header.log_id,
        header.block_index,
        header.first_leaf_index,
        header.leaf_count,
        header.tree_size,
        header.tree_root,
        header.block_root,
        header.prev_block_hash,
        header.hash(),
        parse_time(header.min_event_time),
        parse_time(header.max_event_time),
        header.canonical_bytes().decode(),
    )
