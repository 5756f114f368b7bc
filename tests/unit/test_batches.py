"""The batch frames between the JVM batcher and the sequencer (pipelines/batches.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.batches import FrameError, read_batch, write_batch
from pipelines.ingest_core import SourceRecord

fields = st.one_of(st.none(), st.binary(max_size=64))
records = st.builds(
    SourceRecord,
    st.just(3),
    st.integers(0, 2**63 - 1),
    st.integers(-(2**63), 2**63 - 1),
    fields,
    fields,
    fields,
)


@given(st.lists(records, max_size=20))
def test_a_frame_reads_back_as_the_records_it_was_written_from(batch: list[SourceRecord]) -> None:
    assert read_batch(3, write_batch(batch)) == batch


def test_null_and_empty_fields_stay_apart() -> None:
    batch = [SourceRecord(0, 1, 2, None, b"", None), SourceRecord(0, 2, 3, b"", None, b"")]

    assert read_batch(0, write_batch(batch)) == batch


@pytest.mark.parametrize("cut", [1, 19, 20, 23, 30])
def test_a_cut_frame_is_refused_with_where_it_ends(cut: int) -> None:
    frame = write_batch([SourceRecord(0, 1, 2, b"key", b"value", None)])

    with pytest.raises(FrameError, match=f"partition 0 is cut short.* of {len(frame) - cut}"):
        read_batch(0, frame[: len(frame) - cut])
