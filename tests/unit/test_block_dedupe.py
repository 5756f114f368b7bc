"""BlockDedupe: the job's dedupe with one keyed-state call a batch (or a new record), and a restore at any record.

The operator (pipelines/ingest_operators.py) keeps the open block's entries in list state record
by record and hands BlockDedupe Flink's MapState; here a dict-backed map state stands in for it,
counting calls. A checkpoint is taken between any two records: the map state, the open block's
entries and the cursor; a restore continues from it with the records after it replayed, as
Flink's Kafka source would. The log must come out the same as one uninterrupted run with a
plain set, for every cut.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.ingest_core import (
    BlockDedupe,
    IngestOptions,
    LogCursor,
    LogSequencer,
    MemoryDedupe,
    SourceRecord,
    dedupe_keys,
)
from schemas.samples import EventGenerator, to_record
from tests.unit.test_ingest_core import SIGNER, DerivedKeys

OPTIONS = IngestOptions(topic="audit.events", origin_prefix="auditlog.test", block_size=16)


class MapState:
    """The two calls BlockDedupe may make on Flink's MapState, counted; a per-record `put` is not one of them."""

    def __init__(self, data: dict[str, bool] | None = None) -> None:
        self.data = dict(data or {})
        self.calls = 0

    def contains(self, key: str) -> bool:
        self.calls += 1
        return key in self.data

    def put_all(self, entries: dict[str, bool]) -> None:
        self.calls += 1
        self.data.update(entries)


def records(n: int = 150) -> list[SourceRecord]:
    """Events with duplicates next to each other, within a block and many blocks later."""
    rng = random.Random(5)
    generator = EventGenerator(seed=11)
    values = [to_record(generator.event()) for _ in range(n)]
    out: list[SourceRecord] = []
    for i, (key, value) in enumerate(values):
        out.append(SourceRecord(0, len(out), 0, key, value))
        if i % 7 == 3:
            key, value = values[rng.randrange(0, i + 1)]  # an earlier event again
            out.append(SourceRecord(0, len(out), 0, key, value))
    return out


def blocks_of(outputs: list[tuple[str, object]]) -> list[bytes]:
    return [out.block_object for kind, out in outputs if kind == "block"]  # type: ignore[attr-defined]


def reference(recs: list[SourceRecord]) -> tuple[list[bytes], int]:
    sequencer = LogSequencer(OPTIONS, DerivedKeys(), SIGNER)
    cursor, dedupe, outputs = LogCursor(OPTIONS.log_id(0)), MemoryDedupe(), []
    for record in recs:
        outputs += sequencer.step(cursor, dedupe, record)
    return blocks_of(outputs), sequencer.counters.duplicates


def test_one_state_call_per_record_and_one_per_block() -> None:
    recs = records()
    expected, duplicates = reference(recs)
    sequencer = LogSequencer(OPTIONS, DerivedKeys(), SIGNER)
    state = MapState()
    cursor, dedupe, outputs = LogCursor(OPTIONS.log_id(0)), BlockDedupe(state), []
    for record in recs:
        made = sequencer.step(cursor, dedupe, record)
        if blocks_of(made):
            dedupe.sealed()
        outputs += made
    assert blocks_of(outputs) == expected
    assert duplicates > 20 and sequencer.counters.duplicates == duplicates
    sealed = len(expected)
    # contains() only for keys not in the open block; one put_all per sealed block
    assert state.calls <= len(recs) + sealed
    assert len(state.data) == sealed * OPTIONS.block_size


def test_a_restore_between_any_two_records_gives_the_same_log() -> None:
    recs = records(90)
    expected, _ = reference(recs)
    for cut in range(len(recs) + 1):
        sequencer = LogSequencer(OPTIONS, DerivedKeys(), SIGNER)
        state = MapState()
        cursor, dedupe, outputs = LogCursor(OPTIONS.log_id(0)), BlockDedupe(state), []
        for record in recs[:cut]:
            made = sequencer.step(cursor, dedupe, record)
            if blocks_of(made):
                dedupe.sealed()
            outputs += made
        # the checkpoint: map state, open block entries, cursor; Python memory is lost
        saved_state, saved_pending, saved_cursor = dict(state.data), list(cursor.pending), cursor.to_bytes()
        sequencer = LogSequencer(OPTIONS, DerivedKeys(), SIGNER)
        cursor = LogCursor.from_bytes(saved_cursor, saved_pending)
        dedupe = BlockDedupe(MapState(saved_state), saved_pending)
        for record in recs[cut:]:
            made = sequencer.step(cursor, dedupe, record)
            if blocks_of(made):
                dedupe.sealed()
            outputs += made
        assert blocks_of(outputs) == expected, f"restored after record {cut}"


def test_a_resume_point_remembers_the_archived_keys() -> None:
    state = MapState()
    dedupe = BlockDedupe(state)
    assert not dedupe.seen("t\x00a")
    dedupe.restart(["t\x00b", "t\x00c"])
    assert dedupe.open == set() and set(state.data) == {"t\x00b", "t\x00c"}
    assert dedupe.seen("t\x00b") and not dedupe.seen("t\x00a")


# --------------------------------------------------------------------------- a batch's lookups in one call


class BatchLookup:
    """SeenKeys' answer over the dict-backed state (the operator's one JVM call a batch), counted."""

    def __init__(self, state: MapState) -> None:
        self.state = state
        self.calls: list[list[str]] = []

    def __call__(self, keys: list[str]) -> list[bool]:
        self.calls.append(list(keys))
        return [key in self.state.data for key in keys]


def step_batches(
    sequencer: LogSequencer, cursor: LogCursor, dedupe: BlockDedupe, recs: list[SourceRecord], size: int
) -> list[tuple[str, object]]:
    """What SequenceFunction does with each batch: read it, look its keys up at once, step each record."""
    outputs: list[tuple[str, object]] = []
    for start in range(0, len(recs), size):
        batch = recs[start : start + size]
        parsed = [sequencer.read(record) for record in batch]
        dedupe.prefetch(dedupe_keys(parsed))
        for record, read in zip(batch, parsed, strict=True):
            made = sequencer.step(cursor, dedupe, record, read)
            if blocks_of(made):
                dedupe.sealed()
            outputs += made
    return outputs


@pytest.mark.parametrize("size", [1, 5, 16, 37, 500])
def test_a_batch_looked_up_in_one_call_gives_the_same_log(size: int) -> None:
    recs = records()
    expected, duplicates = reference(recs)
    sequencer = LogSequencer(OPTIONS, DerivedKeys(), SIGNER)
    state = MapState()
    lookup = BatchLookup(state)
    dedupe = BlockDedupe(state, lookup=lookup)
    outputs = step_batches(sequencer, LogCursor(OPTIONS.log_id(0)), dedupe, recs, size)
    assert blocks_of(outputs) == expected
    assert sequencer.counters.duplicates == duplicates
    assert len(lookup.calls) <= -(-len(recs) // size)  # at most one a batch (none if all are open)
    singles = state.calls - len(expected)  # contains() one key at a time; put_all once a sealed block
    if sequencer.core is not None:  # every record here is one the compiled core reads
        assert singles == 0


def test_a_restore_between_batches_gives_the_same_log() -> None:
    recs = records(90)
    expected, _ = reference(recs)
    for cut in range(0, len(recs) + 1, 7):
        sequencer = LogSequencer(OPTIONS, DerivedKeys(), SIGNER)
        state = MapState()
        cursor = LogCursor(OPTIONS.log_id(0))
        outputs = step_batches(sequencer, cursor, BlockDedupe(state, lookup=BatchLookup(state)), recs[:cut], 10)
        saved_state, saved_pending, saved_cursor = dict(state.data), list(cursor.pending), cursor.to_bytes()
        sequencer = LogSequencer(OPTIONS, DerivedKeys(), SIGNER)
        cursor = LogCursor.from_bytes(saved_cursor, saved_pending)
        restored = MapState(saved_state)
        dedupe = BlockDedupe(restored, saved_pending, BatchLookup(restored))
        outputs += step_batches(sequencer, cursor, dedupe, recs[cut:], 10)
        assert blocks_of(outputs) == expected, f"restored after record {cut}"


KEYS = st.sampled_from([f"t\x00e{i}" for i in range(12)])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("prefetch"), st.lists(KEYS, max_size=8)),
        st.tuples(st.just("seen"), KEYS),
        st.tuples(st.just("sealed"), st.none()),
        st.tuples(st.just("restart"), st.lists(KEYS, max_size=4)),
    ),
    max_size=60,
)


@given(OPS)
@settings(max_examples=400, deadline=None)
def test_prefetched_answers_equal_one_call_a_key(ops: list[tuple[str, object]]) -> None:
    """Any order of prefetches, lookups, seals and restarts: the same answers and state as without prefetch."""
    plain_state, batch_state = MapState(), MapState()
    plain, batched = BlockDedupe(plain_state), BlockDedupe(batch_state, lookup=BatchLookup(batch_state))
    for op, arg in ops:
        if op == "prefetch":
            batched.prefetch(arg)  # type: ignore[arg-type]
        elif op == "seen":
            assert batched.seen(arg) == plain.seen(arg), (op, arg)  # type: ignore[arg-type]
        elif op == "sealed":
            plain.sealed()
            batched.sealed()
        else:
            plain.restart(arg)  # type: ignore[arg-type]
            batched.restart(arg)  # type: ignore[arg-type]
        assert batched.open == plain.open
        assert batch_state.data == plain_state.data


def test_a_lookup_that_answers_too_few_keys_is_an_error() -> None:
    dedupe = BlockDedupe(MapState(), lookup=lambda keys: [False])
    with pytest.raises(RuntimeError, match="answered 1 of 2 keys"):
        dedupe.prefetch(["t\x00a", "t\x00b"])


def test_without_the_jvm_the_operator_falls_back_to_one_call_a_record(capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines.ingest_operators import batch_lookup

    assert batch_lookup(object()) is None
    assert "dedupe asks the state once a record" in capsys.readouterr().err
