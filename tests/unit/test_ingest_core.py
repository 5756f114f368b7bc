"""The ingest job's per-log logic without Flink: dead letters, dedupe, blocks, determinism."""

from __future__ import annotations

import hashlib
import json

from pipelines.ingest_core import CUT_MARKER, IngestOptions, LogCursor, LogSequencer, MemoryDedupe, SourceRecord
from schemas.samples import EventGenerator, to_record
from transforms.blocks import decode_block_object, verify_chain
from transforms.checkpoint import open_checkpoint
from transforms.merkle import leaf_hash
from transforms.note import Signer
from transforms.pii import SubjectKeys

SIGNER = Signer.generate("auditlog.test")


class DerivedKeys:
    def get_or_create(self, tenant_id: str, subject_id: str) -> SubjectKeys:
        k = hashlib.sha256(f"{tenant_id}/{subject_id}".encode()).digest()
        return SubjectKeys(subject_id, k, hashlib.sha256(k).digest())


def records(n: int, seed: int = 3) -> list[SourceRecord]:
    gen = EventGenerator(seed=seed)
    out = []
    for i in range(n):
        key, value = to_record(gen.event())
        out.append(SourceRecord(0, len(out), 0, key, value))
        if i % 10 == 5:  # a duplicate of this event, later in the partition
            out.append(SourceRecord(0, len(out), 0, key, value))
        if i % 17 == 0:
            out.append(SourceRecord(0, len(out), 0, key, b'{"event_id": "x"'))
    return out


def run(recs: list[SourceRecord], block_size: int = 16):
    opts = IngestOptions(topic="audit.events", origin_prefix="auditlog.test", block_size=block_size)
    seq = LogSequencer(opts, DerivedKeys(), SIGNER)
    cursor, dedupe, outputs = LogCursor(opts.log_id(0)), MemoryDedupe(), []
    for r in recs:
        outputs += seq.step(cursor, dedupe, r)
    last = seq.seal(cursor)
    if last:
        outputs.append(("block", last))
    return seq, cursor, outputs


def test_duplicates_are_counted_not_stored_and_bad_records_become_dead_letters():
    seq, cursor, outputs = run(records(200))
    blocks = [o for k, o in outputs if k == "block"]
    dlq = [o for k, o in outputs if k == "dlq"]
    assert seq.counters.accepted == 200
    assert seq.counters.duplicates == 20
    assert len(dlq) == seq.counters.dead_letters == 12
    letter = json.loads(dlq[0].to_json())
    assert letter["source"] == {"topic": "audit.events", "partition": 0, "offset": 1}
    assert "is not JSON" in letter["reason"] and letter["value_b64"]
    assert sum(decode_block_object(b.block_object)[0].leaf_count for b in blocks) == 200
    event_ids = [json.loads(e)["event_id"] for b in blocks for e in decode_block_object(b.block_object)[1]]
    assert len(set(event_ids)) == 200


def test_blocks_chain_and_checkpoints_sign_every_head():
    _, cursor, outputs = run(records(100))
    blocks = [o for k, o in outputs if k == "block"]
    chain = []
    for b in blocks:
        header, entries = decode_block_object(b.block_object)
        chain.append((header, [leaf_hash(e) for e in entries]))
        cp = open_checkpoint(b.checkpoint, SIGNER.verifier(), origin="auditlog.test/audit.events.p0")
        assert (cp.size, cp.root) == (header.tree_size, header.tree_root)
    assert verify_chain(chain).root() == cursor.tree.root()


def test_same_input_gives_identical_bytes_and_restored_state_continues_identically():
    recs = records(120)
    _, _, a = run(recs)
    _, _, b = run(recs)
    assert [o.block_object for k, o in a if k == "block"] == [o.block_object for k, o in b if k == "block"]
    # Stop after 57 records, persist the cursor as a checkpoint would, restore, and go on.
    opts = IngestOptions(topic="audit.events", origin_prefix="auditlog.test", block_size=16)
    seq = LogSequencer(opts, DerivedKeys(), SIGNER)
    cursor, dedupe, outs = LogCursor(opts.log_id(0)), MemoryDedupe(), []
    for r in recs[:57]:
        outs += seq.step(cursor, dedupe, r)
    restored = LogCursor.from_bytes(cursor.to_bytes(), cursor.pending)
    for r in recs[57:]:
        outs += seq.step(restored, dedupe, r)
    outs.append(("block", seq.seal(restored)))
    assert [o.block_object for k, o in outs if k == "block"] == [o.block_object for k, o in a if k == "block"]


def test_cut_marker_closes_the_open_block():
    gen = EventGenerator(seed=9)
    recs = [SourceRecord(0, i, 0, *to_record(gen.event())) for i in range(5)]
    recs.insert(3, SourceRecord(0, 99, 0, None, CUT_MARKER))
    seq, _, outputs = run(recs, block_size=1000)
    sizes = [decode_block_object(o.block_object)[0].leaf_count for k, o in outputs if k == "block"]
    assert sizes == [3, 2] and seq.counters.cut_markers == 1
    empty_cut = run([SourceRecord(0, 0, 0, None, CUT_MARKER)])[2]
    assert empty_cut == []


def test_null_value_is_a_dead_letter():
    _, _, outputs = run([SourceRecord(2, 7, 0, b"t", None)])
    assert outputs[0][0] == "dlq" and "null Kafka value" in outputs[0][1].reason


def test_partition_keys_spread_consecutive_partitions_over_the_subtasks():
    from pipelines.state_keys import MAX_PARALLELISM, key_group, partition_key, partition_of_key

    keys = [partition_key(p) for p in range(MAX_PARALLELISM)]
    assert [partition_of_key(k) for k in keys] == list(range(MAX_PARALLELISM))
    assert all(k < 2**31 for k in keys)  # a Java int
    # Each key group once; at parallelism 2, 4 and 8 consecutive partitions take turns.
    assert sorted(key_group(k) for k in keys) == list(range(MAX_PARALLELISM))
    for parallelism in (2, 4, 8):
        subtasks = [key_group(k) * parallelism // MAX_PARALLELISM for k in keys[:parallelism]]
        assert sorted(subtasks) == list(range(parallelism))
    assert partition_key(MAX_PARALLELISM + 5) == MAX_PARALLELISM + 5


def test_key_group_is_flinks_for_known_keys():
    # Values read from the JVM: KeyGroupRangeAssignment.assignToKeyGroup(Row.of(k), 128).
    from pipelines.state_keys import key_group

    assert [key_group(k) for k in (0, 1, 2, 3, 1_000_000)] == [33, 44, 97, 104, 85]
