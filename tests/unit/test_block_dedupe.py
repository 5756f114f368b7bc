"""BlockDedupe: the job's dedupe with one keyed-state call per new record, and a restore at any record.

The operator (pipelines/ingest_operators.py) keeps the open block's entries in list state record
by record and hands BlockDedupe Flink's MapState; here a dict-backed map state stands in for it,
counting calls. A checkpoint is taken between any two records: the map state, the open block's
entries and the cursor; a restore continues from it with the records after it replayed, as
Flink's Kafka source would. The log must come out the same as one uninterrupted run with a
plain set, for every cut.
"""

from __future__ import annotations

import random

from pipelines.ingest_core import (
    BlockDedupe,
    IngestOptions,
    LogCursor,
    LogSequencer,
    MemoryDedupe,
    SourceRecord,
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
