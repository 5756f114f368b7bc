"""ClickHouse rows derived from canonical bytes: the ingest sink and `rebuild` use this one function.

A row is a function of an entry's canonical bytes and its place in the log, so ClickHouse can
always be rebuilt from the WORM archive alone.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from transforms.blocks import BlockHeader
from transforms.jcs import canonicalize
from transforms.merkle import leaf_hash

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
    canonical: bytes, log_id: str, leaf_index: int, block_index: int, block_hash: bytes
) -> tuple[Any, ...]:
    """Returns the audit_logs row (in AUDIT_LOG_COLUMNS order) of one canonical entry."""
    doc = json.loads(canonical)
    actor = doc["actor"]
    email = doc.get("pii", {}).get("actor.email")
    return (
        doc["tenant_id"],
        doc["event_id"],
        parse_time(doc["occurred_at"]),
        actor["id"],
        actor["type"],
        email["kh"] if email else "",
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
    )


def block_rows(
    header: BlockHeader, entries: list[bytes]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], tuple[Any, ...]]:
    """Returns (audit_logs rows, audit_leaves rows, the audit_blocks row) of one sealed block."""
    block_hash = header.hash()
    logs = [
        audit_log_row(c, header.log_id, header.first_leaf_index + i, header.block_index, block_hash)
        for i, c in enumerate(entries)
    ]
    leaves = [(r[12], r[13], r[14], r[0], r[1], header.block_index) for r in logs]
    block = (
        header.log_id,
        header.block_index,
        header.first_leaf_index,
        header.leaf_count,
        header.tree_size,
        header.tree_root,
        header.block_root,
        header.prev_block_hash,
        block_hash,
        parse_time(header.min_event_time),
        parse_time(header.max_event_time),
        header.canonical_bytes().decode(),
    )
    return logs, leaves, block
