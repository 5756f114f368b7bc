"""A log's history as the WORM archive holds it: every key's original version and what became of it.

`log_history` reads a log's blocks and checkpoints in order (several GETs in flight, a bounded
read-ahead), each with its versions (overwrites, delete markers); `check_archive_log` replays
them through transforms/verify.py's `ArchiveLogCheck`. `archive_from_spec` opens the archive a
pipeline step names. Used by verify and rebuild (pipelines/verify.py) and by the commands.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from pipelines.io.archive import (
    COSIGNED_DIR,
    REFUSALS_DIR,
    TILE_DIR,
    Archive,
    log_prefix,
    open_archive,
    parse_key,
)
from pipelines.io.archive.tiles import TilesMissingError, bundle_entries
from transforms.blocks import BlockHeader, decode_block
from transforms.checkpoint import Checkpoint
from transforms.errors import VerificationError
from transforms.note import Verifier
from transforms.retention import RetentionClock
from transforms.verify import ArchivedObject, ArchiveLog, ArchiveLogCheck, ListedTile, TileCheck

log = logging.getLogger("pipelines.verify")

FETCH_THREADS = 8
"""Archive GETs in flight per log: S3 latency, not CPU, bounds a sequential read."""
READ_AHEAD = 32
"""Blocks read ahead of the one being checked (bounds memory: ~1 MB per block of 1,000 events)."""

_MEMORY_ARCHIVES: dict[str, Archive] = {}


def register_memory_archive(name: str, archive: Archive) -> dict[str, Any]:
    """Makes an in-memory archive reachable from DoFns in this process (tests); returns its spec.

    Only steps that run in this process find it (DirectRunner, TestPipeline): the stores of a
    pipeline on another runner are S3 (`archive_spec`).
    """
    _MEMORY_ARCHIVES[name] = archive
    return {"memory": name}


def archive_from_spec(spec: dict[str, Any]) -> Archive:
    """Opens the archive a pipeline step names: S3 settings (`archive_spec`) or a registered in-memory one."""
    if "memory" in spec:
        if spec["memory"] not in _MEMORY_ARCHIVES:
            raise LookupError(
                f"in-memory archive {spec['memory']!r} lives in the process that registered it, not in this "
                "worker; run the pipeline on the DirectRunner or give it an S3 archive"
            )
        return _MEMORY_ARCHIVES[spec["memory"]]
    return open_archive(**spec)


# --------------------------------------------------------------------------- reading the archive


def archived_object(archive: Archive, key: str, versions: list[Any]) -> ArchivedObject:
    """What the archive holds at `key`, given its versions (newest first): the original and what came after."""
    data_versions = [v for v in versions if not v.is_delete_marker]
    deleted = bool(versions) and versions[0].is_delete_marker
    if not data_versions:
        return ArchivedObject(key, None, 0, deleted)
    if len(data_versions) == 1 and not deleted:
        return ArchivedObject(key, archive.get(key))
    data = archive.get(key, version_id=data_versions[-1].version_id)  # the first write is the original
    current = archive.get(key, version_id=data_versions[0].version_id) if len(data_versions) > 1 else None
    return ArchivedObject(key, data, len(data_versions), deleted, current)


def archived_block(
    archive: Archive, key: str, versions: list[Any], bundle_versions: dict[str, str] | None = None
) -> ArchivedObject:
    """`archived_object` of a block key, with the entries of a header-only (v2) block from its log's bundles.

    `bundle_versions` (bundle key -> its original version id) pins each bundle to its first
    version; a bundle that is not there leaves the entries out and says why (`missing`).
    """
    obj = archived_object(archive, key, versions)
    if obj.original is None:
        return obj
    try:
        header, entries = decode_block(obj.original)
    except VerificationError:
        return obj  # the check reports the malformed object
    if entries is not None:
        return obj
    try:
        read: dict[str, bytes] = {}
        entries = bundle_entries(archive, header, bundle_versions, read)
        return replace(obj, entries=tuple(entries), bundles=read)
    except TilesMissingError as exc:
        return replace(obj, missing=str(exc))


def log_history(
    archive: Archive, log_id: str, pool: ThreadPoolExecutor, tiles: list[ListedTile] | None = None
) -> tuple[Iterator[tuple[int, ArchivedObject, bool]], Iterator[tuple[int, ArchivedObject]]]:
    """Returns (blocks in index order, read ahead in parallel; checkpoints by size, read meanwhile) of one log.

    Each block comes as (index, object, expired): `expired` when the object is what `auditlog
    expire` left in the block's place. The log's tlog-tiles keys, with their versions' ETags,
    are appended to `tiles` (listed, not read).

    One version listing covers the whole log, so overwrites and delete markers are seen for every
    key without a request per key.
    """
    found: dict[str, list[tuple[int, str, list[Any]]]] = {"block": [], "checkpoint": [], "expired": [], "resume": []}
    bundle_versions: dict[str, str] = {}  # every tile key -> its original version (blocks' entries are read there)
    for key, versions in archive.versions_under(log_prefix(log_id)).items():
        parsed = parse_key(key)
        folder = key[len(log_prefix(log_id)) :].split("/", 1)[0]
        if parsed is None and folder in (COSIGNED_DIR, REFUSALS_DIR):
            continue  # cosignatures and refusals: checked by verify_witnessing
        if parsed is None and folder == TILE_DIR:
            if tiles is not None:
                tiles.append(ListedTile(key, tuple("" if v.is_delete_marker else v.etag for v in versions)))
            data_versions = [v for v in versions if not v.is_delete_marker]
            if data_versions:
                bundle_versions[key] = data_versions[-1].version_id
            continue
        if parsed is None or parsed[0] != log_id:
            log.warning("verify: ignoring unexpected object %s (not written by auditlog)", key)
            continue
        found[parsed[1]].append((parsed[2], key, versions))
    checkpoints = sorted(found["checkpoint"])
    # A block that expired is read from what `auditlog expire` left in its place; while both
    # exist (an expiry cut short) the block object wins.
    present = {number for number, _, _ in found["block"]}
    blocks = sorted(
        [(number, key, versions, False) for number, key, versions in found["block"]]
        + [(number, key, versions, True) for number, key, versions in found["expired"] if number not in present]
    )
    checkpoint_reads = [pool.submit(archived_object, archive, key, versions) for _, key, versions in checkpoints]

    def read_ahead() -> Iterator[tuple[int, ArchivedObject, bool]]:
        pending: deque[tuple[int, bool, Future[ArchivedObject]]] = deque()
        for number, key, versions, expired in blocks:
            read = (
                pool.submit(archived_object, archive, key, versions)
                if expired
                else pool.submit(archived_block, archive, key, versions, bundle_versions)
            )
            pending.append((number, expired, read))
            if len(pending) >= READ_AHEAD:
                number_done, was_expired, future = pending.popleft()
                yield number_done, future.result(), was_expired
        while pending:
            number_done, was_expired, future = pending.popleft()
            yield number_done, future.result(), was_expired

    def checkpoint_objects() -> Iterator[tuple[int, ArchivedObject]]:
        for (number, _, _), future in zip(checkpoints, checkpoint_reads, strict=True):
            yield number, future.result()

    return read_ahead(), checkpoint_objects()


def check_archive_log(
    archive: Archive,
    log_id: str,
    verifier: Verifier,
    origin: str,
    witness: Checkpoint | None = None,
    on_block: Callable[[BlockHeader, list[bytes]], None] | None = None,
    pool: ThreadPoolExecutor | None = None,
    progress: Callable[[int], object] | None = None,
    clock: RetentionClock | None = None,
    on_expired: Callable[[BlockHeader, list[bytes]], None] | None = None,
) -> ArchiveLog:
    """Replays one log's archive (see transforms.verify.ArchiveLogCheck).

    `on_block` sees each verified block with its entries, `on_expired` each verified expired block
    with its leaf hashes; `clock` judges retention (see ArchiveLogCheck).
    """
    own = pool is None
    pool = pool or ThreadPoolExecutor(FETCH_THREADS)
    try:
        check = ArchiveLogCheck(log_id, verifier, origin, clock)
        listed: list[ListedTile] = []
        tiles = TileCheck(log_id)
        blocks, checkpoints = log_history(archive, log_id, pool, listed)
        for index, obj, expired in blocks:
            header: BlockHeader | None = None
            if expired:
                replayed = check.add_expired_block(index, obj)
                if replayed is not None:
                    header, hashes = replayed
                    tiles.add_block(header, None, hashes)
                    if on_expired:
                        on_expired(header, hashes)
            else:
                verified = check.add_block(index, obj)
                if verified is not None:
                    header, entries, hashes = verified
                    tiles.add_block(header, entries, hashes, read=obj.bundles)
                    if on_block:
                        on_block(header, entries)
            if header is None:
                tiles.stop()
                continue
            if progress:
                progress(header.leaf_count)
        for size, obj in checkpoints:
            check.add_checkpoint(size, obj)
        archived = check.finish(witness)
        findings, archived.tiles_checked = tiles.findings(sorted(listed, key=lambda t: t.key), log_prefix(log_id))
        archived.findings += findings
        return archived
    finally:
        if own:
            pool.shutdown()
