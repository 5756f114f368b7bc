"""The state keys of the ingest job's logs: one per Kafka partition, spread evenly over Flink's subtasks.

The sequencer's keyed state (pipelines/ingest_operators.py) is keyed by `partition_key(partition)`,
which Flink hashes into one of `MAX_PARALLELISM` key groups; `key_group` computes that group in
Python exactly as the JVM does (pipelines/ingest.py checks it when it builds the job).
"""

from __future__ import annotations

from functools import lru_cache

MAX_PARALLELISM = 128
"""The job's maximum parallelism, pinned: state keys fall in this many key groups for good."""
KEY_STRIDE = 1 << 20
"""A partition's state key is `partition + KEY_STRIDE * j`; `key % KEY_STRIDE` gives it back."""
_M32 = 0xFFFFFFFF


@lru_cache(maxsize=4096)  # a search of ~100 µs: the recording source asks once per record
def partition_key(partition: int) -> int:
    """The state key of a partition's log, chosen so that the logs spread evenly over the subtasks.

    Flink puts a key in key group murmur(hash(key)) % MAX_PARALLELISM and gives each subtask a
    contiguous range of groups, so keys 0 and 1 (partitions 0 and 1) happened to share subtask 0 at
    parallelism 2 and one thread did all the work. This key lands partition p in the key group
    that is p's 7-bit reversal (0, 64, 32, 96, 16, ...): consecutive partitions go to different
    subtasks at every power-of-two parallelism. It depends on the partition alone, not on the
    parallelism, so a rescaled job finds its state. Partitions from 128 on keep their number.
    """
    if not 0 <= partition < KEY_STRIDE:
        raise ValueError(f"Kafka partition {partition} is outside 0..{KEY_STRIDE - 1}, which the state keys cover")
    if partition >= MAX_PARALLELISM:
        return partition
    target = int(f"{partition:07b}"[::-1], 2)
    for j in range(2048):
        key = partition + KEY_STRIDE * j
        if key_group(key) == target:
            return key
    return partition  # not reached for any partition below 128 (tests/unit/test_ingest_core.py)


def partition_of_key(key: int) -> int:
    return key % KEY_STRIDE


def key_group(key: int) -> int:
    """Flink's key group of the state key Row.of(key), what its KeyByKeySelector makes of `key`.

    KeyGroupRangeAssignment: MathUtils.murmurHash(key.hashCode()) % max parallelism, where the
    hash of a one-field Row of an Integer is the value + 62. `pipelines.ingest` checks this
    against the JVM when it builds the job.
    """
    code = ((key + 62) * 0xCC9E2D51) & _M32
    code = ((code << 15) | (code >> 17)) & _M32
    code = (code * 0x1B873593) & _M32
    code = ((code << 13) | (code >> 19)) & _M32
    code = ((code * 5 + 0xE6546B64) & _M32) ^ 4
    code ^= code >> 16
    code = (code * 0x85EBCA6B) & _M32
    code ^= code >> 13
    code = (code * 0xC2B2AE35) & _M32
    code ^= code >> 16
    signed = code - (1 << 32) if code & 0x80000000 else code
    return (abs(signed) if signed != -(1 << 31) else 0) % MAX_PARALLELISM
