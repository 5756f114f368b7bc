"""The event schema: validation errors name field, value and rule; canonical form seals PII."""

from __future__ import annotations

import json

import pytest

from schemas.events import (
    DEFAULT_PII_FIELDS,
    MAX_METADATA_BYTES,
    EventValidationError,
    canonical_bytes,
    canonical_entry,
    loads_json,
    parse_event,
    protect_event,
    validate_event,
)
from schemas.samples import EventGenerator, to_record
from transforms.pii import SealError, SubjectKeys, lookup_hash, unseal
from transforms.tiles import MAX_ENTRY_BYTES

KEYS = SubjectKeys("k1", b"\x01" * 32, b"\x02" * 32)
EVENT = {
    "event_id": "evt_981a28cb20c",
    "tenant_id": "t_9823",
    "actor": {"id": "u_2913", "type": "USER", "email": "Ada@Example.com", "name": "Ada Lovelace"},
    "action": "ROLE_UPGRADE",
    "resource": {"id": "res_admin_role", "type": "ROLE"},
    "result": "SUCCESS",
    "client_ip": "198.51.100.42",
    "user_agent": "curl/8.9.1",
    "request_id": "req_1",
    "metadata": {"plan": "pro", "seats": 12.0},
    "occurred_at": "2026-05-22T19:44:00.1234+02:00",
}


def test_valid_event_is_normalised():
    event = validate_event(EVENT)
    assert event["occurred_at"] == "2026-05-22T17:44:00.123Z"
    assert event["schema_version"] == 1


def test_pii_fields_are_marked_in_the_schema():
    assert set(DEFAULT_PII_FIELDS) == {"actor.email", "actor.name", "client_ip", "user_agent"}


def test_canonical_form_has_no_plaintext_pii_and_is_deterministic():
    doc = protect_event(validate_event(EVENT), KEYS)
    raw = canonical_bytes(doc)
    for secret in ("Ada@Example.com", "Ada Lovelace", "198.51.100.42", "curl/8.9.1"):
        assert secret.encode() not in raw
    assert raw == canonical_bytes(protect_event(validate_event(EVENT), KEYS))
    assert raw.startswith(b'{"action":"ROLE_UPGRADE","actor":{"id":"u_2913","type":"USER"}')
    assert b'"seats":12,' in raw or b'"seats":12}' in raw
    sealed = json.loads(raw)["pii"]["actor.email"]
    assert unseal(KEYS, "t_9823", "evt_981a28cb20c", "actor.email", sealed) == "Ada@Example.com"
    assert sealed["kh"] == lookup_hash(KEYS, "actor.email", "ada@example.COM")


def test_sealed_value_does_not_open_with_another_subjects_key_or_event():
    sealed = protect_event(validate_event(EVENT), KEYS)["pii"]["actor.email"]
    other = SubjectKeys("k2", b"\x03" * 32, b"\x02" * 32)
    with pytest.raises(SealError):
        unseal(other, "t_9823", "evt_981a28cb20c", "actor.email", sealed)
    with pytest.raises(SealError):
        unseal(KEYS, "t_9823", "evt_other", "actor.email", sealed)


def _without(key):
    return {k: v for k, v in EVENT.items() if k != key}


@pytest.mark.parametrize(
    ("record", "field", "fragment"),
    [
        (b"{not json", "record", "is not JSON"),
        (b"\xff\xfe", "record", "not UTF-8"),
        (json.dumps(_without("action")).encode(), "action", "is required"),
        (json.dumps({**EVENT, "result": "MAYBE"}).encode(), "result", "must be one of"),
        (
            json.dumps({**EVENT, "actor": {"id": "u", "type": "ROBOT"}}).encode(),
            "actor.type",
            "must be one of",
        ),
        (json.dumps({**EVENT, "event_id": 42}).encode(), "event_id", "must be string"),
        (json.dumps({**EVENT, "occurred_at": "2026-13-01T00:00:00Z"}).encode(), "occurred_at", "month"),
        (json.dumps({**EVENT, "occurred_at": "yesterday"}).encode(), "occurred_at", "is not an ISO-8601"),
        (
            json.dumps({**EVENT, "occurred_at": "2026-05-22T17:44:00"}).encode(),
            "occurred_at",
            "is not an ISO-8601 time with Z",
        ),
        (json.dumps({**EVENT, "metadata": {"blob": "x" * 50_000}}).encode(), "metadata", "larger than 49152"),
        (json.dumps({**EVENT, "metadata": {"n": 2**60}}).encode(), "metadata", "2**53"),
        (json.dumps({**EVENT, "surprise": 1}).encode(), "surprise", "not a known field"),
        (json.dumps({**EVENT, "metadata": []}).encode(), "metadata", "must be object"),
        (b"x" * 300_000, "record", "larger than"),
    ],
)
def test_bad_records_name_field_value_and_rule(record, field, fragment):
    with pytest.raises(EventValidationError) as info:
        parse_event(record)
    assert info.value.field == field
    assert fragment in str(info.value)


def test_error_message_names_the_event():
    with pytest.raises(EventValidationError, match=r"event evt_981a28cb20c rejected: result 'MAYBE'"):
        validate_event({**EVENT, "result": "MAYBE"})


def test_generated_events_are_valid_and_reproducible():
    a = [to_record(e) for _, e in zip(range(300), EventGenerator(seed=7), strict=False)]
    b = [to_record(e) for _, e in zip(range(300), EventGenerator(seed=7), strict=False)]
    assert a == b
    for _, value in a:
        parse_event(value)


def test_integers_beyond_64_bits_are_refused_not_rounded():
    # orjson would read this as a float; the parser falls back to json and canonical JSON refuses it.
    raw = json.dumps({**EVENT, "metadata": {"n": 123456789012345678901234567890}}).encode()
    with pytest.raises(EventValidationError, match="metadata"):
        parse_event(raw)


@pytest.mark.parametrize("digits", [1, 18, 19, 20, 21, 30])
@pytest.mark.parametrize("sign", ["", "-"])
def test_loads_json_keeps_every_integer_exact(digits: int, sign: str):
    # Runs of every digit, as bytes and as text: the fast check must send each run of 20 or more
    # to json, which keeps the integer (orjson would round it to a float).
    number = sign + "".join(str((7 + i * 3) % 10) for i in range(digits)).lstrip("0")
    text = f'{{"a": [{number}, "{number}"], "b": {{"c": {number}}}}}'
    for parsed in (loads_json(text), loads_json(text, text.encode())):
        assert parsed == json.loads(text)
        assert type(parsed["a"][0]) is int and type(parsed["b"]["c"]) is int


def test_metadata_nested_too_deeply_is_a_validation_error_not_a_crash():
    nested: object = 1
    for _ in range(700):
        nested = [nested]
    raw = json.dumps({**EVENT, "metadata": {"deep": nested}}).encode()
    with pytest.raises(EventValidationError, match="nested too deeply"):
        parse_event(raw)


# The entry cap of a C2SP tlog-tiles entry bundle (docs/design.md §13).

_WIDE = "\U0001f600"  # one code point the schema counts once, four UTF-8 bytes
LARGEST_WITHOUT_METADATA = {
    "event_id": "e" * 128,
    "tenant_id": "t" * 64,
    "actor": {"id": '"' * 256, "type": "SYSTEM", "email": "a" * 100 + "@" + _WIDE * 219, "name": _WIDE * 256},
    "action": "A" * 128,
    "resource": {"id": "\x01" * 256, "type": "T" * 64},
    "result": "FAILURE",
    "client_ip": "a" * 45,
    "user_agent": _WIDE * 1024,
    "request_id": "\x01" * 128,
    "occurred_at": "2026-05-22T19:44:00.123456789+02:00",
}


def _entry(event, keys=KEYS):
    from schemas.retention import load_policy

    return canonical_entry(validate_event(event), keys, load_policy())


def test_entries_up_to_65535_bytes_are_logged_and_larger_ones_refused():
    """The bundle's cap, enforced where the entry is made. A valid event cannot reach it (its
    metadata is capped first, below), so the events here skip the metadata check."""
    from schemas.retention import load_policy

    def entry(blob: str) -> bytes:
        event = validate_event({**EVENT, "metadata": {}})
        event["metadata"] = {"blob": blob}  # past validation: longer than MAX_METADATA_BYTES allows
        return canonical_entry(event, KEYS, load_policy())

    base = len(entry(""))
    assert len(entry("x" * (MAX_ENTRY_BYTES - base))) == MAX_ENTRY_BYTES
    with pytest.raises(EventValidationError) as caught:
        entry("x" * (MAX_ENTRY_BYTES - base + 1))
    assert caught.value.field == "event" and caught.value.event_id == EVENT["event_id"]
    assert "65536 bytes in canonical form" in str(caught.value) and "larger than 65535 bytes" in str(caught.value)


def test_every_valid_event_fits_an_entry_bundle():
    """Every other field at its schema maximum, in the characters that encode longest (4-byte
    UTF-8, JCS escapes, sealed PII), and metadata at its cap (MAX_METADATA_BYTES, the schema's
    `x-max-canonical-bytes`): the entry is still within a bundle's 65,535 bytes, with room to spare."""
    assert MAX_METADATA_BYTES == 49_152
    keys = SubjectKeys("f" * 64, b"\x01" * 32, b"\x02" * 32)  # a key id longer than the stores' (16 hex)
    rest = len(_entry({**LARGEST_WITHOUT_METADATA, "metadata": {}}, keys))
    assert rest + MAX_METADATA_BYTES <= MAX_ENTRY_BYTES - 2_000, rest
    blob = "x" * (MAX_METADATA_BYTES - len('{"b":""}'))
    assert len(_entry({**LARGEST_WITHOUT_METADATA, "metadata": {"b": blob}}, keys)) <= MAX_ENTRY_BYTES
    with pytest.raises(EventValidationError, match="larger than 49152"):
        _entry({**LARGEST_WITHOUT_METADATA, "metadata": {"b": blob + "x"}}, keys)
