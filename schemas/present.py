"""How an indexed event is shown to people: the seed's record shape, with PII opened or marked.

The query API, the Compliance UI and exports all present events through `present_event`, so an
erased subject looks the same everywhere: its sealed values show as `ERASED`, and its lookup
hashes stay (they no longer match anything once the key is gone).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from transforms.pii import SealError, SubjectKeys, is_erased_value, unseal

ERASED = "[erased]"
"""Shown instead of PII whose subject's keys were destroyed (GDPR erasure)."""
SEALED = "[sealed]"
"""Shown instead of PII when the caller may not, or cannot, open it."""

FLAT_COLUMNS = (
    "tenant_id",
    "event_id",
    "occurred_at",
    "actor_id",
    "actor_type",
    "actor_email_hash",
    "actor_email",
    "actor_name",
    "action",
    "resource_type",
    "resource_id",
    "result",
    "client_ip",
    "user_agent",
    "request_id",
    "metadata",
    "log_id",
    "leaf_index",
    "leaf_hash",
    "block_index",
    "block_hash",
    "retention_class",
    "retain_until",
)
"""Columns of CSV and Parquet exports (JSON Lines keeps the nested record)."""


class KeyLookup(Protocol):
    def get(self, tenant_id: str, subject_id: str) -> SubjectKeys | None: ...

    def is_erased(self, tenant_id: str, subject_id: str) -> bool: ...

    def subjects(self, tenant_id: str) -> list[str]: ...


def _open(doc: dict[str, Any], field: str, keys: KeyLookup | None) -> str | None:
    sealed = doc.get("pii", {}).get(field)
    if sealed is None:
        return None
    if is_erased_value(sealed):  # logged after its subject was erased: never sealed
        return ERASED
    if keys is None:
        return SEALED
    tenant, subject = doc["tenant_id"], str(doc["actor"]["id"])
    subject_keys = keys.get(tenant, subject)
    if subject_keys is None:
        return ERASED if keys.is_erased(tenant, subject) else SEALED
    try:
        return unseal(subject_keys, tenant, doc["event_id"], field, sealed)
    except SealError:
        return SEALED


def present_event(canonical: bytes, place: Mapping[str, Any], keys: KeyLookup | None = None) -> dict[str, Any]:
    """Returns the event's record: the seed's response fields, its place in the log, PII opened with `keys`.

    `place` holds log_id, leaf_index, block_index and leaf_hash/block_hash (bytes or hex).
    Without `keys` PII shows as SEALED; for an erased subject as ERASED.
    """
    doc = json.loads(canonical)
    actor = doc["actor"]
    email = doc.get("pii", {}).get("actor.email")
    return {
        "event_id": doc["event_id"],
        "tenant_id": doc["tenant_id"],
        "actor": {
            "id": actor["id"],
            "type": actor["type"],
            "email_hash": email.get("kh") if email else None,
            "email": _open(doc, "actor.email", keys),
            "name": _open(doc, "actor.name", keys),
        },
        "action": doc["action"],
        "resource": {"id": doc["resource"]["id"], "type": doc["resource"]["type"]},
        "result": doc["result"],
        "client_ip": _open(doc, "client_ip", keys),
        "user_agent": _open(doc, "user_agent", keys),
        "occurred_at": doc["occurred_at"],
        "request_id": doc.get("request_id"),
        "metadata": doc.get("metadata", {}),
        "log_id": place["log_id"],
        "leaf_index": int(place["leaf_index"]),
        "leaf_hash": _hex(place.get("leaf_hash")),
        "block_index": int(place["block_index"]),
        "block_hash": _hex(place.get("block_hash")),
        "retention": doc.get("retention"),  # {"class", "until"}; None for events from before retention classes
    }


def _hex(value: Any) -> str | None:
    if value is None:
        return None
    return value.hex() if isinstance(value, bytes | bytearray) else str(value).lower()


def flatten(record: Mapping[str, Any]) -> dict[str, Any]:
    """Returns a presented record as one flat row in FLAT_COLUMNS order (metadata as JSON text)."""
    actor, resource = record["actor"], record["resource"]
    row = {
        **{k: record[k] for k in ("tenant_id", "event_id", "occurred_at", "action", "result", "client_ip")},
        "actor_id": actor["id"],
        "actor_type": actor["type"],
        "actor_email_hash": actor["email_hash"],
        "actor_email": actor["email"],
        "actor_name": actor["name"],
        "resource_type": resource["type"],
        "resource_id": resource["id"],
        "user_agent": record["user_agent"],
        "request_id": record["request_id"],
        "metadata": json.dumps(record["metadata"], sort_keys=True, separators=(",", ":")),
        **{k: record[k] for k in ("log_id", "leaf_index", "leaf_hash", "block_index", "block_hash")},
        "retention_class": (record.get("retention") or {}).get("class"),
        "retain_until": (record.get("retention") or {}).get("until"),
    }
    return {c: row[c] for c in FLAT_COLUMNS}
