"""Archive, the interface: the conditional-write rule, the layout's writers and every reader; its result types.

Subclasses (`s3.S3Archive`, `testing.InMemoryArchive`) give only the storage primitives.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

from pipelines.io.archive.errors import ArchiveConflictError, _KeyTaken
from pipelines.io.archive.layout import (
    _BLOCK_NAME,
    _CHECKPOINT_NAME,
    _EXPIRED_NAME,
    _RESUME_NAME,
    BLOCKS_DIR,
    CHECKPOINTS_DIR,
    EXPIRED_DIR,
    LOGS_PREFIX,
    RESUME_DIR,
    block_key,
    checkpoint_key,
    log_prefix,
    resume_key,
)
from pipelines.io.archive.locks import DEFAULT_RETENTION_DAYS, block_lock_dates, lock_until
from pipelines.io.archive.tiles import TilePublisher, bundle_entries
from transforms.blocks import BlockHeader, decode_block, decode_block_object, encode_block_header
from transforms.errors import VerificationError
from transforms.retention import Period

__all__ = ["Archive", "ObjectVersion", "PutResult", "Retention"]

log = logging.getLogger("pipelines.io.archive")  # the package's logger: log lines keep their name


def _sha256_hex(data: bytes) -> str:
    return sha256(data).hexdigest()


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

    def put_immutable(
        self,
        key: str,
        data: bytes,
        retain_until: dt.datetime | None = None,
        same: Callable[[bytes], bool] | None = None,
    ) -> PutResult:
        """Writes `data` once at `key` under COMPLIANCE retention until `retain_until`.

        Idempotent: if `key` already holds the same bytes the call succeeds with created=False
        (or bytes `same` accepts as an encoding of the same object). `retain_until` defaults to
        `retention_days` from now.

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
        if archived != data and not (same is not None and same(archived)):
            conflict = ArchiveConflictError(key, _sha256_hex(archived), digest.hex())
            log.error("%s", conflict)  # an alarm even if a caller swallows the exception
            raise conflict
        log.debug("archive: %s already holds these %d bytes; re-write is a no-op", key, len(data))
        return PutResult(key, digest.hex(), created=False)

    def put_block(
        self,
        log_id: str,
        block_index: int,
        data: bytes,
        retain_until: dt.datetime | None = None,
        entries: list[bytes] | None = None,
    ) -> PutResult:
        """Archives a block object at `block_key(log_id, block_index)`.

        With `entries` (a header-only block's), a v1 object already there that holds the same
        header and entries is the same block (archived before tiles), not a conflict.
        """

        def same_v1(archived: bytes) -> bool:
            try:
                header, held = decode_block(archived)
            except VerificationError:
                return False
            return held is not None and held == entries and header == decode_block(data)[0]

        return self.put_immutable(block_key(log_id, block_index), data, retain_until, same_v1 if entries else None)

    def put_checkpoint(
        self, log_id: str, tree_size: int, note: str, retain_until: dt.datetime | None = None
    ) -> PutResult:
        """Archives a signed checkpoint note at `checkpoint_key(log_id, tree_size)`."""
        return self.put_immutable(checkpoint_key(log_id, tree_size), note.encode("utf-8"), retain_until)

    def put_sealed_block(self, block: Any, evidence: Period | None = None) -> None:
        """Archives a sealed block (an ingest_core.SealedBlockRecord), its tiles and its signed checkpoint.

        The block's events go into its log's entry bundles; the block object keeps the header
        (`encode_block_header`), so each event's bytes are stored once.

        Locks are `block_lock_dates`: the block until its events' latest retention end, the
        checkpoint for `evidence` (the retention policy's longest period) from now.
        """
        block_lock, checkpoint_lock = block_lock_dates(block.retain_until, evidence, self.retention_days)
        data = block.block_object
        if block.checkpoint:  # tiles first: a checkpoint in the archive means its tiles are there
            header, entries = decode_block_object(data)
            self.tile_publisher().publish(header, entries, None, block_lock, checkpoint_lock)
            data = encode_block_header(header)  # the entries are stored once, in the bundles
            self.put_block(block.log_id, block.block_index, data, block_lock, entries)
        else:
            self.put_block(block.log_id, block.block_index, data, block_lock)
        if block.checkpoint:  # empty only in the unverifiable benchmark mode
            self.put_checkpoint(block.log_id, block.tree_size, block.checkpoint, checkpoint_lock)
        if block.resume:  # only blocks a record closed have one (see ingest_core.ResumePoint)
            self.put_immutable(resume_key(block.log_id, block.block_index), block.resume, block_lock)

    def tile_publisher(self) -> TilePublisher:
        """The publisher of this archive's tlog-tiles (one per archive object: it keeps each log's builders)."""
        publisher = self.__dict__.get("_tile_publisher")
        if publisher is None:
            publisher = self.__dict__["_tile_publisher"] = TilePublisher(self)
        return publisher

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

    def read_block(
        self, log_id: str, block_index: int, version_id: str | None = None
    ) -> tuple[BlockHeader, list[bytes]]:
        """(header, entries) of an archived block: inline in a v1 object, from the entry bundles for a v2.

        Raises ArchiveNotFoundError if the block is not there, TilesMissingError if a bundle is not.
        """
        header, entries = decode_block(self.get(block_key(log_id, block_index), version_id))
        return header, entries if entries is not None else bundle_entries(self, header)

    def list_checkpoints(self, log_id: str) -> list[int]:
        """Returns the tree sizes of the log's archived checkpoints, ascending."""
        return self._numbered(f"{log_prefix(log_id)}{CHECKPOINTS_DIR}/", _CHECKPOINT_NAME)

    def list_expired(self, log_id: str) -> list[int]:
        """Returns the indexes of the log's expired blocks (header and leaf hashes kept), ascending."""
        return self._numbered(f"{log_prefix(log_id)}{EXPIRED_DIR}/", _EXPIRED_NAME)

    def list_resume_points(self, log_id: str) -> list[int]:
        """Returns the block indexes after which the job left a resume point, ascending."""
        return self._numbered(f"{log_prefix(log_id)}{RESUME_DIR}/", _RESUME_NAME)

    def get_resume_point(self, log_id: str, block_index: int) -> bytes:
        return self.get(resume_key(log_id, block_index))

    def get_checkpoint(self, log_id: str, tree_size: int) -> str:
        return self.get(checkpoint_key(log_id, tree_size)).decode("utf-8")

    def latest_checkpoint(self, log_id: str, after: int | None = None) -> tuple[int, str] | None:
        """Returns (tree size, signed note) of the log's largest checkpoint, or None if it has none.

        With `after`, only the checkpoints larger than `after` are listed (a reader that knows one
        checkpoint lists what came since, not the whole folder), and None means none is larger.
        """
        start = checkpoint_key(log_id, after) if after is not None else None
        sizes = self._numbered(f"{log_prefix(log_id)}{CHECKPOINTS_DIR}/", _CHECKPOINT_NAME, start)
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
