"""The compiled event core (transforms/native, module `auditlog_native`), when it is built.

A faster path for `parse_event` + `canonical_entry` + `leaf_hash`, never a second definition:
the core reads the same schema file (`schemas/audit_event.schema.json`) and takes every name and
limit it needs from the Python modules that own them, and it *refers* every record it cannot
prove it handles byte for byte as the reference does (anything invalid, unusual or near a
dead-letter case) back to Python, which stays the one source of dead-letter reasons
(tests/unit/test_native_core.py holds the two together).

    core = event_core("auto")            # None: use the Python reference
    parsed = core.parse(value)           # None: refer the record to Python
    entry, leaf = core.entry(parsed, (enc_key, mac_key, key_id) or None, retention_class, until)

`AUDITLOG_CORE` (schemas/settings.py) chooses: `auto` uses the core when it is built, `native`
insists on it, `python` never uses it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from schemas.events import (
    DEFAULT_PII_FIELDS,
    MAX_METADATA_BYTES,
    MAX_RECORD_BYTES,
    SCHEMA_PATH,
    SCHEMA_VERSION,
)
from schemas.reserved import RESERVED_ACTION_PREFIX, RESERVED_ACTOR_PREFIX
from transforms import pii
from transforms.errors import AuditlogError
from transforms.retention import RETENTION_FIELD

CORES = ("auto", "native", "python")


class NativeCoreUnavailable(AuditlogError):  # noqa: N818 - names the situation, as SubjectErased does
    """AUDITLOG_CORE=native, but the compiled core is not built or does not load this schema."""


@cache
def _load(pii_fields: tuple[str, ...]) -> tuple[Any, str]:
    """(the core, "") or (None, why it is unavailable)."""
    try:
        import auditlog_native  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError as exc:
        return None, f"the compiled core is not installed ({exc}); `make setup` builds it"
    try:
        core = auditlog_native.Core(
            SCHEMA_PATH.read_text(encoding="utf-8"),
            pii_fields=list(pii_fields),
            names={
                "tenant": "tenant_id",
                "event": "event_id",
                "subject": "actor.id",  # schemas.events.pii_subject
                "action": "action",
                "time": "occurred_at",
                "version": "schema_version",
                "metadata": "metadata",
                "retention": RETENTION_FIELD,
                "pii": "pii",
            },
            version=SCHEMA_VERSION,
            metadata_limit=MAX_METADATA_BYTES,
            record_limit=MAX_RECORD_BYTES,
            reserved=[("action", RESERVED_ACTION_PREFIX), ("actor.id", RESERVED_ACTOR_PREFIX)],
            nonce_person=pii._NONCE_PERSON,
            lookup_person=pii._LOOKUP_PERSON,
        )
    except ValueError as exc:
        return None, f"the compiled core does not take this schema: {exc}"
    return core, ""


def event_core(choice: str = "auto", pii_fields: tuple[str, ...] = DEFAULT_PII_FIELDS) -> Any:
    """The compiled core for `choice` (auto, native or python), or None for the Python reference.

    Raises NativeCoreUnavailable when `choice` is `native` and the core cannot be used.
    """
    if choice not in CORES:
        raise ValueError(f"event core {choice!r} is not one of {', '.join(CORES)}")
    if choice == "python":
        return None
    core, why = _load(tuple(pii_fields))
    if core is None and choice == "native":
        raise NativeCoreUnavailable(f"AUDITLOG_CORE=native, but {why}")
    return core


@cache
def tile_levels() -> Callable[[bytes], list[list[bytes]]]:
    """The compiled `tile_levels` (a proof's hashing inside a tile) when the core is built, else the reference.

    Both give the same lists for every tile (tests/unit/test_native_core.py); the compiled one is
    ~4× faster, which is most of what a proof from cached tiles costs besides HTTP.
    """
    try:
        import auditlog_native  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        from transforms.tiles import tile_levels as reference

        return reference
    native: Callable[[bytes], list[list[bytes]]] = auditlog_native.tile_levels
    return native


def index_columns(choice: str = "auto") -> Callable[[list[bytes]], dict[str, Any] | None] | None:
    """The compiled `index_columns` (the indexer's columns of canonical entries) for `choice`, or None.

    None means build the rows with the reference, schemas.rows.audit_log_row;
    tests/unit/test_index_arrow.py holds the two equal. Raises NativeCoreUnavailable when
    `choice` is `native` and the core is not built.
    """
    if choice not in CORES:
        raise ValueError(f"event core {choice!r} is not one of {', '.join(CORES)}")
    if choice == "python":
        return None
    try:
        import auditlog_native  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError as exc:
        if choice == "native":
            raise NativeCoreUnavailable(
                f"AUDITLOG_CORE=native, but the compiled core is not installed ({exc})"
            ) from None
        return None
    native: Callable[[list[bytes]], dict[str, Any] | None] = auditlog_native.index_columns
    return native
