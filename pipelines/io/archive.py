"""The WORM archive: sealed blocks and signed checkpoints as immutable S3 objects (docs/design.md §7).

The archive is the source of truth; ClickHouse is only a search index rebuilt from it. Layout::

    logs/{log_id}/blocks/{block_index:012d}.block            encode_block_object(header, entries)
    logs/{log_id}/checkpoints/{tree_size:015d}.checkpoint    the signed note, UTF-8
    logs/{log_id}/expired/{block_index:012d}.leaves          encode_expired_block(header, leaf hashes, ...)
    logs/{log_id}/resume/{block_index:012d}.resume           where the job resumes after the block (JSON:
                                                             next Kafka offset, tree size, compact range)
    logs/{log_id}/cosigned/…, logs/{log_id}/witness-refusals/…  witnesses' answers (pipelines/witnessing.py)
    holds/{hold_id}.json, holds/{hold_id}.released.json       legal holds (pipelines/retention.py)

A block object is locked until the retention of its longest-kept event ends; `auditlog expire`
then deletes it, after writing its header and leaf hashes to `expired/` (locked as long as the
checkpoints), so the log's chain, tree and every retained event's proofs still verify.

Every PUT carries `If-None-Match: *`, Object Lock COMPLIANCE retention and a SHA-256 the server
checks. A PUT that finds the key taken reads the object back: identical bytes are success (a replay
re-wrote what it wrote before), different bytes raise `ArchiveConflictError` and nothing is
overwritten. Transient failures (connection refused, timeouts, 5xx, throttling) are retried with
exponential backoff and jitter until `RetryPolicy.deadline_s`, so an S3 outage stalls the writer
instead of failing it.

`S3Archive` talks to S3 (the local stack's SeaweedFS, or AWS); `InMemoryArchive` has the same
semantics (conditional puts, conflicts, versions, retention) for tests::

    archive = open_archive(endpoint="http://127.0.0.1:8333", bucket="auditlog-worm",
                           access_key="auditlog", secret_key="auditlog-secret")
    archive.put_block("log0", 0, encode_block_object(header, entries))   # locked for retention_days
    archive.list_blocks("log0")          # [0]
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import random
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from hashlib import sha256
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from schemas.settings import Settings
    from transforms.retention import Period

__all__ = [
    "Archive",
    "ArchiveConflictError",
    "ArchiveError",
    "ArchiveLockedError",
    "ArchiveNotFoundError",
    "ArchiveUnavailableError",
    "InMemoryArchive",
    "ObjectVersion",
    "PutResult",
    "Retention",
    "RetryPolicy",
    "S3Archive",
    "block_key",
    "checkpoint_key",
    "ensure_bucket",
    "lock_until",
    "open_archive",
]

log = logging.getLogger(__name__)

LOGS_PREFIX = "logs/"
BLOCKS_DIR = "blocks"
CHECKPOINTS_DIR = "checkpoints"
EXPIRED_DIR = "expired"
EXPIRED_SUFFIX = ".leaves"
RESUME_DIR = "resume"
RESUME_SUFFIX = ".resume"
COSIGNED_DIR = "cosigned"  # witnesses' cosigned checkpoints (pipelines/witnessing.py)
REFUSALS_DIR = "witness-refusals"  # what witnesses refused to cosign, kept as evidence
HOLDS_PREFIX = "holds/"
BLOCK_SUFFIX = ".block"
CHECKPOINT_SUFFIX = ".checkpoint"
BLOCK_INDEX_DIGITS = 12
TREE_SIZE_DIGITS = 15
LOCK_MODE = "COMPLIANCE"
DEFAULT_RETENTION_DAYS = 2557.0
"""Seven years (SEC 17a-4, SOX): how long a put locks its object unless the caller says otherwise."""

_LOG_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=-]{0,127}")
_BLOCK_NAME = re.compile(rf"(\d{{{BLOCK_INDEX_DIGITS}}}){re.escape(BLOCK_SUFFIX)}")
_RESUME_NAME = re.compile(rf"(\d{{{BLOCK_INDEX_DIGITS}}}){re.escape(RESUME_SUFFIX)}")
_EXPIRED_NAME = re.compile(rf"(\d{{{BLOCK_INDEX_DIGITS}}}){re.escape(EXPIRED_SUFFIX)}")
_CHECKPOINT_NAME = re.compile(rf"(\d{{{TREE_SIZE_DIGITS}}}){re.escape(CHECKPOINT_SUFFIX)}")

# Errors S3 (or SeaweedFS) returns for an overloaded or restarting server: worth waiting for.
_RETRYABLE_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeoutException",
        "RequestLimitExceeded",
        "TooManyRequests",
    }
)

T = TypeVar("T")


# --------------------------------------------------------------------------- layout


def _check_log_id(log_id: str) -> str:
    if not _LOG_ID.fullmatch(log_id) or ".." in log_id:
        raise ValueError(
            f"log id {log_id!r} cannot name an archive folder: use 1-128 characters from "
            "A-Z a-z 0-9 . _ = - (no '/', not starting with '.' or '-')"
        )
    return log_id


def log_prefix(log_id: str) -> str:
    """Returns `logs/{log_id}/`, the folder of one log."""
    return f"{LOGS_PREFIX}{_check_log_id(log_id)}/"


def block_key(log_id: str, block_index: int) -> str:
    """Returns the key of a block object; requires 0 <= block_index < 10**12."""
    if not 0 <= block_index < 10**BLOCK_INDEX_DIGITS:
        raise ValueError(f"block index {block_index} is outside 0 .. 10^{BLOCK_INDEX_DIGITS}-1")
    return f"{log_prefix(log_id)}{BLOCKS_DIR}/{block_index:0{BLOCK_INDEX_DIGITS}d}{BLOCK_SUFFIX}"


def checkpoint_key(log_id: str, tree_size: int) -> str:
    """Returns the key of a signed checkpoint; requires 0 <= tree_size < 10**15."""
    if not 0 <= tree_size < 10**TREE_SIZE_DIGITS:
        raise ValueError(f"tree size {tree_size} is outside 0 .. 10^{TREE_SIZE_DIGITS}-1")
    return f"{log_prefix(log_id)}{CHECKPOINTS_DIR}/{tree_size:0{TREE_SIZE_DIGITS}d}{CHECKPOINT_SUFFIX}"


def expired_key(log_id: str, block_index: int) -> str:
    """Returns the key of an expired block's header and leaf hashes; requires 0 <= block_index < 10**12."""
    block_key(log_id, block_index)  # checks the log id and the index
    return f"{log_prefix(log_id)}{EXPIRED_DIR}/{block_index:0{BLOCK_INDEX_DIGITS}d}{EXPIRED_SUFFIX}"


def resume_key(log_id: str, block_index: int) -> str:
    """Returns the key of the job's resume point after block `block_index`; requires 0 <= block_index < 10**12."""
    block_key(log_id, block_index)  # checks the log id and the index
    return f"{log_prefix(log_id)}{RESUME_DIR}/{block_index:0{BLOCK_INDEX_DIGITS}d}{RESUME_SUFFIX}"


def parse_key(key: str) -> tuple[str, str, int] | None:
    """Returns (log id, kind, block index or tree size) of an auditlog key, else None.

    The kind is "block", "checkpoint", "expired" or "resume".
    """
    if not key.startswith(LOGS_PREFIX):
        return None
    parts = key[len(LOGS_PREFIX) :].split("/")
    if len(parts) != 3:
        return None
    log_id, folder, name = parts
    pattern = {
        BLOCKS_DIR: _BLOCK_NAME,
        CHECKPOINTS_DIR: _CHECKPOINT_NAME,
        EXPIRED_DIR: _EXPIRED_NAME,
        RESUME_DIR: _RESUME_NAME,
    }.get(folder)
    match = pattern.fullmatch(name) if pattern else None
    if match is None:
        return None
    kind = {BLOCKS_DIR: "block", CHECKPOINTS_DIR: "checkpoint", EXPIRED_DIR: "expired", RESUME_DIR: "resume"}[folder]
    return log_id, kind, int(match.group(1))


MIN_LOCK = dt.timedelta(seconds=1)
"""The shortest lock any put gets: a block whose events' retention had all ended when it was sealed
(a backfill) may be expired right away, but never holds an unlocked version."""


def block_lock_dates(
    retain_until: str, evidence: Period | None, default_days: float, now: dt.datetime | None = None
) -> tuple[dt.datetime, dt.datetime]:
    """(block lock, checkpoint lock) for a sealed block whose events' latest retention end is `retain_until`.

    The block object is locked exactly as long as its longest-kept event (its class is part of the
    event's canonical form), and at least MIN_LOCK. The checkpoint is locked for `evidence` from now
    (the policy's longest class: proofs of every event still kept depend on checkpoints and leaf
    hashes), and never for less than its block. An entry without retention, or no policy, falls back
    to `default_days`.
    """
    from transforms.retention import KEPT_FOREVER, parse_time

    start = now or dt.datetime.now(dt.UTC)
    fallback = start + dt.timedelta(days=default_days)
    ends = parse_time(retain_until) if retain_until and retain_until != KEPT_FOREVER else fallback
    block = max(ends, start + MIN_LOCK)
    checkpoint = max(block, evidence.after(start) if evidence is not None else fallback)
    return block, checkpoint


def lock_until(days: float, now: dt.datetime | None = None) -> dt.datetime:
    """Returns the UTC time `days` from now (or from `now`): an Object Lock retain-until date."""
    start = now or dt.datetime.now(dt.UTC)
    return start + dt.timedelta(days=days)


def _sha256_hex(data: bytes) -> str:
    return sha256(data).hexdigest()


# --------------------------------------------------------------------------- results and errors


class ArchiveError(Exception):
    """Base class of the archive's errors."""


class ArchiveConflictError(ArchiveError):
    """Integrity alarm: a key already holds different bytes than the ones being written.

    Attributes:
        key: the object key.
        archived_sha256: hex SHA-256 of the bytes already archived (they are kept).
        new_sha256: hex SHA-256 of the bytes that were refused.
    """

    def __init__(self, key: str, archived_sha256: str, new_sha256: str) -> None:
        self.key = key
        self.archived_sha256 = archived_sha256
        self.new_sha256 = new_sha256
        super().__init__(
            f"INTEGRITY ALARM: {key} already holds different bytes (archived sha256 {archived_sha256}, "
            f"refused sha256 {new_sha256}); the archived object was kept. The writer produced a "
            "different block or checkpoint for the same position: stop it and verify the log."
        )


class ArchiveNotFoundError(ArchiveError, LookupError):
    """No object (or no such version) at a key."""

    def __init__(self, key: str, version_id: str | None = None) -> None:
        self.key = key
        self.version_id = version_id
        where = f"{key} (version {version_id})" if version_id else key
        super().__init__(f"archive has no object at {where}")


class ArchiveLockedError(ArchiveError):
    """A delete was refused because the object version is under retention."""


class ArchiveUnavailableError(ArchiveError):
    """The archive stayed unreachable (or kept failing) until the retry deadline."""


@dataclass(frozen=True)
class PutResult:
    """What an immutable put did.

    Attributes:
        key: the object key.
        sha256: hex SHA-256 of the bytes.
        created: True if this call stored the object; False if identical bytes were already there.
        version_id: the S3 version created (None if none was created or the store has none).
    """

    key: str
    sha256: str
    created: bool
    version_id: str | None = None


@dataclass(frozen=True)
class ObjectVersion:
    """One version of a key, newest first in `Archive.object_versions`.

    A block key should have exactly one version; a second one (or a delete marker) means someone
    wrote to it without `If-None-Match`, which a tamper check reports.
    """

    key: str
    version_id: str
    is_latest: bool
    is_delete_marker: bool
    size: int
    last_modified: dt.datetime | None
    etag: str = ""


@dataclass(frozen=True)
class Retention:
    """Object Lock retention of an object version."""

    mode: str
    retain_until: dt.datetime


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often to retry transient S3 failures.

    Attributes:
        deadline_s: give up (ArchiveUnavailableError) once this many seconds have passed since the
            operation began; an outage shorter than this only stalls the writer.
        initial_backoff_s: the first wait; each further wait doubles, up to `max_backoff_s`.
        max_backoff_s: the longest single wait.
    """

    deadline_s: float = 15 * 60.0
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """The wait before retry number `attempt` (1-based): half fixed, half jitter."""
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * 2.0 ** (attempt - 1))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


# --------------------------------------------------------------------------- the interface


class Archive(ABC):
    """An append-only object store of blocks and checkpoints.

    Subclasses provide the storage primitives (`_create`, `get`, `_list`, `object_versions`,
    `retention`, `delete_version`); the conditional-write rule, the layout and every reader
    live here so that all implementations behave alike. Puts without an explicit retain-until
    lock their object for `retention_days` from now.
    """

    retention_days: float = DEFAULT_RETENTION_DAYS

    # ---- primitives

    @abstractmethod
    def _create(self, key: str, data: bytes, checksum: str, retain_until: dt.datetime) -> str | None:
        """Stores `data` at `key` if no current object exists there; returns the version id.

        Raises `_KeyTaken` if the key already holds an object (the caller compares bytes).
        `checksum` is the base64 SHA-256 of `data`.
        """

    @abstractmethod
    def get(self, key: str, version_id: str | None = None) -> bytes:
        """Returns the bytes at `key` (current version unless `version_id`); raises ArchiveNotFoundError."""

    @abstractmethod
    def _list(self, prefix: str, delimiter: str | None, start_after: str | None = None) -> Iterator[str]:
        """Yields every key under `prefix` (or, with a delimiter, every common prefix), sorted."""

    @abstractmethod
    def versions_under(self, prefix: str) -> dict[str, list[ObjectVersion]]:
        """Returns every version of every key under `prefix`, delete markers included, newest first per key."""

    def object_versions(self, key: str) -> list[ObjectVersion]:
        """Returns every version of `key`, delete markers included, newest first."""
        return self.versions_under(key).get(key, [])

    @abstractmethod
    def retention(self, key: str, version_id: str | None = None) -> Retention | None:
        """Returns the Object Lock retention of a version (the current one by default), if any."""

    @abstractmethod
    def delete_version(self, key: str, version_id: str) -> None:
        """Deletes one version, for expiry; raises ArchiveLockedError while under retention or legal hold."""

    @abstractmethod
    def legal_hold(self, key: str, version_id: str) -> bool:
        """True if the version is under an Object Lock legal hold."""

    @abstractmethod
    def set_legal_hold(self, key: str, version_id: str, on: bool) -> None:
        """Places (`on`) or lifts an Object Lock legal hold on one version: while on, nobody can delete it."""

    # ---- writers

    def put_immutable(self, key: str, data: bytes, retain_until: dt.datetime | None = None) -> PutResult:
        """Writes `data` once at `key` under COMPLIANCE retention until `retain_until`.

        Idempotent: if `key` already holds the same bytes the call succeeds with created=False.
        `retain_until` defaults to `retention_days` from now.

        Raises:
            ArchiveConflictError: `key` holds different bytes (nothing is overwritten).
            ArchiveUnavailableError: the store kept failing until the retry deadline.
            ValueError: `retain_until` is naive or not in the future.
        """
        if retain_until is None:
            retain_until = lock_until(self.retention_days)
        if retain_until.tzinfo is None:
            raise ValueError(f"retain_until {retain_until} has no time zone; pass an aware UTC datetime")
        if retain_until <= dt.datetime.now(dt.UTC):
            raise ValueError(f"retain_until {retain_until.isoformat()} is not in the future")
        digest = sha256(data).digest()
        checksum = base64.b64encode(digest).decode()
        try:
            version = self._create(key, data, checksum, retain_until)
            return PutResult(key, digest.hex(), created=True, version_id=version)
        except _KeyTaken:
            pass
        archived = self.get(key)
        if archived != data:
            conflict = ArchiveConflictError(key, _sha256_hex(archived), digest.hex())
            log.error("%s", conflict)  # an alarm even if a caller swallows the exception
            raise conflict
        log.debug("archive: %s already holds these %d bytes; re-write is a no-op", key, len(data))
        return PutResult(key, digest.hex(), created=False)

    def put_block(
        self, log_id: str, block_index: int, data: bytes, retain_until: dt.datetime | None = None
    ) -> PutResult:
        """Archives a block object (`encode_block_object` bytes) at `block_key(log_id, block_index)`."""
        return self.put_immutable(block_key(log_id, block_index), data, retain_until)

    def put_checkpoint(
        self, log_id: str, tree_size: int, note: str, retain_until: dt.datetime | None = None
    ) -> PutResult:
        """Archives a signed checkpoint note at `checkpoint_key(log_id, tree_size)`."""
        return self.put_immutable(checkpoint_key(log_id, tree_size), note.encode("utf-8"), retain_until)

    def put_sealed_block(self, block: Any, evidence: Period | None = None) -> None:
        """Archives a sealed block (an ingest_core.SealedBlockRecord) and its signed checkpoint.

        Locks are `block_lock_dates`: the block until its events' latest retention end, the
        checkpoint for `evidence` (the retention policy's longest period) from now.
        """
        block_lock, checkpoint_lock = block_lock_dates(block.retain_until, evidence, self.retention_days)
        self.put_block(block.log_id, block.block_index, block.block_object, block_lock)
        if block.checkpoint:  # empty only in the unverifiable benchmark mode
            self.put_checkpoint(block.log_id, block.tree_size, block.checkpoint, checkpoint_lock)
        if block.resume:  # only blocks a record closed have one (see ingest_core.ResumePoint)
            self.put_immutable(resume_key(block.log_id, block.block_index), block.resume, block_lock)

    # ---- readers

    def keys(self, prefix: str) -> list[str]:
        """Returns every current key under `prefix`, sorted."""
        return list(self._list(prefix, None))

    def list_logs(self) -> list[str]:
        """Returns the ids of every log that has objects in the archive, sorted."""
        return [p[len(LOGS_PREFIX) :].rstrip("/") for p in self._list(LOGS_PREFIX, "/")]

    def list_blocks(self, log_id: str, after: int | None = None) -> list[int]:
        """Returns the indexes of the log's archived blocks (above `after`), ascending; gaps stay."""
        start = block_key(log_id, after) if after is not None else None
        return self._numbered(f"{log_prefix(log_id)}{BLOCKS_DIR}/", _BLOCK_NAME, start)

    def get_block(self, log_id: str, block_index: int) -> bytes:
        return self.get(block_key(log_id, block_index))

    def list_checkpoints(self, log_id: str) -> list[int]:
        """Returns the tree sizes of the log's archived checkpoints, ascending."""
        return self._numbered(f"{log_prefix(log_id)}{CHECKPOINTS_DIR}/", _CHECKPOINT_NAME)

    def list_resume_points(self, log_id: str) -> list[int]:
        """Returns the block indexes after which the job left a resume point, ascending."""
        return self._numbered(f"{log_prefix(log_id)}{RESUME_DIR}/", _RESUME_NAME)

    def get_resume_point(self, log_id: str, block_index: int) -> bytes:
        return self.get(resume_key(log_id, block_index))

    def get_checkpoint(self, log_id: str, tree_size: int) -> str:
        return self.get(checkpoint_key(log_id, tree_size)).decode("utf-8")

    def latest_checkpoint(self, log_id: str) -> tuple[int, str] | None:
        """Returns (tree size, signed note) of the log's largest checkpoint, or None if it has none."""
        sizes = self.list_checkpoints(log_id)
        if not sizes:
            return None
        return sizes[-1], self.get_checkpoint(log_id, sizes[-1])

    def _numbered(self, prefix: str, pattern: re.Pattern[str], start_after: str | None = None) -> list[int]:
        numbers = []
        for key in self._list(prefix, None, start_after):
            match = pattern.fullmatch(key[len(prefix) :])
            if match is None:
                log.warning("archive: ignoring unexpected object %s (not written by auditlog)", key)
                continue
            numbers.append(int(match.group(1)))
        return sorted(numbers)


class _KeyTaken(Exception):
    """Internal: a conditional create found the key occupied."""


# --------------------------------------------------------------------------- S3


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _http_status(exc: Exception) -> int:
    response = getattr(exc, "response", None) or {}
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def is_transient(exc: Exception) -> bool:
    """True for failures worth retrying: no connection, timeouts, 5xx, 429 and throttling codes."""
    from botocore.exceptions import ClientError, HTTPClientError, IncompleteReadError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(exc, (HTTPClientError, BotoConnectionError, IncompleteReadError)):
        return True
    if isinstance(exc, ClientError):
        status = _http_status(exc)
        return status >= 500 or status == 429 or _error_code(exc) in _RETRYABLE_CODES
    return False


class S3Archive(Archive):
    """The archive in an S3 bucket with versioning and Object Lock (see `ensure_bucket`).

    Args:
        client: a boto3 S3 client (e.g. `infra.stack.s3_client(settings)`).
        bucket: the bucket; it must have Object Lock enabled.
        retry: how long to wait out transient failures.
        retention_days: how long puts lock their objects unless given a retain-until date.
        sleep: the sleep function (tests pass a fake).
        clock: a monotonic clock in seconds (tests pass a fake).
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        retry: RetryPolicy | None = None,
        retention_days: float = DEFAULT_RETENTION_DAYS,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.retry = retry or RetryPolicy()
        self.retention_days = retention_days
        self._sleep = sleep
        self._clock = clock
        self._rng = random.Random()

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> S3Archive:
        """The archive of `settings.bucket` at `settings.s3_endpoint` with the settings' keys."""
        return open_archive(
            settings.s3_endpoint, settings.bucket, settings.s3_access_key, settings.s3_secret_key, **options
        )

    # ---- retries

    def _call(self, what: str, key: str, operation: Callable[[], T]) -> T:
        """Runs `operation`, retrying transient failures until the deadline; other errors propagate."""
        began = self._clock()
        attempt = 0
        while True:
            try:
                return operation()
            except Exception as exc:  # noqa: BLE001 - classified below, re-raised unless transient
                if not is_transient(exc):
                    raise
                attempt += 1
                elapsed = self._clock() - began
                remaining = self.retry.deadline_s - elapsed
                if remaining <= 0:
                    raise ArchiveUnavailableError(
                        f"S3 {what} {self.bucket}/{key} still failing after {attempt} attempts over "
                        f"{elapsed:.0f} s: {exc}. Check that S3 is up (`auditlog stack status`) and retry."
                    ) from exc
                wait = min(self.retry.backoff(attempt, self._rng), remaining)
                log.warning(
                    "S3 %s %s/%s failed (%s: %s); retry %d in %.1f s, giving up in %.0f s",
                    what,
                    self.bucket,
                    key,
                    type(exc).__name__,
                    exc,
                    attempt,
                    wait,
                    remaining,
                )
                self._sleep(wait)

    # ---- primitives

    def _create(self, key: str, data: bytes, checksum: str, retain_until: dt.datetime) -> str | None:
        from botocore.exceptions import ClientError

        def put() -> str | None:
            response = self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                IfNoneMatch="*",
                ChecksumSHA256=checksum,
                ObjectLockMode=LOCK_MODE,
                ObjectLockRetainUntilDate=retain_until,
            )
            version: str | None = response.get("VersionId")
            return version

        try:
            return self._call("PUT", key, put)
        except ClientError as exc:
            # 409 ConditionalRequestConflict: a concurrent conditional write to the same key won.
            if _error_code(exc) in ("PreconditionFailed", "ConditionalRequestConflict") or _http_status(exc) == 412:
                raise _KeyTaken(key) from exc
            raise

    def get(self, key: str, version_id: str | None = None) -> bytes:
        from botocore.exceptions import ClientError

        def read() -> bytes:
            extra = {"VersionId": version_id} if version_id else {}
            response = self.client.get_object(Bucket=self.bucket, Key=key, **extra)
            body: bytes = response["Body"].read()
            return body

        try:
            return self._call("GET", key, read)
        except ClientError as exc:
            if _error_code(exc) in ("NoSuchKey", "NoSuchVersion", "404") or _http_status(exc) == 404:
                raise ArchiveNotFoundError(key, version_id) from None
            raise

    def _list(self, prefix: str, delimiter: str | None, start_after: str | None = None) -> Iterator[str]:
        token: str | None = None
        while True:
            args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
            if start_after:
                args["StartAfter"] = start_after
            if delimiter:
                args["Delimiter"] = delimiter
            if token:
                args["ContinuationToken"] = token
            page = self._call("LIST", prefix, partial(self.client.list_objects_v2, **args))
            if delimiter:
                yield from (p["Prefix"] for p in page.get("CommonPrefixes", []))
            else:
                yield from (o["Key"] for o in page.get("Contents", []))
            token = page.get("NextContinuationToken") if page.get("IsTruncated") else None
            if not token:
                return

    def versions_under(self, prefix: str) -> dict[str, list[ObjectVersion]]:
        found: dict[str, list[ObjectVersion]] = {}
        markers: dict[str, str] = {}
        while True:
            args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, **markers}
            page = self._call("LIST-VERSIONS", prefix, partial(self.client.list_object_versions, **args))
            for item in page.get("Versions", []):
                found.setdefault(item["Key"], []).append(
                    ObjectVersion(
                        item["Key"],
                        item["VersionId"],
                        bool(item.get("IsLatest")),
                        False,
                        int(item.get("Size", 0)),
                        item.get("LastModified"),
                        str(item.get("ETag", "")),
                    )
                )
            for item in page.get("DeleteMarkers", []):
                found.setdefault(item["Key"], []).append(
                    ObjectVersion(
                        item["Key"], item["VersionId"], bool(item.get("IsLatest")), True, 0, item.get("LastModified")
                    )
                )
            if not page.get("IsTruncated"):
                break
            markers = {"KeyMarker": page["NextKeyMarker"], "VersionIdMarker": page["NextVersionIdMarker"]}
        epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
        for versions in found.values():
            # Newest first; the latest version leads even if two share a timestamp.
            versions.sort(key=lambda v: (v.is_latest, v.last_modified or epoch), reverse=True)
        return found

    def retention(self, key: str, version_id: str | None = None) -> Retention | None:
        from botocore.exceptions import ClientError

        extra = {"VersionId": version_id} if version_id else {}
        try:
            head = self._call("HEAD", key, lambda: self.client.head_object(Bucket=self.bucket, Key=key, **extra))
        except ClientError as exc:
            if _http_status(exc) == 404:
                raise ArchiveNotFoundError(key, version_id) from None
            raise
        if "ObjectLockMode" not in head:
            return None
        return Retention(head["ObjectLockMode"], head["ObjectLockRetainUntilDate"])

    def delete_version(self, key: str, version_id: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self._call(
                "DELETE",
                key,
                lambda: self.client.delete_object(Bucket=self.bucket, Key=key, VersionId=version_id),
            )
        except ClientError as exc:
            if _error_code(exc) == "AccessDenied":
                raise ArchiveLockedError(
                    f"{key} version {version_id} is under Object Lock retention or legal hold"
                ) from exc
            raise

    def legal_hold(self, key: str, version_id: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            answer = self._call(
                "GET legal hold",
                key,
                lambda: self.client.get_object_legal_hold(Bucket=self.bucket, Key=key, VersionId=version_id),
            )
        except ClientError as exc:
            if _http_status(exc) == 404 or _error_code(exc) in ("NoSuchObjectLockConfiguration", "NoSuchKey"):
                return False
            raise
        return bool(answer.get("LegalHold", {}).get("Status") == "ON")

    def set_legal_hold(self, key: str, version_id: str, on: bool) -> None:
        status = "ON" if on else "OFF"
        self._call(
            "PUT legal hold",
            key,
            lambda: self.client.put_object_legal_hold(
                Bucket=self.bucket, Key=key, VersionId=version_id, LegalHold={"Status": status}
            ),
        )


def open_archive(
    endpoint: str,
    bucket: str,
    access_key: str,
    secret_key: str,
    region: str = "us-east-1",
    retry: RetryPolicy | None = None,
    retention_days: float = DEFAULT_RETENTION_DAYS,
) -> S3Archive:
    """Opens the archive in `bucket` at an S3 endpoint (path-style addressing, which SeaweedFS needs).

    Takes plain values so a job can carry them in its JSON config. botocore retries each request
    a few times itself; `retry` then waits out longer outages.
    """
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
        ),
    )
    return S3Archive(client, bucket, retry=retry, retention_days=retention_days)


def ensure_bucket(client: Any, bucket: str) -> None:
    """Creates `bucket` with Object Lock (which turns versioning on) unless it exists; checks the lock.

    Raises:
        ArchiveError: the bucket cannot be created, or exists without Object Lock (WORM writes
            would then be refused or, worse, unprotected).
    """
    from botocore.exceptions import ClientError

    try:
        client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
        log.info("archive: created bucket %s with Object Lock", bucket)
    except ClientError as exc:
        if _error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise ArchiveError(f"cannot create bucket {bucket}: {exc}") from exc
    try:
        lock = client.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    except ClientError as exc:
        lock = {"error": str(exc)}
    if lock.get("ObjectLockEnabled") != "Enabled":
        raise ArchiveError(
            f"bucket {bucket} exists without Object Lock ({lock}); use a bucket created with "
            "ObjectLockEnabledForBucket=True (a new AUDITLOG_BUCKET)"
        )


# --------------------------------------------------------------------------- in memory


@dataclass
class _Version:
    version_id: str
    data: bytes | None  # None: a delete marker
    retention: Retention | None
    last_modified: dt.datetime
    legal_hold: bool = False


@dataclass
class InMemoryArchive(Archive):
    """A versioned, Object-Locked bucket in a dict, with S3's semantics for tests.

    Conditional creates, conflicts and reads behave like `S3Archive` on SeaweedFS: a delete
    marker hides a key from listings and lets a new object be created there, and a locked version
    cannot be deleted. `overwrite_unconditionally` and `delete` model a writer that bypasses
    `If-None-Match` (what a tamper check must notice).
    """

    retention_days: float = DEFAULT_RETENTION_DAYS
    objects: dict[str, list[_Version]] = field(default_factory=dict)
    _counter: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _new_version(self, key: str, data: bytes | None, retention: Retention | None) -> str:
        self._counter += 1
        version_id = f"v{self._counter:08d}"
        self.objects.setdefault(key, []).append(_Version(version_id, data, retention, dt.datetime.now(dt.UTC)))
        return version_id

    def _current(self, key: str) -> _Version | None:
        versions = self.objects.get(key)
        if not versions or versions[-1].data is None:
            return None
        return versions[-1]

    def _create(self, key: str, data: bytes, checksum: str, retain_until: dt.datetime) -> str | None:
        if base64.b64encode(sha256(data).digest()).decode() != checksum:
            raise ArchiveError(f"BadDigest: checksum of {key} does not match its bytes")
        with self._lock:
            if self._current(key) is not None:
                raise _KeyTaken(key)
            return self._new_version(key, bytes(data), Retention(LOCK_MODE, retain_until))

    def get(self, key: str, version_id: str | None = None) -> bytes:
        with self._lock:
            if version_id is None:
                current = self._current(key)
            else:
                current = next(
                    (v for v in self.objects.get(key, []) if v.version_id == version_id and v.data is not None),
                    None,
                )
            if current is None or current.data is None:
                raise ArchiveNotFoundError(key, version_id)
            return current.data

    def _list(self, prefix: str, delimiter: str | None, start_after: str | None = None) -> Iterator[str]:
        with self._lock:
            keys = sorted(
                k
                for k in self.objects
                if k.startswith(prefix) and self._current(k) is not None and (not start_after or k > start_after)
            )
        if not delimiter:
            yield from keys
            return
        seen: dict[str, None] = {}
        for key in keys:
            rest = key[len(prefix) :]
            if delimiter in rest:
                seen[prefix + rest.split(delimiter, 1)[0] + delimiter] = None
        yield from seen

    def versions_under(self, prefix: str) -> dict[str, list[ObjectVersion]]:
        with self._lock:
            held = {k: list(v) for k, v in self.objects.items() if k.startswith(prefix)}
        out: dict[str, list[ObjectVersion]] = {}
        for key in sorted(held):
            out[key] = [
                ObjectVersion(
                    key,
                    v.version_id,
                    i == 0,
                    v.data is None,
                    len(v.data or b""),
                    v.last_modified,
                    f'"{sha256(v.data).hexdigest()}"' if v.data is not None else "",
                )
                for i, v in enumerate(reversed(held[key]))
            ]
        return out

    def retention(self, key: str, version_id: str | None = None) -> Retention | None:
        with self._lock:
            if version_id is None:
                version = self._current(key)
            else:
                version = next((v for v in self.objects.get(key, []) if v.version_id == version_id), None)
        if version is None:
            raise ArchiveNotFoundError(key, version_id)
        return version.retention

    def delete_version(self, key: str, version_id: str) -> None:
        with self._lock:
            versions = self.objects.get(key, [])
            version = next((v for v in versions if v.version_id == version_id), None)
            if version is None:
                raise ArchiveNotFoundError(key, version_id)
            if version.retention is not None and version.retention.retain_until > dt.datetime.now(dt.UTC):
                raise ArchiveLockedError(f"{key} version {version_id} is under Object Lock retention")
            if version.legal_hold:
                raise ArchiveLockedError(f"{key} version {version_id} is under an Object Lock legal hold")
            versions.remove(version)
            if not versions:
                del self.objects[key]  # as in S3: a key without versions is not listed

    def _version(self, key: str, version_id: str) -> _Version:
        version = next((v for v in self.objects.get(key, []) if v.version_id == version_id), None)
        if version is None:
            raise ArchiveNotFoundError(key, version_id)
        return version

    def legal_hold(self, key: str, version_id: str) -> bool:
        with self._lock:
            return self._version(key, version_id).legal_hold

    def set_legal_hold(self, key: str, version_id: str, on: bool) -> None:
        with self._lock:
            self._version(key, version_id).legal_hold = on

    # ---- what a careless or hostile writer can do on a versioned bucket

    def overwrite_unconditionally(self, key: str, data: bytes) -> str:
        """Adds a new, unlocked current version at `key` (a PUT without If-None-Match)."""
        with self._lock:
            return self._new_version(key, bytes(data), None)

    def delete(self, key: str) -> str:
        """Adds a delete marker at `key` (a DELETE without a version id); the locked versions stay."""
        with self._lock:
            return self._new_version(key, None, None)
