"""Hostile input through the ingest step: it never raises, and every record is accounted for.

The rule (pipelines/ingest_core.py): each record becomes a leaf, a counted duplicate or a dead
letter whose reason names what was wrong. Generated records cover random bytes, random JSON,
boundary and overflowing dates, deep nesting, lone surrogates, huge numbers, reserved names and
erased subjects; the property is checked against a plain count of the outcomes.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.ingest_core import (
    IngestOptions,
    LogCursor,
    LogSequencer,
    MemoryDedupe,
    SourceRecord,
)
from pipelines.io.keystore import InMemoryKeyStore
from schemas.reserved import SERVICE_SIG_HEADER, service_signature
from transforms.blocks import decode_block_object
from transforms.note import Signer

SIGNER = Signer.generate("auditlog.test")
OTHER = Signer.generate("auditlog.other")
TENANT = "t_1"
ERASED = "u_erased"
BIG = "123456789012345678901234567"  # 27 digits: json's exact path, beyond 2**53

BASE: dict[str, Any] = {
    "event_id": "evt_1",
    "tenant_id": TENANT,
    "actor": {"id": "u_1", "type": "USER", "email": "a@example.com", "name": "Ann"},
    "action": "user.login",
    "resource": {"id": "session_1", "type": "SESSION"},
    "result": "SUCCESS",
    "client_ip": "10.0.0.1",
    "occurred_at": "2026-05-01T00:00:00.000Z",
}

DATES = st.sampled_from(
    [
        "9999-12-31T23:59:59-01:00",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59.999Z",
        "0001-01-01T00:00:00Z",
        "2026-02-29T00:00:00Z",
        "2024-02-29T23:59:59.999999999+14:00",
        "2026-13-01T00:00:00Z",
        "2026-05-01T24:00:00Z",
        "2026-05-01T00:00:00+99:99",
        "2026-05-01T00:00:00",
        "9999-12-31T23:59:59+00:00",
    ]
)
TEXT_FIELDS = st.sampled_from(
    [("actor", "id"), ("actor", "name"), ("actor", "email"), ("resource", "id"), ("resource", "type"), ("action",)]
)


def _put(event: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    doc = json.loads(json.dumps(event))
    node = doc
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return doc


def _text(event: dict[str, Any]) -> str:
    return json.dumps(event, ensure_ascii=False)


@st.composite
def hostile_values(draw: st.DrawFn) -> tuple[bytes | None, bytes | None]:
    """(record value, service signature) of one hostile or ordinary record."""
    event = _put(BASE, ("event_id",), f"evt_{draw(st.integers(0, 40))}")
    kind = draw(
        st.sampled_from(
            [
                "valid",
                "bytes",
                "json",
                "date",
                "deep",
                "surrogate",
                "huge",
                "erased",
                "reserved",
                "signed",
                "forged",
                "bool_version",
                "null",
                "long",
                "control",
            ]
        )
    )
    sig = None
    if kind == "bytes":
        return draw(st.binary(max_size=300)), None
    if kind == "null":
        return None, None
    if kind == "json":
        value = draw(
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                max_leaves=20,
            )
        )
        return json.dumps(value).encode(), None
    if kind == "date":
        event["occurred_at"] = draw(DATES)
    elif kind == "deep":
        depth = draw(st.sampled_from([10, 600, 1025, 5000, 100_000]))
        text = _text(_put(event, ("request_id",), BIG[:20] if draw(st.booleans()) else "r"))
        nested = "[" * depth + "]" * depth
        return text[:-1].encode() + f', "metadata": {{"d": {nested}}}}}'.encode(), None
    elif kind == "surrogate":
        path = draw(TEXT_FIELDS)
        text = _text(_put(event, path, "SURROGATE"))
        text = text.replace("SURROGATE", draw(st.sampled_from(["\\ud800", "x\\udfff", "\\ud83d\\ude00"])))
        if draw(st.booleans()):
            text = text[:-1] + f', "metadata": {{"n": "{BIG}"}}}}'
        return text.encode(), None
    elif kind == "huge":
        number = draw(st.sampled_from([BIG, "-" + BIG, "1e400", "-1e400", BIG + ".5", "9007199254740993"]))
        text = _text(event)[:-1] + f', "metadata": {{"n": {number}}}}}'
        return text.encode(), None
    elif kind == "erased":
        event = _put(event, ("actor", "id"), ERASED)
    elif kind in ("reserved", "signed", "forged"):
        field = draw(st.sampled_from([("action",), ("actor", "id")]))
        event = _put(event, field, "audit_log.search" if field == ("action",) else "apikey:k1")
        value = _text(event).encode()
        if kind == "signed":
            sig = service_signature(SIGNER, value)
        elif kind == "forged":
            sig = service_signature(OTHER, value)
        return value, sig
    elif kind == "bool_version":
        event["schema_version"] = True
    elif kind == "control":
        event = _put(event, ("actor", "id"), "u" + draw(st.sampled_from(["\u0000", "\n", "\u200d", "\x7f"])))
    elif kind == "long":
        event = _put(event, draw(TEXT_FIELDS), "x" * draw(st.sampled_from([64, 65, 129, 257, 300_000])))
    return _text(event).encode(), sig


def _run(values: list[tuple[bytes | None, bytes | None]], block_size: int = 4) -> tuple[Any, list[Any], list[Any]]:
    keys = InMemoryKeyStore(key_seed=b"s" * 32)
    keys.destroy(TENANT, ERASED)
    options = IngestOptions(topic="t", origin_prefix="auditlog.test", block_size=block_size)
    sequencer = LogSequencer(options, keys, SIGNER)
    cursor, dedupe, outputs = LogCursor("t.p0"), MemoryDedupe(), []
    for offset, (value, sig) in enumerate(values):
        outputs += sequencer.step(cursor, dedupe, SourceRecord(0, offset, 0, None, value, sig))
    last = sequencer.seal(cursor)
    outputs += [("block", last)] if last else []
    assert keys.get(TENANT, ERASED) is None, "an erased subject got keys again"
    blocks = [item for kind, item in outputs if kind == "block"]
    letters = [item for kind, item in outputs if kind == "dlq"]
    return sequencer.counters, blocks, letters


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(hostile_values(), min_size=1, max_size=25))
def test_the_step_never_raises_and_accounts_for_every_record(values):
    counters, blocks, letters = _run(values)
    assert counters.records() == len(values)
    assert counters.dead_letters == len(letters)
    assert len({letter.offset for letter in letters}) == len(letters)
    for letter in letters:
        assert letter.field and letter.reason and "rejected" in letter.reason, letter
    entries = [e for b in blocks for e in decode_block_object(b.block_object)[1]]
    assert len(entries) == counters.accepted
    for entry in entries:
        doc = json.loads(entry)
        assert doc["tenant_id"] == TENANT
        if doc["actor"]["id"] == ERASED:
            assert all(v == {"erased": True} for v in doc["pii"].values())
        reserved = doc["action"].startswith("audit_log.") or doc["actor"]["id"].startswith("apikey:")
        assert not reserved or doc["event_id"] in _signed_event_ids(values)
    # Deterministic: the same records give the same bytes and the same letters.
    again = _run(values)
    assert [b.block_object for b in again[1]] == [b.block_object for b in blocks]
    assert [letter.to_json() for letter in again[2]] == [letter.to_json() for letter in letters]


def _signed_event_ids(values: list[tuple[bytes | None, bytes | None]]) -> set[str]:
    """The event ids of records that carry the query service's signature (Ed25519 is deterministic)."""
    return {
        json.loads(v)["event_id"]
        for v, sig in values
        if v is not None and sig is not None and sig == service_signature(SIGNER, v)
    }


def test_each_known_crash_is_a_dead_letter_naming_what_was_wrong():
    cases = {
        "occurred_at": _text(_put(BASE, ("occurred_at",), "9999-12-31T23:59:59-01:00")),
        "occurred_at ": _text(_put(BASE, ("occurred_at",), "0001-01-01T00:00:00+01:00")),
        "nested deeper": _text(_put(BASE, ("request_id",), BIG[:20]))[:-1]
        + ', "metadata": {"d": '
        + "[" * 100_000
        + "]" * 100_000
        + "}}",
        "lone surrogate": _text(_put(BASE, ("actor", "name"), "S")).replace('"S"', '"\\ud800"')[:-1]
        + f', "request_id": "{BIG[:20]}"}}',
        "schema_version True": _text({**BASE, "schema_version": True}),
        "reserved name 'audit_log.search'": _text(_put(BASE, ("action",), "audit_log.search")),
        "reserved name 'apikey:k1'": _text(_put(BASE, ("actor", "id"), "apikey:k1")),
        "reserved name 'AUDIT_LOG.search'": _text(_put(BASE, ("action",), "AUDIT_LOG.search")),
        "reserved name 'APIKEY\uff1ak1'": _text(_put(BASE, ("actor", "id"), "APIKEY\uff1ak1")),
        "control character U+0000": _text(_put(BASE, ("actor", "id"), "u\u0000x")),
    }
    for expected, text in cases.items():
        counters, blocks, letters = _run([(text.encode(), None)])
        assert len(letters) == 1 and not blocks, expected
        assert expected.strip() in letters[0].reason, (expected, letters[0].reason)


def test_the_query_service_signature_admits_reserved_names_and_no_other_key_does():
    value = _text(_put(BASE, ("action",), "audit_log.search")).encode()
    assert _run([(value, service_signature(SIGNER, value))])[0].accepted == 1
    assert _run([(value, service_signature(OTHER, value))])[0].dead_letters == 1
    assert _run([(value + b" ", service_signature(SIGNER, value))])[0].dead_letters == 1  # other bytes
    assert _run([(value, b"\x00" * 64)])[0].dead_letters == 1
    assert SERVICE_SIG_HEADER == "auditlog-service-sig"


def test_an_erased_subjects_events_are_logged_with_pii_marked_and_counted():
    value = _text(_put(BASE, ("actor", "id"), ERASED)).encode()
    counters, blocks, letters = _run([(value, None)])
    assert not letters and counters.accepted == 1 and counters.erased_subject_events == 1
    (entry,) = decode_block_object(blocks[0].block_object)[1]
    doc = json.loads(entry)
    assert doc["pii"] == {f: {"erased": True} for f in ("actor.email", "actor.name", "client_ip")}
    assert "a@example.com" not in entry.decode() and "Ann" not in entry.decode()


class _Archive:
    """Blocks of an earlier run, as the job's ArchivedEntries serves them."""

    def __init__(self, blocks: list[Any]) -> None:
        self.blocks = {(b.log_id, b.block_index): decode_block_object(b.block_object)[1] for b in blocks}
        self.asked: list[int] = []

    def entries(self, log_id: str, block_index: int) -> list[bytes] | None:
        self.asked.append(block_index)
        found = self.blocks.get((log_id, block_index))
        return list(found) if found is not None else None


def _log(keys: InMemoryKeyStore, values: list[bytes], archived: _Archive | None = None) -> list[Any]:
    options = IngestOptions(topic="t", origin_prefix="auditlog.test", block_size=3)
    sequencer = LogSequencer(options, keys, SIGNER, archived)
    cursor, dedupe, outputs = LogCursor("t.p0"), MemoryDedupe(), []
    for offset, value in enumerate(values):
        outputs += sequencer.step(cursor, dedupe, SourceRecord(0, offset, 0, None, value))
    last = sequencer.seal(cursor)
    return [item for kind, item in outputs + ([("block", last)] if last else []) if kind == "block"]


def test_a_replay_after_an_erasure_keeps_the_archived_sealed_bytes():
    subject = "u_7"
    values = [
        _text({**_put(BASE, ("actor", "id"), subject if i % 2 else "u_2"), "event_id": f"evt_{i}"}).encode()
        for i in range(8)
    ]
    keys = InMemoryKeyStore(key_seed=b"k" * 32)
    first = _log(keys, values)
    keys.destroy(TENANT, subject)
    # Without the archive the replay cannot seal the erased subject's events: other bytes.
    alone = _log(keys, values)
    assert [b.block_object for b in alone] != [b.block_object for b in first]
    assert b'{"erased":true}' in alone[0].block_object
    # With it, the replay derives the first run's log, byte for byte, and creates no key.
    archive = _Archive(first)
    again = _log(keys, values, archive)
    assert [b.block_object for b in again] == [b.block_object for b in first]
    assert [b.checkpoint for b in again] == [b.checkpoint for b in first]
    assert keys.get(TENANT, subject) is None
    assert archive.asked == [0, 1, 2]
    # Events the archive does not hold (logged for the first time after the erasure) stay marked.
    more = values + [_text({**_put(BASE, ("actor", "id"), subject), "event_id": "evt_new"}).encode()]
    longer = _log(keys, more, _Archive(first))
    assert [b.block_object for b in longer[:2]] == [b.block_object for b in first[:2]]
    last_entries = decode_block_object(longer[-1].block_object)[1]
    assert json.loads(last_entries[-1])["pii"]["actor.email"] == {"erased": True}


def test_an_archived_block_with_other_content_is_not_adopted():
    subject = "u_7"
    values = [_text({**_put(BASE, ("actor", "id"), subject), "event_id": f"evt_{i}"}).encode() for i in range(3)]
    keys = InMemoryKeyStore(key_seed=b"k" * 32)
    first = _log(keys, values)
    keys.destroy(TENANT, subject)
    changed = [values[0], values[1], _text({**_put(BASE, ("actor", "id"), subject), "event_id": "evt_x"}).encode()]
    replay = _log(keys, changed, _Archive(first))
    entries = decode_block_object(replay[0].block_object)[1]
    originals = decode_block_object(first[0].block_object)[1]
    assert entries[:2] == originals[:2]  # the same events: the archived sealed bytes
    assert json.loads(entries[2])["event_id"] == "evt_x" and b'{"erased":true}' in entries[2]
