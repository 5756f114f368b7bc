"""Resume points: a log goes on from the archive when its partition's early records were deleted.

`auditlog erase` deletes what the archive holds from the topic (pipelines/erasure.py); a job that
then starts without state must continue each log exactly where the archive left it, with the
dedupe keys it would have had, and give the same leaves as a job that never lost its records.
"""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.erasure import newest_resume_points
from pipelines.ingest_core import (
    CUT_MARKER,
    ArchivedEntries,
    IngestOptions,
    LogCursor,
    LogSequencer,
    MemoryDedupe,
    ResumePoint,
    SourceRecord,
    archived_event_keys,
    resume_cursor,
)
from pipelines.io.archive.testing import InMemoryArchive
from pipelines.io.keystore import InMemoryKeyStore
from schemas.samples import EventGenerator, to_record
from transforms.note import Signer

SIGNER = Signer.generate("auditlog.test")
TOPIC = "audit.events"


def _records(n: int, start: int = 0, seed: int = 4, repeat_every: int = 7) -> list[SourceRecord]:
    gen = EventGenerator(seed=seed)
    values = [to_record(gen.event())[1] for _ in range(n)]
    out = []
    for i, value in enumerate(values):
        out.append(value)
        if i % repeat_every == 3:
            out.append(values[i // 2])  # a duplicate of an earlier event
        if i % 11 == 10:
            out.append(CUT_MARKER)
    return [SourceRecord(0, start + i, 0, None, v) for i, v in enumerate(out)]


def _run(records: list[SourceRecord], archive: InMemoryArchive, cursor: LogCursor, dedupe: Any) -> list[Any]:
    options = IngestOptions(topic=TOPIC, origin_prefix="auditlog.test", block_size=8)
    sequencer = LogSequencer(options, InMemoryKeyStore(key_seed=b"r" * 32), SIGNER, ArchivedEntries(archive))
    blocks = []
    for record in records:
        for kind, item in sequencer.step(cursor, dedupe, record):
            if kind == "block":
                archive.put_sealed_block(item)
                blocks.append(item)
    last = sequencer.seal(cursor)
    if last:
        archive.put_sealed_block(last)
        blocks.append(last)
    return blocks


def test_a_log_resumed_from_the_archive_gives_the_same_blocks_as_one_that_kept_its_records():
    records = _records(120)
    whole = InMemoryArchive()
    reference = _run(records, whole, LogCursor(f"{TOPIC}.p0"), MemoryDedupe())

    archive = InMemoryArchive()
    # The first run saw records[:cut], ending at a cut marker as a bounded run's input does (it
    # writes one before it starts); then the topic was truncated at the newest resume point.
    cut = next(i + 1 for i in range(70, len(records)) if records[i].value == CUT_MARKER)
    first = _run(records[:cut], archive, LogCursor(f"{TOPIC}.p0"), MemoryDedupe())
    point = newest_resume_points(archive, TOPIC, [0])[0]
    assert point.next_offset <= cut and point.block_index == max(b.block_index for b in first if b.resume)
    resumed = resume_cursor(f"{TOPIC}.p0", point.next_offset, ArchivedEntries(archive))
    assert resumed is not None and resumed.last_block is not None
    dedupe = MemoryDedupe(archived_event_keys(f"{TOPIC}.p0", resumed.last_block.block_index, ArchivedEntries(archive)))
    rest = _run(records[point.next_offset :], archive, resumed, dedupe)
    by_index = {b.block_index: b for b in first + rest}
    assert [by_index[b.block_index].block_object for b in reference] == [b.block_object for b in reference]
    assert [by_index[b.block_index].checkpoint for b in reference] == [b.checkpoint for b in reference]


def test_resume_points_are_only_for_blocks_a_record_closed():
    archive = InMemoryArchive()
    blocks = _run(_records(20, repeat_every=1000), archive, LogCursor(f"{TOPIC}.p0"), MemoryDedupe())
    closed = [b for b in blocks if b.resume]
    assert closed and not blocks[-1].resume  # the end of the input sealed the last one
    point = ResumePoint.from_bytes(closed[-1].resume)
    assert point.block_index == closed[-1].block_index and point.tree_size == closed[-1].tree_size
    assert archive.list_resume_points(f"{TOPIC}.p0") == [b.block_index for b in closed]


def test_a_first_offset_the_archive_does_not_cover_starts_the_log_anew():
    archive = InMemoryArchive()
    assert resume_cursor(f"{TOPIC}.p0", 5, ArchivedEntries(archive)) is None
    _run(_records(30), archive, LogCursor(f"{TOPIC}.p0"), MemoryDedupe())
    first = ResumePoint.from_bytes(archive.get_resume_point(f"{TOPIC}.p0", 0))
    assert resume_cursor(f"{TOPIC}.p0", first.next_offset - 1, ArchivedEntries(archive)) is None


def test_a_resume_point_that_disagrees_with_its_block_is_refused():
    archive = InMemoryArchive()
    _run(_records(30), archive, LogCursor(f"{TOPIC}.p0"), MemoryDedupe())
    point = ResumePoint.from_bytes(archive.get_resume_point(f"{TOPIC}.p0", 1))
    forged = ResumePoint(point.block_index, point.next_offset, point.tree_size, (bytes(32),) * len(point.hashes))
    other = InMemoryArchive()
    for key in archive.keys("logs/"):
        if "/resume/" not in key:
            other.put_immutable(key, archive.get(key))
    other.put_immutable(f"logs/{TOPIC}.p0/resume/000000000001.resume", forged.to_bytes())
    with pytest.raises(ValueError, match="does not match"):
        resume_cursor(f"{TOPIC}.p0", point.next_offset, ArchivedEntries(other))


def test_only_the_record_that_closed_a_block_lets_erase_delete_up_to_its_resume_point():
    from pipelines.erasure import closes_block

    records = _records(40, repeat_every=1000)
    archive = InMemoryArchive()
    _run(records, archive, LogCursor(f"{TOPIC}.p0"), MemoryDedupe())
    log_id = f"{TOPIC}.p0"
    markers = 0
    for index in archive.list_resume_points(log_id):
        point = ResumePoint.from_bytes(archive.get_resume_point(log_id, index))
        closing = records[point.next_offset - 1]
        markers += closing.value == CUT_MARKER
        assert closes_block(point, closing.timestamp_ms, closing.key, closing.value)
        # Another cut marker, or the same bytes at another time, is not that record.
        assert not closes_block(point, closing.timestamp_ms + 1, closing.key, closing.value)
        assert not closes_block(point, closing.timestamp_ms, closing.key, b"not json")
        assert not closes_block(point, -1, None, None)
    assert markers, "the records include blocks a cut marker closed"


def test_a_late_duplicate_of_an_old_event_is_still_dropped_after_a_resume():
    """Every archived event id is restored, not only the recent ones: a run that read the deleted
    records would have dropped the repeat, so the resumed one must too (else the archive alarms)."""
    gen = EventGenerator(seed=9)
    events = []
    for day in range(43):
        event = gen.event()
        event["occurred_at"] = (
            f"2026-03-{1 + day % 28:02d}T00:00:00.000Z" if day < 28 else f"2026-04-{day - 27:02d}T00:00:00.000Z"
        )
        events.append(to_record(event)[1])
    values = events[:40] + [CUT_MARKER, events[0]] + events[40:]
    records = [SourceRecord(0, i, 1000 + i, None, v) for i, v in enumerate(values)]
    whole = InMemoryArchive()
    reference = _run(records, whole, LogCursor(f"{TOPIC}.p0"), MemoryDedupe())
    archive = InMemoryArchive()
    cut = values.index(CUT_MARKER) + 1
    _run(records[:cut], archive, LogCursor(f"{TOPIC}.p0"), MemoryDedupe())
    resumed = resume_cursor(f"{TOPIC}.p0", cut, ArchivedEntries(archive))
    assert resumed is not None and resumed.last_block is not None
    keys = archived_event_keys(f"{TOPIC}.p0", resumed.last_block.block_index, ArchivedEntries(archive))
    rest = _run(records[cut:], archive, resumed, MemoryDedupe(keys))
    assert [b.block_object for b in rest] == [b.block_object for b in reference[-len(rest) :]]
