"""The indexer's Arrow batches: the compiled columns against the reference rows, and exactly-once grouping.

`logs_table` builds audit_logs rows column by column with the compiled core
(`auditlog_native.index_columns`), or from `schemas.rows.block_rows`, the reference. The two must
give the same table, value for value, for every entry the core accepts, and the core must refer
(return None for) every entry it does not read exactly as the reference does. The indexer inserts
verified blocks together; after a crash between its inserts it must re-form the same group, so
that the deduplication token matches and no row is indexed twice.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines import indexer as indexer_module
from pipelines.indexer import ArchiveIndexer, wait_quiet
from pipelines.io.archive.testing import InMemoryArchive
from pipelines.io.clickhouse import ClickHouse, open_clickhouse
from pipelines.io.clickhouse.arrow import SealedBlock, leaves_table, logs_table
from pipelines.io.keystore import InMemoryKeyStore
from schemas.native import index_columns
from tests.synthetic import ORIGIN, build_logs, sealed_blocks
from transforms.blocks import BlockHeader, decode_block_object
from transforms.jcs import canonicalize
from transforms.merkle import leaf_hash
from transforms.note import Signer
from transforms.retention import LegalHold

native = index_columns("auto")
needs_core = pytest.mark.skipif(native is None, reason="the compiled core is not built (make native)")


def generated_blocks(events: int = 600, block_size: int = 100) -> list[SealedBlock]:
    signer = Signer.generate(ORIGIN)
    keys = InMemoryKeyStore(key_seed=b"index-arrow")
    blocks = []
    for _, record in sealed_blocks(events, 1, block_size, signer, keys):
        header, entries = decode_block_object(record.block_object)  # type: ignore[attr-defined]
        blocks.append(SealedBlock(header, entries, [leaf_hash(e) for e in entries]))
    return blocks


def one_block(entries: list[bytes]) -> list[SealedBlock]:
    """`entries` as the only block of a log (the header's hashes do not matter to the rows)."""
    template = generated_blocks(10, 10)[0].header
    header = BlockHeader(**{**template.__dict__, "leaf_count": len(entries)})
    return [SealedBlock(header, entries, [leaf_hash(e) for e in entries])]


def same(blocks: list[SealedBlock]) -> None:
    fast = logs_table(blocks, columns=native)
    reference = logs_table(blocks, columns=None)
    assert native is not None and native([e for b in blocks for e in b.entries]) is not None, "the core referred"
    assert fast.schema == reference.schema
    for name in fast.column_names:
        assert fast.column(name).equals(reference.column(name)), name


@needs_core
def test_generated_blocks_give_the_reference_table() -> None:
    same(generated_blocks())


def variants(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """One sealed entry made unusual in each of the ways audit_log_row reads differently."""
    yield {k: v for k, v in doc.items() if k != "request_id"}
    yield {k: v for k, v in doc.items() if k != "metadata"}
    yield {**doc, "metadata": {}}
    yield {**doc, "metadata": {"z": [1, {"b": None, "a": True}], "ünï": '\u2028"\\\n\t\x01é😀', "n": -12}}
    yield {**doc, "metadata": {"f": 1.5e-7, "g": 100.0, "h": 1e21}}
    yield {k: v for k, v in doc.items() if k != "retention"}
    yield {**doc, "retention": None}
    yield {**doc, "retention": {}}
    yield {**doc, "retention": {"class": "x", "until": ""}}
    yield {**doc, "retention": {"class": "forever", "until": "9999-12-31T23:59:59.999Z"}}
    yield {**doc, "retention": {"class": "y", "until": "2299-12-31T23:59:59.999Z"}}
    yield {k: v for k, v in doc.items() if k != "pii"}
    yield {**doc, "pii": {}}
    yield {**doc, "pii": {"actor.email": {"erased": True}}}
    yield {**doc, "pii": {"actor.email": {}}}
    yield {**doc, "tenant_id": 't"q\\\u0000', "event_id": "e\U0001f600", "action": "a/\u00e9"}
    yield {**doc, "actor": {"type": "SYSTEM", "id": "svc\tx", "extra": [1, 2]}}
    yield {**doc, "resource": {"id": "", "type": "doc", "attrs": {"a": [[]]}}}
    yield {**doc, "occurred_at": "0001-01-01T00:00:00.000Z"}
    yield {**doc, "occurred_at": "2024-02-29T23:59:59.999Z"}


@needs_core
def test_unusual_entries_give_the_reference_table() -> None:
    doc = orjson.loads(generated_blocks(1, 1)[0].entries[0])
    entries = [canonicalize(v) for v in variants(copy.deepcopy(doc))]
    same(one_block(entries))
    for entry in entries:  # each alone too: a column of one row
        same(one_block([entry]))


def referred(doc: dict[str, Any]) -> Iterator[bytes]:
    """Entries the core must not read: the reference reads them otherwise, or cannot read them."""
    good = canonicalize(doc)
    yield good.replace(b",", b", ", 1)  # not canonical: whitespace
    yield good[:-1]  # cut short
    yield good + b" "
    yield canonicalize({**doc, "actor": {**doc["actor"], "id": 7}})  # not a string
    yield canonicalize({**doc, "request_id": None})
    yield canonicalize({**doc, "metadata": [1]})
    yield canonicalize({**doc, "occurred_at": "2024-01-01T00:00:00Z"})  # another form of time
    yield canonicalize({**doc, "occurred_at": "2023-02-29T00:00:00.000Z"})
    yield canonicalize({**doc, "retention": "x"})
    yield canonicalize({**doc, "pii": {"actor.email": "x"}})
    yield canonicalize({k: v for k, v in doc.items() if k != "tenant_id"})
    yield b'{"tenant_id":"\\ud800"}'


@needs_core
def test_entries_it_cannot_read_exactly_are_referred() -> None:
    doc = orjson.loads(generated_blocks(1, 1)[0].entries[0])
    good = canonicalize(doc)
    assert native is not None
    for entry in referred(doc):
        assert native([good, entry]) is None, entry
    assert native([good]) is not None


@needs_core
@settings(max_examples=60, deadline=None)
@given(st.data())
def test_hypothesis_strings_and_metadata(data: st.DataObject) -> None:
    doc = orjson.loads(generated_blocks(1, 1)[0].entries[0])
    text = st.text(st.characters(codec="utf-8"), max_size=20)
    json_leaf = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | text
    metadata = st.dictionaries(
        text,
        st.recursive(json_leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(text, c, max_size=3), max_leaves=8),
        max_size=4,
    )
    doc.update(tenant_id=data.draw(text), event_id=data.draw(text), metadata=data.draw(metadata))
    doc["actor"]["id"] = data.draw(text)
    same(one_block([canonicalize(doc)]))


def test_a_hold_builds_the_rows_with_the_reference() -> None:
    blocks = generated_blocks(50, 50)
    tenant = orjson.loads(blocks[0].entries[0])["tenant_id"]
    hold = LegalHold("h1", tenant, "", "2999-01-01T00:00:00.000Z", "2000-01-01T00:00:00.000Z")
    table = logs_table(blocks, holds=[hold], columns=native)
    held = [row["hold_until"].year for row in table.to_pylist() if row["tenant_id"] == tenant]
    assert held and all(year == 2999 for year in held)
    assert leaves_table(table).column_names == [
        "log_id",
        "leaf_index",
        "leaf_hash",
        "tenant_id",
        "event_id",
        "block_index",
    ]


# ---- the indexer's groups


def counts(ch: ClickHouse) -> tuple[int, int, int]:
    return tuple(  # type: ignore[return-value]
        ch.query(f"SELECT count() FROM auditlog.{t}")[0][0] for t in ("audit_logs", "audit_leaves", "audit_blocks")
    )


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[InMemoryArchive, ClickHouse, Signer]]:
    ch = open_clickhouse(f"chdb://{tmp_path / 'ch'}")
    ch.ensure_schema()
    archive = InMemoryArchive()
    signer = Signer.generate(ORIGIN)
    yield archive, ch, signer
    ch.close()


def test_blocks_go_in_together_and_once(deployment: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    archive, ch, signer = deployment
    monkeypatch.setattr(indexer_module, "GROUP_EVENTS", 250)
    built = build_logs(archive, None, 1_000, logs=1, block_size=100, signer=signer)
    inserts: list[int] = []
    original = ch.write_blocks
    monkeypatch.setattr(
        ch, "write_blocks", lambda blocks, *a, **k: (inserts.append(len(blocks)), original(blocks, *a, **k))
    )
    stats = wait_quiet(ArchiveIndexer(archive, ch, signer.verifier(), ORIGIN))
    assert (stats.blocks, stats.events, stats.halted) == (built.blocks, 1_000, {})
    assert inserts == [3, 3, 3, 1]  # 300 events ≥ 250 closes a group
    assert counts(ch) == (1_000, 1_000, 10)


def test_a_following_indexer_holds_few_blocks_back_for_a_larger_insert(
    deployment: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, ch, signer = deployment
    monkeypatch.setattr(indexer_module, "GROUP_EVENTS", 500)
    build_logs(archive, None, 1_000, logs=1, block_size=100, signer=signer)
    every_block, visible = archive.list_blocks, [2]
    monkeypatch.setattr(
        archive, "list_blocks", lambda log_id, after=None: [i for i in every_block(log_id, after) if i < visible[0]]
    )
    inserts: list[int] = []
    original = ch.write_blocks
    monkeypatch.setattr(
        ch, "write_blocks", lambda blocks, *a, **k: (inserts.append(len(blocks)), original(blocks, *a, **k))
    )
    indexer = ArchiveIndexer(archive, ch, signer.verifier(), ORIGIN)
    clock = [0.0]
    indexer.clock = lambda: clock[0]

    def one_pass(now: float, blocks: int) -> int:
        clock[0], visible[0] = now, blocks
        return indexer.sync_once(hold_s=3.0)

    assert one_pass(0.0, 2) == 0  # 200 events: held
    assert one_pass(1.0, 4) == 0  # 400, held since 0 s
    assert one_pass(2.0, 6) == 5  # 500 go in together; the sixth block is held from now
    assert one_pass(4.9, 6) == 0
    assert one_pass(5.0, 6) == 1  # held 3 s: it goes in alone
    assert inserts == [5, 1] and counts(ch) == (600, 600, 6)
    visible[0] = 10
    assert one_pass(5.0, 10) == 0  # 400 held
    assert wait_quiet(indexer).events == 1_000  # the last passes hold nothing back
    assert inserts == [5, 1, 4] and counts(ch) == (1_000, 1_000, 10)


def test_an_interrupted_insert_is_completed_with_the_same_blocks(
    deployment: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash after the leaves and events of blocks 0-2 went in, before their block rows.

    The next indexer finds more blocks in the archive than the crashed one had; grouped as it
    would group them, its first insert would name blocks 0-5 and put blocks 0-2's rows in twice.
    """
    archive, ch, signer = deployment
    monkeypatch.setattr(indexer_module, "GROUP_EVENTS", 10_000)
    build_logs(archive, None, 600, logs=1, block_size=100, signer=signer)
    every_block, real_insert = archive.list_blocks, ch._insert
    dead = [True]

    def first_three(log_id: str, after: int | None = None) -> list[int]:
        return [i for i in every_block(log_id, after=after) if i < 3 or not dead[0]]

    def insert(*args: Any, **kwargs: Any) -> None:  # the block and checkpoint rows
        if dead[0]:
            raise ConnectionError("the indexer died here")
        real_insert(*args, **kwargs)

    monkeypatch.setattr(archive, "list_blocks", first_three)
    monkeypatch.setattr(ch, "_insert", insert)
    with pytest.raises(ConnectionError):
        ArchiveIndexer(archive, ch, signer.verifier(), ORIGIN).sync_once()
    assert counts(ch) == (300, 300, 0)

    dead[0] = False
    stats = wait_quiet(ArchiveIndexer(archive, ch, signer.verifier(), ORIGIN))
    assert (stats.events, stats.halted) == (600, {})
    assert counts(ch) == (600, 600, 6)
    twice = ch.query(
        "SELECT count() FROM (SELECT leaf_index FROM auditlog.audit_logs GROUP BY leaf_index HAVING count() > 1)"
    )
    assert twice[0][0] == 0
