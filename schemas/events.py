"""Audit events: validation against the one JSON Schema, normalisation, and the canonical form.

`schemas/audit_event.schema.json` is the source of truth; it is compiled once at import.

    event = parse_event(raw_bytes)              # EventValidationError names field, value, rule
    leaf_bytes = canonical_entry(event, keys, policy)   # what the log stores and hashes:
    # protect_event (PII replaced by sealed values), the retention stamp, then RFC 8785 bytes

The canonical document keeps every non-PII field where producers put it, drops the PII
plaintext, and carries the sealed values under "pii", keyed by field path::

    {"action": "...", "actor": {"id": "u_1", "type": "USER"}, ...,
     "pii": {"actor.email": {"ct": "...", "kh": "...", "kid": "..."}},
     "retention": {"class": "security", "until": "2033-05-01T09:00:00.000Z"}, "schema_version": 1}
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson

from transforms.errors import AuditlogError, CanonicalizationError
from transforms.jcs import canonicalize
from transforms.pii import SubjectKeys, erased_value, seal
from transforms.retention import RETENTION_FIELD, RetentionPolicy
from transforms.tiles import MAX_ENTRY_BYTES

SCHEMA_PATH = Path(__file__).with_name("audit_event.schema.json")
SCHEMA_VERSION = 1
MAX_RECORD_BYTES = 256 * 1024
MAX_JSON_DEPTH = 1024  # orjson's own limit: records read the same on its path and json's


MISSING = object()


class EventValidationError(AuditlogError, ValueError):
    """An event does not follow the schema: which field, what value, which rule."""

    def __init__(self, field: str, value: Any, rule: str, event_id: str | None = None) -> None:
        self.field = field
        self.value = value
        self.rule = rule
        self.event_id = event_id
        shown = repr(value)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        who = f"event {event_id}" if event_id else "event"
        what = field if value is MISSING else f"{field} {shown}"
        super().__init__(f"{who} rejected: {what} {rule}")


@cache
def load_schema() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return result


MAX_METADATA_BYTES: int = load_schema()["properties"]["metadata"]["x-max-canonical-bytes"]
"""The schema's cap on metadata in canonical form: 48 KiB, so that every valid event's entry fits
the 16-bit length of a tlog-tiles entry bundle (`MAX_ENTRY_BYTES`; docs/design.md §1)."""


@cache
def _validator() -> Any:
    return fastjsonschema.compile(load_schema())


def _pii_paths(schema: dict[str, Any], prefix: str = "") -> Iterable[str]:
    for name, prop in schema.get("properties", {}).items():
        path = f"{prefix}{name}"
        if prop.get("x-pii"):
            yield path
        yield from _pii_paths(prop, path + ".")


DEFAULT_PII_FIELDS: tuple[str, ...] = tuple(_pii_paths(load_schema()))


_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGIT_RUN = b"0" * 20


def loads_json(text: str, utf8: bytes | None = None) -> Any:
    r"""json.loads, twice as fast through orjson; raises json.JSONDecodeError.

    orjson turns an integer beyond 64 bits into a float, so text with a run of 20 digits is read
    by json, which keeps the integer (and canonical JSON then refuses it beyond 2**53). The run is
    found by mapping every digit to 0 and searching for twenty of them: 0.6 µs for a 500-byte
    event, where the regular expression `\d{20}` took 6.3, three times orjson's parse itself.
    `utf8` is the text's UTF-8 bytes when the caller has them, so they are not encoded again.
    """
    raw = utf8 if utf8 is not None else text.encode("utf-8", "surrogatepass")
    if _LONG_DIGIT_RUN in raw.translate(_DIGITS_TO_ZERO):
        return _loads_exact(text)
    return orjson.loads(text)


def _loads_exact(text: str) -> Any:
    """json.loads held to what orjson refuses: nesting beyond its depth and lone surrogates.

    Both are JSON errors here, as they are to orjson, so a record reads the same on either path.
    """
    try:
        obj = json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError(f"nested deeper than {MAX_JSON_DEPTH} levels", text, 0) from None
    _check_unicode(obj, text)  # the slow path is rare (20-digit runs): check every string
    return obj


def _check_unicode(obj: Any, text: str) -> None:
    """Raises JSONDecodeError for a string holding a lone surrogate (an escape such as backslash-ud800)."""
    stack: list[tuple[Any, int]] = [(obj, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise json.JSONDecodeError(f"nested deeper than {MAX_JSON_DEPTH} levels", text, 0)
        if isinstance(node, dict):
            stack.extend((item, depth + 1) for pair in node.items() for item in pair)
        elif isinstance(node, list):
            stack.extend((item, depth + 1) for item in node)
        elif isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError as exc:
                bad = node[exc.start]
                raise json.JSONDecodeError(
                    f"lone surrogate \\u{ord(bad):04x} in a string (not valid Unicode)", text, 0
                ) from None


def parse_event(raw: bytes) -> dict[str, Any]:
    """Decodes one Kafka record value and validates it; returns the normalised event."""
    if len(raw) > MAX_RECORD_BYTES:
        raise EventValidationError("record", f"<{len(raw)} bytes>", f"is larger than {MAX_RECORD_BYTES} bytes")
    try:
        obj = loads_json(raw.decode("utf-8"), raw)
    except UnicodeDecodeError as exc:
        raise EventValidationError("record", raw[:40], f"is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:  # orjson's error is a subclass
        raise EventValidationError("record", raw[:40], f"is not JSON ({exc.msg} at {exc.pos})") from None
    return validate_event(obj)


def validate_event(obj: Any) -> dict[str, Any]:
    """Validates a decoded event against the schema and normalises it (a new dict)."""
    event_id = obj.get("event_id") if isinstance(obj, dict) else None
    event_id = event_id if isinstance(event_id, str) else None
    try:
        _validator()(obj)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise _schema_error(exc, event_id) from None
    if "schema_version" in obj and type(obj["schema_version"]) is not int:
        # JSON Schema's const compares as Python does, where True == 1; the schema means the number.
        raise EventValidationError(
            "schema_version", obj["schema_version"], f"must be the number {SCHEMA_VERSION}", event_id
        )
    actor_id = obj["actor"]["id"]
    if not actor_id.isprintable():
        # The PII subject: it names keys in the key store (PostgreSQL refuses NUL in text).
        bad = next(c for c in actor_id if not c.isprintable())
        raise EventValidationError(
            "actor.id", actor_id, f"holds the control character U+{ord(bad):04X}; send printable text", event_id
        )
    event = dict(obj)
    event["occurred_at"] = normalize_time(obj["occurred_at"], event_id)
    event["schema_version"] = SCHEMA_VERSION
    if "metadata" in event:
        try:
            size = len(canonicalize(event["metadata"]))
        except CanonicalizationError as exc:
            raise EventValidationError("metadata", "<object>", str(exc), event_id) from None
        except RecursionError:
            raise EventValidationError(
                "metadata", "<object>", "is nested too deeply; flatten it (a few levels are plenty)", event_id
            ) from None
        if size > MAX_METADATA_BYTES:
            raise EventValidationError(
                "metadata", f"<{size} bytes>", f"is larger than {MAX_METADATA_BYTES} bytes", event_id
            )
    return event


def _schema_error(exc: Any, event_id: str | None) -> EventValidationError:
    """Turns fastjsonschema's error into one that names the field, the value and the rule."""
    path = exc.name[len("data") :].lstrip(".")
    prefix = path + "." if path else ""
    value = exc.value
    if exc.rule == "required" and isinstance(value, dict):
        missing = [name for name in exc.rule_definition if name not in value]
        return EventValidationError(prefix + missing[0], MISSING, "is required but missing", event_id)
    if exc.rule == "additionalProperties" and isinstance(value, dict):
        allowed = exc.definition.get("properties", {})
        extra = sorted(name for name in value if name not in allowed)
        return EventValidationError(
            prefix + extra[0],
            value[extra[0]],
            f"is not a known field (allowed: {', '.join(allowed)})",
            event_id,
        )
    rule = exc.message[len(exc.name) :].strip() if exc.message.startswith(exc.name) else exc.message
    hint = exc.definition.get("x-hint") if isinstance(exc.definition, dict) else None
    if hint and exc.rule == "pattern":
        rule = f"is not {hint}"
    return EventValidationError(path or "event", value, rule, event_id)


def normalize_time(text: str, event_id: str | None = None) -> str:
    """Returns an ISO-8601 time as UTC `YYYY-MM-DDTHH:MM:SS.mmmZ` (fractions beyond ms truncated)."""
    if len(text) == 24 and text[19] == "." and text[23] == "Z":
        # Already canonical (what the SDK and generators send): only check that the date exists.
        try:
            datetime.fromisoformat(text[:23])
            return text
        except ValueError:
            pass  # the general path below reports it
    head, frac, tz = text, "", ""
    if text.endswith("Z"):
        head, tz = text[:-1], "+00:00"
    else:
        head, tz = text[:-6], text[-6:]
    if "." in head:
        head, frac = head.split(".", 1)
    try:
        parsed = datetime.fromisoformat(head + tz)
    except ValueError as exc:
        raise EventValidationError("occurred_at", text, f"is not a valid ISO-8601 time ({exc})", event_id) from None
    micro = int((frac + "000000")[:6]) if frac else 0
    try:
        utc = parsed.replace(microsecond=micro).astimezone(UTC)
    except OverflowError:
        raise EventValidationError(
            "occurred_at", text, "is outside the years 0001-9999 once converted to UTC", event_id
        ) from None
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _get_path(obj: dict[str, Any], path: str) -> Any:
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _pop_path(obj: dict[str, Any], path: str) -> None:
    *parents, last = path.split(".")
    node = obj
    for part in parents:
        node = node[part]
    node.pop(last, None)


def pii_subject(event: dict[str, Any]) -> str:
    """The subject whose keys seal an event's PII: the actor."""
    return str(event["actor"]["id"])


def protect_event(
    event: dict[str, Any], keys: SubjectKeys | None, pii_fields: Iterable[str] = DEFAULT_PII_FIELDS
) -> dict[str, Any]:
    """Returns the canonical document: PII plaintext removed, sealed values under "pii".

    `keys` None means the subject was erased: each PII value present is replaced by
    `{"erased": true}` (transforms.pii.erased_value), the same bytes on every replay.
    """
    doc = dict(event)
    copied: set[str] = set()
    sealed: dict[str, Any] = {}
    for path in pii_fields:
        value = _get_path(event, path)
        if value is None:
            continue
        sealed[path] = seal(keys, event["tenant_id"], event["event_id"], path, str(value)) if keys else erased_value()
        parent = path.rpartition(".")[0]
        if parent and parent not in copied:
            # Copy only the objects that lose a field; the event itself stays untouched.
            node = doc
            for part in parent.split("."):
                node[part] = dict(node[part])
                node = node[part]
            copied.add(parent)
        _pop_path(doc, path)
    if sealed:
        doc["pii"] = sealed
    return doc


def canonical_bytes(document: dict[str, Any]) -> bytes:
    """The RFC 8785 bytes of a canonical document: exactly what is stored and hashed."""
    return canonicalize(document)


def canonical_entry(
    event: dict[str, Any],
    keys: SubjectKeys | None,
    policy: RetentionPolicy,
    pii_fields: Iterable[str] = DEFAULT_PII_FIELDS,
) -> bytes:
    """The bytes a log stores and hashes for a validated event: PII sealed, retention stamped, RFC 8785.

    `keys` must be the subject keys of (tenant, `pii_subject(event)`), or None when that subject was
    erased (its PII is then marked erased, see `protect_event`); `policy` gives the event's
    retention class and end (transforms/retention.py), which the leaf hash then covers.

    Raises EventValidationError when the bytes would be longer than `MAX_ENTRY_BYTES` (65,535), the
    most a C2SP tlog-tiles entry bundle holds (docs/design.md §13): such an event is refused, not
    logged in a form tlog clients cannot read. The length depends on the event alone (sealing adds
    a fixed amount per byte), so every replay refuses the same events.
    """
    document = protect_event(event, keys, pii_fields)
    document[RETENTION_FIELD] = policy.stamp(event["action"], event["occurred_at"])
    entry = canonical_bytes(document)
    if len(entry) > MAX_ENTRY_BYTES:
        raise EventValidationError(
            "event",
            f"<{len(entry)} bytes in canonical form>",
            f"is larger than {MAX_ENTRY_BYTES} bytes, the most a tlog-tiles entry bundle holds; send less metadata",
            event.get("event_id"),
        )
    return entry
