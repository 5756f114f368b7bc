"""The ingest job's per-log logic, free of Flink: validate, dedupe, seal, sequence, cut, sign.

`LogSequencer.step(log, record) -> outputs` is the whole job for one log (one Kafka partition),
in the bytewax `stateful_map` shape. The Flink operator in `pipelines/ingest.py` keeps the state
in keyed state and calls it; `auditlog ingest --from-recording` and the tests call it directly,
so every path runs exactly the same code.

Outputs are plain tuples so Flink can carry them:
    ("dlq", DeadLetter)            a record that is not a valid event, with the reason
    ("block", SealedBlockRecord)   a sealed block: archive object, signed checkpoint
Duplicates produce no output; they are counted.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

from schemas.events import (
    DEFAULT_PII_FIELDS,
    EventValidationError,
    canonical_entry,
    parse_event,
    pii_subject,
)
from schemas.retention import load_policy
from transforms.blocks import BlockHeader, encode_block_object, seal_block
from transforms.checkpoint import Checkpoint, sign_checkpoint
from transforms.merkle import CompactRange, leaf_hash
from transforms.note import Signer
from transforms.pii import SubjectKeys
from transforms.retention import RetentionPolicy, entry_until

# A record whose value is exactly this closes the open block of its partition. The cut ticker
# writes one into every partition at the block latency, so block boundaries live in the input
# itself and every replay cuts the same blocks (DESIGN.md contract 6). Not JSON, so never an event.
CUT_MARKER = b"\x00auditlog:cut\x00"


class SubjectKeySource(Protocol):
    def get_or_create(self, tenant_id: str, subject_id: str) -> SubjectKeys: ...


@dataclass(frozen=True)
class SourceRecord:
    """One Kafka record as the job sees it."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class DeadLetter:
    """A bad record, kept whole with where it came from and why it was refused."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    field: str
    reason: str

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "source": {"topic": self.topic, "partition": self.partition, "offset": self.offset},
                "timestamp_ms": self.timestamp_ms,
                "field": self.field,
                "reason": self.reason,
                "key_b64": base64.b64encode(self.key).decode() if self.key is not None else None,
                "value_b64": base64.b64encode(self.value).decode() if self.value is not None else None,
            },
            sort_keys=True,
        ).encode()


@dataclass(frozen=True)
class SealedBlockRecord:
    log_id: str
    block_index: int
    tree_size: int
    block_object: bytes
    checkpoint: str
    retain_until: str = ""  # the latest retention end of the block's events: its Object Lock date


@dataclass
class LogCursor:
    """The durable state of one log between blocks: tree, last header, and the open block."""

    log_id: str
    tree: CompactRange = field(default_factory=CompactRange)
    last_block: BlockHeader | None = None
    pending: list[bytes] = field(default_factory=list)
    # occurred_at of each pending entry, as the step saw it (not persisted: after a restore the
    # seal reads them from the entries, which costs a JSON parse each).
    pending_times: list[str] = field(default_factory=list, repr=False, compare=False)

    def to_bytes(self) -> bytes:
        """The sealed part of the cursor (the open block is kept separately, record by record)."""
        return json.dumps(
            {
                "log_id": self.log_id,
                "size": self.tree.size,
                "hashes": [h.hex() for h in self.tree.hashes],
                "last_block": self.last_block.to_json() if self.last_block else None,
            }
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes, pending: Iterable[bytes] = ()) -> LogCursor:
        obj = json.loads(data)
        tree = CompactRange(obj["size"], [bytes.fromhex(h) for h in obj["hashes"]])
        last = BlockHeader.from_json(obj["last_block"]) if obj["last_block"] else None
        return cls(obj["log_id"], tree, last, list(pending))


@dataclass(frozen=True)
class IngestOptions:
    topic: str
    origin_prefix: str
    block_size: int = 1000
    pii_fields: tuple[str, ...] = DEFAULT_PII_FIELDS
    # Stamps every event's retention class and end into its canonical form.
    retention: RetentionPolicy = field(default_factory=load_policy)
    # Benchmarks only: False skips leaf hashing, the tree, the chain and signing, to measure
    # what the verifiable log costs. Blocks are then plain, unverifiable JSON Lines.
    verifiable: bool = True

    def log_id(self, partition: int) -> str:
        return f"{self.topic}.p{partition}"

    def origin(self, log_id: str) -> str:
        return f"{self.origin_prefix}/{log_id}"


@dataclass
class Counters:
    accepted: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    blocks: int = 0
    cut_markers: int = 0


class DedupeIndex(Protocol):
    def seen(self, key: str) -> bool:
        """Returns True if `key` was seen before, and remembers it otherwise."""
        ...


class LogSequencer:
    """Turns one partition's records into blocks; the caller owns and persists the state."""

    def __init__(self, options: IngestOptions, keys: SubjectKeySource, signer: Signer) -> None:
        self.options = options
        self.keys = keys
        self.signer = signer
        self.counters = Counters()

    def step(self, log: LogCursor, dedupe: DedupeIndex, record: SourceRecord) -> list[tuple[str, Any]]:
        """Processes one record; returns the outputs (dead letters and sealed blocks)."""
        value = record.value
        if value == CUT_MARKER:
            self.counters.cut_markers += 1
            block = self.seal(log)
            return [("block", block)] if block else []
        try:
            if value is None:
                raise EventValidationError("record", None, "is empty (a null Kafka value)")
            event = parse_event(value)
        except EventValidationError as exc:
            self.counters.dead_letters += 1
            return [("dlq", self._dead_letter(record, exc.field, str(exc)))]
        if dedupe.seen(f"{event['tenant_id']}\x00{event['event_id']}"):
            self.counters.duplicates += 1
            return []
        keys = self.keys.get_or_create(event["tenant_id"], pii_subject(event))
        log.pending.append(canonical_entry(event, keys, self.options.retention, self.options.pii_fields))
        log.pending_times.append(event["occurred_at"])
        self.counters.accepted += 1
        if len(log.pending) >= self.options.block_size:
            block = self.seal(log)
            return [("block", block)] if block else []
        return []

    def seal(self, log: LogCursor) -> SealedBlockRecord | None:
        """Seals the open block of `log`, if any: header, archive object, signed checkpoint."""
        if not log.pending:
            return None
        entries, log.pending = log.pending, []
        times, log.pending_times = log.pending_times, []
        retain_until = max(entry_until(e) for e in entries)
        if not self.options.verifiable:
            last = log.last_block
            index, size = (last.block_index + 1, last.tree_size) if last else (0, 0)
            log.last_block = _unverified_header(log.log_id, index, size, len(entries))
            self.counters.blocks += 1
            return SealedBlockRecord(log.log_id, index, 0, b"\n".join(entries) + b"\n", "", retain_until)
        hashes = [leaf_hash(e) for e in entries]
        if len(times) != len(entries):  # restored from a checkpoint: the open block's times were not kept
            times = [json.loads(e)["occurred_at"] for e in entries]
        header = seal_block(log.log_id, log.last_block, log.tree, hashes, times)
        log.last_block = header
        note = sign_checkpoint(
            Checkpoint(self.options.origin(log.log_id), header.tree_size, header.tree_root), self.signer
        )
        self.counters.blocks += 1
        return SealedBlockRecord(
            log.log_id,
            header.block_index,
            header.tree_size,
            encode_block_object(header, entries),
            note,
            retain_until,
        )

    def _dead_letter(self, record: SourceRecord, field_name: str, reason: str) -> DeadLetter:
        return DeadLetter(
            self.options.topic,
            record.partition,
            record.offset,
            record.timestamp_ms,
            record.key,
            record.value,
            field_name,
            reason,
        )


def _unverified_header(log_id: str, index: int, size: int, count: int) -> BlockHeader:
    zero = bytes(32)
    return BlockHeader(log_id, index, size, count, size + count, zero, zero, zero, "", "")


class MemoryDedupe:
    """A set-backed DedupeIndex for tests and the recording path."""

    def __init__(self, seen: Sequence[str] = ()) -> None:
        self._seen = set(seen)

    def seen(self, key: str) -> bool:
        if key in self._seen:
            return True
        self._seen.add(key)
        return False


# --------------------------------------------------------------------------- state keys of the logs

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
