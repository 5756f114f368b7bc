"""The ingest job's per-log logic, free of Flink: validate, dedupe, seal, sequence, cut, sign.

`LogSequencer.step(log, record) -> outputs` is the whole job for one log (one Kafka partition),
in the bytewax `stateful_map` shape. The Flink operator in `pipelines/ingest_operators.py` keeps the state
in keyed state and calls it; `auditlog ingest --from-recording` and the tests call it directly,
so every path runs exactly the same code.

Outputs are plain tuples so Flink can carry them:
    ("dlq", DeadLetter)            a record that is not a valid event, with the reason
    ("block", SealedBlockRecord)   a sealed block: archive object, signed checkpoint
Duplicates produce no output; they are counted.

The rule for hostile input: every record becomes a leaf, a counted duplicate or a dead letter
whose reason names what was wrong; no record's content can make `step` raise, so none can stop
(and crash-loop) the job. Only the key store and the archive being unreachable raise, and a
restart retries those. An event of an erased subject is still logged, with that subject's PII
marked erased and no key re-created (`Counters.erased_subject_events`); when a replay meets it in
a block the archive already holds, the archived bytes (sealed before the erasure) are kept, so
re-running a topic after an erasure derives the same log.

About 570 lines, on purpose: the sequencer, the cursor it advances and the resume points it
writes are one unit of determinism (docs/design.md §6), read together when the contract is in
question. The state keys of the logs live in pipelines/state_keys.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from schemas.events import (
    DEFAULT_PII_FIELDS,
    EventValidationError,
    canonical_entry,
    parse_event,
    pii_subject,
)
from schemas.native import event_core
from schemas.reserved import SERVICE_SIG_HEADER, is_service_record, reserved_name, reserved_rule
from schemas.retention import load_policy
from transforms.blocks import BlockHeader, encode_block_object, seal_block
from transforms.checkpoint import Checkpoint, sign_checkpoint
from transforms.merkle import CompactRange, leaf_hash
from transforms.note import Signer
from transforms.pii import ERASED_MARK, SubjectErased, SubjectKeys, erased_value, is_erased_value
from transforms.retention import RetentionPolicy, entry_until
from transforms.tiles import MAX_ENTRY_BYTES

# A record whose value is exactly this closes the open block of its partition. The cut ticker
# writes one into every partition at the block latency, so block boundaries live in the input
# itself and every replay cuts the same blocks (docs/design.md §6). Not JSON, so never an event.
CUT_MARKER = b"\x00auditlog:cut\x00"


class SubjectKeySource(Protocol):
    def get_or_create(self, tenant_id: str, subject_id: str) -> SubjectKeys:
        """The subject's keys; raises transforms.pii.SubjectErased for an erased subject."""
        ...


class ArchivedBlocks(Protocol):
    def entries(self, log_id: str, block_index: int) -> list[bytes] | None:
        """The entries of an archived block, or None if the archive has no such block."""
        ...

    def header(self, log_id: str, block_index: int) -> BlockHeader | None:
        """The header of an archived (or expired) block, or None if the archive has neither."""
        ...

    def resume_points(self, log_id: str) -> list[int]:
        """The block indexes that have a resume point, ascending."""
        ...

    def resume_point(self, log_id: str, block_index: int) -> bytes:
        """The bytes of the resume point after block `block_index` (ResumePoint.to_bytes)."""
        ...


@dataclass(frozen=True)
class SourceRecord:
    """One Kafka record as the job sees it."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    # The record's SERVICE_SIG_HEADER (schemas/reserved.py), if any: marks the query service's records.
    service_sig: bytes | None = None


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
    resume: bytes = b""  # ResumePoint.to_bytes() when a record closed the block, else empty


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
    # The leaf hash of each pending entry, when the compiled core made it with the entry (None
    # where the Python path did); not persisted either: the seal hashes what it lacks.
    pending_hashes: list[bytes | None] = field(default_factory=list, repr=False, compare=False)
    # The Kafka offset after the last record stepped (kept at each block, for its resume point).
    next_offset: int = 0

    def to_bytes(self) -> bytes:
        """The sealed part of the cursor (the open block is kept separately, record by record)."""
        return json.dumps(
            {
                "log_id": self.log_id,
                "size": self.tree.size,
                "hashes": [h.hex() for h in self.tree.hashes],
                "last_block": self.last_block.to_json() if self.last_block else None,
                "next_offset": self.next_offset,
            }
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes, pending: Iterable[bytes] = ()) -> LogCursor:
        obj = json.loads(data)
        tree = CompactRange(obj["size"], [bytes.fromhex(h) for h in obj["hashes"]])
        last = BlockHeader.from_json(obj["last_block"]) if obj["last_block"] else None
        return cls(obj["log_id"], tree, last, list(pending), next_offset=obj.get("next_offset", 0))


@dataclass(frozen=True)
class ResumePoint:
    """Where a log stands after a block that a record closed: enough to go on without the records before.

    Archived beside the block (`logs/<log>/resume/`). `auditlog erase` deletes a topic's records
    up to the newest resume point (Kafka's DeleteRecords), so the plaintext of what was archived
    does not outlive an erasure; a job that then starts without state finds the partition's first
    offset past 0 and resumes the log from here (`resume_cursor`) instead of starting a new one.
    Only a record can close a block deterministically (a count or a cut marker): a block sealed at
    the end of a bounded input gets none.
    """

    block_index: int
    next_offset: int
    tree_size: int
    hashes: tuple[bytes, ...]
    # SHA-256 of the record that closed the block (at next_offset - 1): its timestamp, key and
    # value. `auditlog erase` deletes records only where the topic still holds that very record.
    closing: str = ""

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "block_index": self.block_index,
                "closing": self.closing,
                "hashes": [h.hex() for h in self.hashes],
                "next_offset": self.next_offset,
                "tree_size": self.tree_size,
                "version": 1,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> ResumePoint:
        obj = json.loads(data)
        if obj.get("version") != 1:
            raise ValueError(f"resume point version {obj.get('version')!r} is not 1")
        hashes = tuple(bytes.fromhex(h) for h in obj["hashes"])
        return cls(obj["block_index"], obj["next_offset"], obj["tree_size"], hashes, obj.get("closing", ""))


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
    # Which event core makes the entries: auto, native or python (Settings.core, schemas/native.py).
    # Both give the same bytes; the Python reference decides every record the compiled core refers.
    core: str = "auto"

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
    erased_subject_events: int = 0  # accepted events whose subject was erased: PII marked, not sealed

    def records(self) -> int:
        """Records stepped so far: each is exactly one of these outcomes."""
        return self.accepted + self.duplicates + self.dead_letters + self.cut_markers


class DedupeIndex(Protocol):
    def seen(self, key: str) -> bool:
        """Returns True if `key` was seen before, and remembers it otherwise."""
        ...


class LogSequencer:
    """Turns one partition's records into blocks; the caller owns and persists the state."""

    def __init__(
        self,
        options: IngestOptions,
        keys: SubjectKeySource,
        signer: Signer,
        archived: ArchivedBlocks | None = None,
    ) -> None:
        self.options = options
        self.keys = keys
        self.signer = signer
        self.service = signer.verifier()  # the query service signs its records with the same key
        self.archived = archived
        self.counters = Counters()
        self.core = event_core(options.core, options.pii_fields)  # None: the Python reference

    def step(self, log: LogCursor, dedupe: DedupeIndex, record: SourceRecord) -> list[tuple[str, Any]]:
        """Processes one record; returns the outputs (dead letters and sealed blocks).

        Never raises because of the record's content (see the module docstring); raises only when
        the key store or the archive fails, which is no fault of the record.
        """
        value = record.value
        log.next_offset = record.offset + 1
        if value == CUT_MARKER:
            self.counters.cut_markers += 1
            block = self.seal(log, closing=record)
            return [("block", block)] if block else []
        if self.core is not None and value is not None:
            parsed = self.core.parse(value)
            if parsed is not None:
                made = self._native_entry(parsed)
                if made is not None:
                    return self._append(
                        log, dedupe, record, parsed.tenant_id, parsed.event_id, parsed.occurred_at, *made
                    )
        # The reference path: every record the compiled core did not take, and every dead letter.
        try:
            event = self._admit(record)
        except EventValidationError as exc:
            return self._reject(record, exc.field, str(exc))
        except Exception as exc:  # noqa: BLE001 - no record's content may stop the job
            return self._reject(record, "record", f"event rejected: record could not be read ({_said(exc)})")
        try:
            keys: SubjectKeys | None = self.keys.get_or_create(event["tenant_id"], pii_subject(event))
        except SubjectErased:
            keys = None
        try:
            entry = canonical_entry(event, keys, self.options.retention, self.options.pii_fields)
        except Exception as exc:  # noqa: BLE001 - as above: a dead letter, before dedupe remembers the id
            return self._reject(
                record,
                "event",
                f"event {event['event_id']} rejected: its canonical form could not be made ({_said(exc)})",
            )
        return self._append(
            log, dedupe, record, event["tenant_id"], event["event_id"], event["occurred_at"], entry, None, keys is None
        )

    def _native_entry(self, parsed: Any) -> tuple[bytes, bytes, bool] | None:
        return native_entry(self.core, self.keys, self.options.retention, parsed)

    def _append(
        self,
        log: LogCursor,
        dedupe: DedupeIndex,
        record: SourceRecord,
        tenant_id: str,
        event_id: str,
        occurred_at: str,
        entry: bytes,
        leaf: bytes | None,
        erased: bool,
    ) -> list[tuple[str, Any]]:
        """Dedupe, then the entry joins the open block (sealed when full)."""
        if dedupe.seen(dedupe_key(tenant_id, event_id)):
            self.counters.duplicates += 1
            return []
        log.pending.append(entry)
        log.pending_times.append(occurred_at)
        log.pending_hashes.append(leaf)
        self.counters.accepted += 1
        if erased:
            self.counters.erased_subject_events += 1
        if len(log.pending) >= self.options.block_size:
            block = self.seal(log, closing=record)
            return [("block", block)] if block else []
        return []

    def _admit(self, record: SourceRecord) -> dict[str, Any]:
        """The record's validated event; EventValidationError names what was wrong."""
        if record.value is None:
            raise EventValidationError("record", None, "is empty (a null Kafka value)")
        event = parse_event(record.value)
        reserved = reserved_name(event)
        if reserved and not is_service_record(self.service, record.value, record.service_sig):
            raise EventValidationError(*reserved, reserved_rule(*reserved), event["event_id"])
        return event

    def _reject(self, record: SourceRecord, field_name: str, reason: str) -> list[tuple[str, Any]]:
        self.counters.dead_letters += 1
        return [("dlq", self._dead_letter(record, field_name, reason))]

    def seal(self, log: LogCursor, closing: SourceRecord | None = None) -> SealedBlockRecord | None:
        """Seals the open block of `log`, if any: header, archive object, signed checkpoint.

        `closing`: the record that closed it (the block's last event or a cut marker), which gives
        the block a resume point at `log.next_offset`; None when the end of a bounded input did.
        """
        if not log.pending:
            return None
        entries, log.pending = log.pending, []
        times, log.pending_times = log.pending_times, []
        known, log.pending_hashes = log.pending_hashes, []
        if self.archived is not None and any(ERASED_MARK in e for e in entries):
            adopted = self._as_archived(log, entries)
            known = [h if a is e else None for h, a, e in zip(known, adopted, entries, strict=False)]
            entries = adopted
        retain_until = max(entry_until(e) for e in entries)
        if not self.options.verifiable:
            last = log.last_block
            index, size = (last.block_index + 1, last.tree_size) if last else (0, 0)
            log.last_block = _unverified_header(log.log_id, index, size, len(entries))
            self.counters.blocks += 1
            return SealedBlockRecord(log.log_id, index, 0, b"\n".join(entries) + b"\n", "", retain_until)
        if len(known) != len(entries):  # restored from a checkpoint: the open block's hashes were not kept
            known = [None] * len(entries)
        hashes = [h if h is not None else leaf_hash(e) for h, e in zip(known, entries, strict=True)]
        if len(times) != len(entries):  # restored from a checkpoint: the open block's times were not kept
            times = [json.loads(e)["occurred_at"] for e in entries]
        header = seal_block(log.log_id, log.last_block, log.tree, hashes, times)
        log.last_block = header
        note = sign_checkpoint(
            Checkpoint(self.options.origin(log.log_id), header.tree_size, header.tree_root), self.signer
        )
        self.counters.blocks += 1
        resume = b""
        if closing is not None:  # fingerprinted here, once a block, not for every record stepped
            fingerprint = record_fingerprint(closing.timestamp_ms, closing.key, closing.value)
            point = ResumePoint(header.block_index, log.next_offset, log.tree.size, tuple(log.tree.hashes), fingerprint)
            resume = point.to_bytes()
        return SealedBlockRecord(
            log.log_id,
            header.block_index,
            header.tree_size,
            encode_block_object(header, entries),
            note,
            retain_until,
            resume,
        )

    def _as_archived(self, log: LogCursor, entries: list[bytes]) -> list[bytes]:
        """The block's entries, with each erased-marked one the archive holds sealed put back.

        A replay that meets events logged before their subject was erased cannot seal them
        again (the keys are gone); the archive holds the bytes the first run derived from the
        same records, so those are the block's bytes. An entry the archive does not hold, or
        holds with other content, stays as it is (a different block is then the archive's alarm).
        """
        index = log.last_block.block_index + 1 if log.last_block else 0
        archived = self.archived.entries(log.log_id, index) if self.archived else None
        if archived is None or len(archived) != len(entries):
            return entries
        return [
            archived[i] if ERASED_MARK in entry and _same_but_erased(archived[i], entry) else entry
            for i, entry in enumerate(entries)
        ]

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


def resume_cursor(log_id: str, first_offset: int, archived: ArchivedBlocks) -> LogCursor | None:
    """The cursor of a log whose partition now starts at `first_offset`, from the archive.

    For a log the job has no state for, or restored state older than the archive, whose records
    before `first_offset` were deleted (an erasure truncates the topic up to the newest resume
    point). Takes the newest resume point at or before `first_offset`; None when there is none.
    The caller restores dedupe with `archived_event_keys`.
    """
    for index in reversed(archived.resume_points(log_id)):
        point = ResumePoint.from_bytes(archived.resume_point(log_id, index))
        if point.next_offset <= first_offset:
            break
    else:
        return None
    header = archived.header(log_id, point.block_index)
    if header is None:
        return None
    cursor = LogCursor(log_id, CompactRange(point.tree_size, list(point.hashes)), header, next_offset=point.next_offset)
    if cursor.tree.root() != header.tree_root:
        raise ValueError(f"resume point {point.block_index} of {log_id} does not match its block's tree root")
    return cursor


def archived_event_keys(log_id: str, last_block: int, archived: ArchivedBlocks) -> list[str]:
    """The dedupe keys (tenant, event id) of every archived block of a log up to `last_block`.

    A run that read the deleted records would have remembered all of them, so a resumed log
    restores them all: anything less lets a late duplicate become a leaf. One S3 read per block,
    once per resumed log; an expired block's events are long past any dedupe window.
    """
    keys: list[str] = []
    for index in range(last_block + 1):
        keys += entry_keys(archived.entries(log_id, index) or ())
    return keys


def dedupe_key(tenant_id: str, event_id: str) -> str:
    """What dedupe remembers of an event: its tenant and id (an id is unique within its tenant)."""
    return f"{tenant_id}\x00{event_id}"


def entry_keys(entries: Iterable[bytes]) -> list[str]:
    """The dedupe keys of canonical entries."""
    keys = []
    for entry in entries:
        doc = orjson.loads(entry)
        keys.append(dedupe_key(doc["tenant_id"], doc["event_id"]))
    return keys


def native_entry(core: Any, keys: Any, retention: RetentionPolicy, parsed: Any) -> tuple[bytes, bytes, bool] | None:
    """(entry, leaf hash, subject erased) of a record the compiled core parsed; None hands it to Python.

    What the job's sequencer and the gateway's receipts both run (schemas/native.py). `keys` is
    the key store (`get_or_create`); its failures raise, as on the Python path; anything else that
    goes wrong (a retention end beyond the calendar, say) is left to the reference to name.
    """
    try:
        subject: SubjectKeys | None = keys.get_or_create(parsed.tenant_id, parsed.subject)
    except SubjectErased:
        subject = None
    try:
        stamp = retention.stamp(parsed.action, parsed.occurred_at)
        sealing = (subject.enc_key, subject.mac_key, subject.key_id) if subject is not None else None
        entry, leaf = core.entry(parsed, sealing, stamp["class"], stamp["until"])
    except Exception:  # noqa: BLE001 - the reference path decides, and names the reason
        return None
    if len(entry) > MAX_ENTRY_BYTES:
        return None  # too long for a tile bundle: the reference refuses it, naming the limit
    return entry, leaf, subject is None


def record_fingerprint(timestamp_ms: int, key: bytes | None, value: bytes | None) -> str:
    """SHA-256 over a Kafka record's timestamp, key and value: which record a resume point follows."""
    digest = hashlib.sha256(str(timestamp_ms).encode() + b"\n")
    for part in (key, value):
        digest.update(b"-" if part is None else b"+%d:" % len(part) + part)
    return digest.hexdigest()


def service_sig(headers: Iterable[tuple[str, bytes | None]]) -> bytes | None:
    """The SERVICE_SIG_HEADER among a record's headers, or None."""
    return next((value for name, value in headers if name == SERVICE_SIG_HEADER), None)


def _said(exc: BaseException) -> str:
    """An unexpected error as a dead letter's reason: its kind and its first 200 characters."""
    text = str(exc)
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def _same_but_erased(original: bytes, marked: bytes) -> bool:
    """True if `marked` is `original` with some of its sealed PII values marked erased."""
    try:
        was, now = orjson.loads(original), orjson.loads(marked)
        sealed, erased = was.get("pii", {}), now.get("pii", {})
        if set(sealed) != set(erased):
            return False
        for path, value in erased.items():
            if is_erased_value(value) and isinstance(sealed[path], dict) and "ct" in sealed[path]:
                sealed[path] = erased_value()
        return bool(was == now)
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return False


def _unverified_header(log_id: str, index: int, size: int, count: int) -> BlockHeader:
    zero = bytes(32)
    return BlockHeader(log_id, index, size, count, size + count, zero, zero, zero, "", "")


class ArchivedEntries:
    """The archive as the sequencer reads it: blocks with erased subjects, and resume points."""

    def __init__(self, archive: Any) -> None:
        self.archive = archive

    def _block(self, log_id: str, block_index: int) -> tuple[Any, list[bytes]] | None:
        try:
            header, entries = self.archive.read_block(log_id, block_index)
        except LookupError:  # the archive's ArchiveNotFoundError is one
            return None
        return header, list(entries)

    def entries(self, log_id: str, block_index: int) -> list[bytes] | None:
        found = self._block(log_id, block_index)
        return found[1] if found else None

    def header(self, log_id: str, block_index: int) -> BlockHeader | None:
        found = self._block(log_id, block_index)
        return found[0] if found else None

    def resume_points(self, log_id: str) -> list[int]:
        return list(self.archive.list_resume_points(log_id))

    def resume_point(self, log_id: str, block_index: int) -> bytes:
        return bytes(self.archive.get_resume_point(log_id, block_index))


class SeenState(Protocol):
    """Where dedupe keeps the keys of sealed blocks: Flink's keyed MapState has this shape."""

    def contains(self, key: str) -> bool: ...

    def put_all(self, entries: dict[str, bool]) -> None: ...


class BlockDedupe:
    """A DedupeIndex over keyed state that costs one state call per new record, not two.

    The keys of the open block's events are held here, and go into `state` in one call when
    the block is sealed (`sealed`). Until then each is in the open block, whose entries the
    caller keeps in its own state record by record anyway; after a restore, the keys are read
    back from those entries (`open_entries`). So the state and the open block between them
    always hold every key seen, at every checkpoint.
    """

    __slots__ = ("open", "state")

    def __init__(self, state: SeenState, open_entries: Iterable[bytes] = ()) -> None:
        self.state = state
        self.open = set(entry_keys(open_entries))

    def seen(self, key: str) -> bool:
        if key in self.open or self.state.contains(key):
            return True
        self.open.add(key)
        return False

    def sealed(self) -> None:
        """The open block was sealed (and a new one is empty): its keys go into the state."""
        if self.open:
            self.state.put_all(dict.fromkeys(self.open, True))
            self.open = set()

    def restart(self, keys: Iterable[str]) -> None:
        """The open block was dropped for a resume point: remember `keys` (the archive's) instead."""
        self.open = set()
        self.state.put_all(dict.fromkeys(keys, True))


class MemoryDedupe:
    """A set-backed DedupeIndex for tests and the recording path."""

    def __init__(self, seen: Sequence[str] = ()) -> None:
        self._seen = set(seen)

    def seen(self, key: str) -> bool:
        if key in self._seen:
            return True
        self._seen.add(key)
        return False
