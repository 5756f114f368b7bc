"""The WORM archive: sealed blocks and signed checkpoints as immutable S3 objects (docs/design.md §7).

The archive is the source of truth; ClickHouse is only a search index rebuilt from it. Where each
kind of object lives is defined in `layout` (pipelines/io/archive/layout.py).

A block object is locked until the retention of its longest-kept event ends; `auditlog expire`
then deletes it, after writing its header and leaf hashes to `expired/` (locked as long as the
checkpoints), so the log's chain, tree and every retained event's proofs still verify.

Every PUT carries `If-None-Match: *`, Object Lock COMPLIANCE retention and a SHA-256 the server
checks. A PUT that finds the key taken reads the object back: identical bytes are success (a replay
re-wrote what it wrote before), different bytes raise `ArchiveConflictError` and nothing is
overwritten. Transient failures (connection refused, timeouts, 5xx, throttling) are retried with
exponential backoff and jitter until `RetryPolicy.deadline_s`, so an S3 outage stalls the writer
instead of failing it.

`S3Archive` talks to S3 (the local stack's SeaweedFS, or AWS); `InMemoryArchive`
(`pipelines.io.archive.testing`) has the same semantics (conditional puts, conflicts, versions,
retention) for tests::

    archive = open_archive(endpoint="http://127.0.0.1:8333", bucket="auditlog-worm",
                           access_key="auditlog", secret_key="auditlog-secret")
    archive.put_block("log0", 0, encode_block_object(header, entries))   # locked for retention_days
    archive.list_blocks("log0")          # [0]

The package, one module a part (each re-exported here but the test double, so
`from pipelines.io.archive import X` is the way in):

    layout    the object keys: where each kind of object lives, and parsing a key back
    locks     how long a put locks its object (Object Lock retain-until dates)
    tiles     each log as a C2SP tlog-tiles log: TilePublisher (with every block), TileStore (reads)
    errors    ArchiveError and its kinds
    base      Archive, the interface: the conditional-write rule and every reader; its result types
    s3        S3Archive, its retries, open_archive and ensure_bucket
    testing   InMemoryArchive, with the tamper hooks a test needs (not re-exported here)
"""

from pipelines.io.archive.base import Archive, ObjectVersion, PutResult, Retention
from pipelines.io.archive.errors import (
    ArchiveConflictError,
    ArchiveError,
    ArchiveLockedError,
    ArchiveNotFoundError,
    ArchiveUnavailableError,
)
from pipelines.io.archive.layout import (
    COSIGNED_DIR,
    HOLDS_PREFIX,
    LOGS_PREFIX,
    REFUSALS_DIR,
    TILE_DIR,
    block_key,
    checkpoint_key,
    expired_key,
    log_prefix,
    parse_key,
    resume_key,
    tile_key,
)
from pipelines.io.archive.locks import DEFAULT_RETENTION_DAYS, block_lock_dates, lock_until
from pipelines.io.archive.s3 import RetryPolicy, S3Archive, ensure_bucket, open_archive

__all__ = [
    "COSIGNED_DIR",
    "DEFAULT_RETENTION_DAYS",
    "HOLDS_PREFIX",
    "LOGS_PREFIX",
    "REFUSALS_DIR",
    "TILE_DIR",
    "Archive",
    "ArchiveConflictError",
    "ArchiveError",
    "ArchiveLockedError",
    "ArchiveNotFoundError",
    "ArchiveUnavailableError",
    "ObjectVersion",
    "PutResult",
    "Retention",
    "RetryPolicy",
    "S3Archive",
    "block_key",
    "block_lock_dates",
    "checkpoint_key",
    "ensure_bucket",
    "expired_key",
    "lock_until",
    "log_prefix",
    "open_archive",
    "parse_key",
    "resume_key",
    "tile_key",
]
