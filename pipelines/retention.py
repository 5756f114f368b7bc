"""Retention in the stores: legal holds and the expiry of archived blocks.

The policy itself (classes, periods, what a hold covers) is the pure core's
(transforms/retention.py); this module applies it to the WORM archive and ClickHouse.

Legal holds live in the archive, the source of truth, as immutable records::

    holds/{hold_id}.json             placed: tenant, subject (optional), until, reason, placed_at
    holds/{hold_id}.released.json    released early: released_at, reason

`place_hold` / `release_hold` write the record, then make both stores obey it: an Object Lock
legal hold on every archived block with the covered events (nobody can delete those versions,
whatever their retention), and `hold_until` on the covered ClickHouse rows (TTL skips them).
`auditlog hold` records each as an audit event too.

`expire_archive` deletes the block objects whose Object Lock retention ended (the longest class
in the block) and that no active hold covers, after writing each block's header and leaf hashes
to `expired/`: the chain, the tree and every retained event's proof still verify. The events'
bytes live in the log's entry bundles: a bundle goes once every block it holds events of has
expired (hash tiles stay). A legal hold is placed on a held block's bundles too.

    auditlog hold --tenant t_1000 --until 2027-06-30 --reason "case 4411"
    auditlog hold --release --tenant t_1000 --reason "case closed"
    auditlog expire [--dry-run]
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pipelines.io.archive import (
    HOLDS_PREFIX,
    Archive,
    ArchiveLockedError,
    ArchiveNotFoundError,
    ObjectVersion,
    block_key,
    expired_key,
    log_prefix,
    parse_key,
)
from pipelines.io.archive.tiles import bundle_keys
from transforms.blocks import decode_block, decode_expired_block, encode_expired_block
from transforms.errors import AuditlogError
from transforms.merkle import leaf_hash, root
from transforms.retention import (
    LegalHold,
    Period,
    active_holds,
    entry_owner,
    entry_until,
    format_time,
    parse_time,
)
from transforms.tiles import parse_tile_path

log = logging.getLogger(__name__)

HOLD_SUFFIX = ".json"
RELEASE_SUFFIX = ".released.json"


class HoldError(AuditlogError, ValueError):
    """A hold request that cannot be carried out: what was wrong, with the value, and what to do."""


def new_hold_id(now: dt.datetime) -> str:
    return f"hold_{now.strftime('%Y%m%dT%H%M%SZ')}_{secrets.token_hex(4)}"


def read_holds(archive: Archive, cache: dict[str, dict[str, Any]] | None = None) -> list[LegalHold]:
    """Every legal hold ever placed (released ones with their `released_at`), oldest first.

    Records are immutable, so `cache` (key → record) saves re-reading them on every call.
    """
    cache = {} if cache is None else cache
    records: dict[str, dict[str, Any]] = {}
    for key in archive.keys(HOLDS_PREFIX):
        if key not in cache:
            try:
                record = json.loads(archive.get(key))
                if key.endswith(RELEASE_SUFFIX):
                    str(record["hold_id"]), str(record["released_at"])
                else:
                    LegalHold(**record)
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("holds: ignoring %s, not a hold record written by auditlog (%s)", key, exc)
                record = {}
            cache[key] = record
        if cache[key]:
            records[key[len(HOLDS_PREFIX) :]] = cache[key]
    released = {
        name[: -len(RELEASE_SUFFIX)]: str(record["released_at"])
        for name, record in records.items()
        if name.endswith(RELEASE_SUFFIX)
    }
    placed = [
        LegalHold(**record, released_at=released.get(record["hold_id"], ""))
        for name, record in records.items()
        if not name.endswith(RELEASE_SUFFIX)
    ]
    return sorted(placed, key=lambda h: (h.placed_at, h.hold_id))


class HoldWatcher:
    """Keeps ClickHouse and the archive's legal holds in step with the hold records.

    It runs in the process that owns ClickHouse: the indexer calls `sync` on every pass. A hold
    placed or released while that process runs (say, `auditlog serve` holds embedded chDB while
    `auditlog hold` writes the record) is applied on its next pass; a hold that lapses lifts
    itself (`hold_until` is the hold's end).
    """

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self._cache: dict[str, dict[str, Any]] = {}
        self._applied: dict[str, frozenset[str]] | None = None  # tenant → hold ids applied; None before the first sync

    def sync(self, clickhouse: Any, now: dt.datetime | None = None) -> tuple[LegalHold, ...]:
        """Applies what changed since the last call; returns the holds active now."""
        now = now or dt.datetime.now(dt.UTC)
        holds = read_holds(self.archive, self._cache)
        active = active_holds(holds, format_time(now))
        wanted: dict[str, frozenset[str]] = {}
        for hold in active:
            wanted[hold.tenant_id] = wanted.get(hold.tenant_id, frozenset()) | {hold.hold_id}
        first = self._applied is None
        applied_before: dict[str, frozenset[str]] = self._applied or {}
        # A fresh process knows nothing of what an earlier one applied: it reconciles every tenant
        # with a hold on record, lifting what released or lapsed holds left behind.
        tenants = set(wanted) | set(applied_before) | ({h.tenant_id for h in holds} if first else set())
        self._applied = dict(applied_before)
        for tenant in sorted(tenants):
            ids = wanted.get(tenant, frozenset())
            if not first and ids == applied_before.get(tenant):
                continue
            ended = [h for h in holds if h.tenant_id == tenant and h.hold_id not in ids]
            gone = ended if first else [h for h in ended if h.hold_id in applied_before.get(tenant, frozenset())]
            result = apply_holds(self.archive, clickhouse, tenant, holds, now, gone)
            log.info(
                "holds of %s: %d active; %d blocks put on legal hold, %d released",
                tenant,
                len(ids),
                result.blocks_held,
                result.blocks_released,
            )
            self._applied[tenant] = ids
        return active


def _record_lock(until: str, evidence: Period, now: dt.datetime) -> dt.datetime:
    """Hold records are evidence of their own: kept as long as the checkpoints, at least to the hold's end."""
    return max(parse_time(until), evidence.after(now))


def write_hold(archive: Archive, hold: LegalHold, evidence: Period, now: dt.datetime) -> None:
    record = {k: v for k, v in asdict(hold).items() if k != "released_at"}
    archive.put_immutable(
        f"{HOLDS_PREFIX}{hold.hold_id}{HOLD_SUFFIX}",
        json.dumps(record, sort_keys=True).encode(),
        _record_lock(hold.until, evidence, now),
    )


def write_release(archive: Archive, hold: LegalHold, reason: str, evidence: Period, now: dt.datetime) -> LegalHold:
    released_at = format_time(now)
    record = {"hold_id": hold.hold_id, "released_at": released_at, "reason": reason}
    archive.put_immutable(
        f"{HOLDS_PREFIX}{hold.hold_id}{RELEASE_SUFFIX}",
        json.dumps(record, sort_keys=True).encode(),
        _record_lock(hold.until, evidence, now),
    )
    return LegalHold(**{**asdict(hold), "released_at": released_at})


def original_version(archive: Archive, key: str) -> str | None:
    """The version id of the locked original at `key` (its oldest version with data), if any."""
    versions = [v for v in archive.object_versions(key) if not v.is_delete_marker]
    return versions[-1].version_id if versions else None


def _set_hold(archive: Archive, log_id: str, index: int, on: bool) -> bool:
    """Places (or lifts) the legal hold on a block's original version and on its entry bundles.

    The block's events' bytes live in the bundles, so they are held with it (a bundle shared with
    another held block keeps its hold). True if the block's hold changed.
    """
    key = block_key(log_id, index)
    version = original_version(archive, key)
    if version is None or archive.legal_hold(key, version) == on:
        return False
    header = decode_block(archive.get(key, version))[0]
    for bundle in bundle_keys(archive, log_id, header.first_leaf_index, header.tree_size):
        held = original_version(archive, bundle)
        if held is not None and archive.legal_hold(bundle, held) != on:
            if on or not _other_held_block_overlaps(archive, log_id, bundle, index):
                archive.set_legal_hold(bundle, held, on)
    archive.set_legal_hold(key, version, on)
    return True


def _other_held_block_overlaps(archive: Archive, log_id: str, bundle: str, index: int) -> bool:
    """True if a block other than `index` that holds events of `bundle` is under a legal hold."""
    tile = parse_tile_path(bundle[len(log_prefix(log_id)) :])
    for step in (-1, 1):
        other = index + step
        while other >= 0:
            key = block_key(log_id, other)
            version = original_version(archive, key)
            if version is None:
                break  # expired or not there: its events are not held through it
            header = decode_block(archive.get(key, version))[0]
            if header.tree_size <= tile.start or header.first_leaf_index >= tile.end:
                break
            if archive.legal_hold(key, version):
                return True
            other += step
    return False


@dataclass
class HoldResult:
    """What applying the holds of one tenant did to the stores."""

    blocks_held: int = 0
    blocks_released: int = 0


def apply_holds(
    archive: Archive,
    clickhouse: Any,
    tenant_id: str,
    holds: Sequence[LegalHold],
    now: dt.datetime,
    previously_held: Iterable[LegalHold] = (),
) -> HoldResult:
    """Makes the archive's legal holds and ClickHouse's `hold_until` of one tenant match its active holds.

    `holds` are every hold on record; `previously_held` holds just released or lapsed, whose blocks
    lose their Object Lock legal hold unless an active hold still covers them. Blocks are found
    through ClickHouse (the rows of the covered events); events that had already expired are not
    brought back.
    """
    active = active_holds(holds, format_time(now))
    current = [h for h in active if h.tenant_id == tenant_id]
    result = HoldResult()
    if clickhouse is None:
        return result
    keep: set[tuple[str, int]] = set()
    for hold in current:
        keep.update(clickhouse.blocks_of(tenant_id, hold.subject_id))
    held_now = set(keep)
    if previously_held:  # a block holds several tenants' events: another tenant's hold may still need it
        for hold in active:
            if hold.tenant_id != tenant_id:
                held_now.update(clickhouse.blocks_of(hold.tenant_id, hold.subject_id))
    for log_id, index in sorted(keep):
        if _set_hold(archive, log_id, index, True):
            result.blocks_held += 1
    lifted: set[tuple[str, int]] = set()
    for hold in previously_held:
        lifted.update(clickhouse.blocks_of(tenant_id, hold.subject_id))
    for log_id, index in sorted(lifted - held_now):
        if _set_hold(archive, log_id, index, False):
            result.blocks_released += 1
    clickhouse.set_holds(tenant_id, current)
    return result


# --------------------------------------------------------------------------- expiry


@dataclass
class ExpireReport:
    """What `expire_archive` found and did, per outcome."""

    blocks_checked: int = 0
    expired_blocks: int = 0
    expired_events: int = 0
    locked: int = 0  # retention still running
    held: int = 0  # retention ended, but an active legal hold covers an event of the block
    expired_bundles: int = 0  # entry bundles deleted: every block they held events of had expired
    refused: list[str] = field(default_factory=list)  # keys the store would not delete, and why
    dry_run: bool = False

    def line(self) -> str:
        verb = "would expire" if self.dry_run else "expired"
        text = (
            f"{verb} {self.expired_blocks} blocks ({self.expired_events} events) of {self.blocks_checked} "
            f"and {self.expired_bundles} entry bundles; "
            f"{self.locked} still within retention, {self.held} kept by a legal hold"
        )
        if self.refused:
            text += f"; {len(self.refused)} refused by the store (see above)"
        return text


def expire_archive(
    archive: Archive,
    holds: Sequence[LegalHold],
    evidence: Period,
    now: dt.datetime | None = None,
    dry_run: bool = False,
    progress: Callable[[int], object] | None = None,
) -> ExpireReport:
    """Deletes every archived block object whose retention ended and that no active hold covers.

    Each such block's header and leaf hashes go to `expired_key` first (locked for `evidence`, the
    policy's longest class), then every version at the block key is deleted. A block any active
    hold covers gets an Object Lock legal hold instead. Blocks are read in full only once their
    lock has passed, so a run over a young archive costs one HEAD per block.
    """
    now = now or dt.datetime.now(dt.UTC)
    moment = format_time(now)
    active = active_holds(holds, moment)
    report = ExpireReport(dry_run=dry_run)
    for log_id in archive.list_logs():
        for key, versions in sorted(archive.versions_under(f"{log_prefix(log_id)}blocks/").items()):
            parsed = parse_key(key)
            if parsed is None or parsed[1] != "block":
                continue
            if not any(not v.is_delete_marker for v in versions):
                continue
            report.blocks_checked += 1
            if progress:
                progress(1)
            original = _sole_version(key, versions, report)
            if original is None:
                continue
            retention = archive.retention(key, original.version_id)
            if retention is not None and retention.retain_until > now:
                report.locked += 1
                continue
            header, entries = archive.read_block(log_id, parsed[2], original.version_id)
            ends = [entry_until(e) for e in entries]
            if max(ends) > moment:
                report.locked += 1  # an unlocked object whose events are still retained: keep it
                continue
            covered = [
                h
                for h in active
                for entry, until in zip(entries, ends, strict=True)
                if until > h.placed_at and h.covers(*entry_owner(entry))
            ]
            if covered:
                report.held += 1
                if not dry_run:
                    _set_hold(archive, log_id, parsed[2], True)
                continue
            if archive.legal_hold(key, original.version_id):
                # Lifted only when an ended hold of ours explains it; anyone else's legal hold stays.
                ended = [h for h in holds if not h.active(moment)]
                explained = any(
                    h.covers(*entry_owner(entry)) and until > h.placed_at
                    for h in ended
                    for entry, until in zip(entries, ends, strict=True)
                )
                if not explained:
                    report.held += 1
                    continue
                if not dry_run:
                    _set_hold(archive, log_id, parsed[2], False)
            report.expired_blocks += 1
            report.expired_events += header.leaf_count
            if dry_run:
                continue
            hashes = [leaf_hash(e) for e in entries]
            if root(hashes) != header.block_root:
                report.refused.append(f"{key}: its entries do not give its block root; run `auditlog verify`")
                report.expired_blocks -= 1
                report.expired_events -= header.leaf_count
                continue
            archive.put_immutable(
                expired_key(log_id, header.block_index),
                encode_expired_block(header, hashes, max(ends)),
                evidence.after(now),
            )
            try:
                archive.delete_version(key, original.version_id)
            except (ArchiveLockedError, ArchiveNotFoundError) as exc:
                report.refused.append(f"{key} version {original.version_id}: {exc}")
                log.warning("expire: %s version %s not deleted: %s", key, original.version_id, exc)
        _expire_bundles(archive, log_id, now, dry_run, report)
    return report


def _sole_version(key: str, versions: list[ObjectVersion], report: ExpireReport) -> ObjectVersion | None:
    """The one version at `key`, or None (refused) when there are more.

    A second version or a delete marker is evidence of tampering (verify names it), which expiring
    would erase along with the object.
    """
    if len(versions) > 1:
        report.refused.append(
            f"{key} has {len(versions)} versions (a rewrite or delete marker): not expired; "
            "run `auditlog verify` and treat it as an incident"
        )
        return None
    return versions[0]


def _expired_ranges(archive: Archive, log_id: str) -> list[tuple[int, int]]:
    """The leaf ranges [first, end) of the log's expired blocks (whose block objects are gone), merged."""
    present = set(archive.list_blocks(log_id))
    ranges: list[tuple[int, int]] = []
    for index in archive.list_expired(log_id):
        if index in present:
            continue  # an expiry cut short: the block is still there
        header = decode_expired_block(archive.get(expired_key(log_id, index)))[0]
        ranges.append((header.first_leaf_index, header.tree_size))
    merged: list[tuple[int, int]] = []
    for first, end in sorted(ranges):
        if merged and first <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((first, end))
    return merged


def _expire_bundles(archive: Archive, log_id: str, now: dt.datetime, dry_run: bool, report: ExpireReport) -> None:
    """Deletes the entry bundles (full or partial) all of whose events' blocks have expired.

    A bundle holds events of one or more blocks and is locked as long as the longest of them; it
    goes when every block it holds events of has expired (so a block still kept, or held, never
    loses its bytes), its own lock has passed, and no legal hold is on it. Hash tiles stay: every
    tree head and every retained event's proof still verify.
    """
    ranges = _expired_ranges(archive, log_id)
    if not ranges:
        return
    prefix = log_prefix(log_id)
    for key, versions in sorted(archive.versions_under(f"{prefix}tile/entries/").items()):
        tile = parse_tile_path(key[len(prefix) :])
        if not any(first <= tile.start and tile.end <= end for first, end in ranges):
            continue
        if not any(not v.is_delete_marker for v in versions):
            continue
        original = _sole_version(key, versions, report)
        if original is None:
            continue
        retention = archive.retention(key, original.version_id)
        if (retention is not None and retention.retain_until > now) or archive.legal_hold(key, original.version_id):
            continue  # its blocks expired, but a lock or a hold someone placed on it still runs
        report.expired_bundles += 1
        if dry_run:
            continue
        try:
            archive.delete_version(key, original.version_id)
        except (ArchiveLockedError, ArchiveNotFoundError) as exc:
            report.expired_bundles -= 1
            report.refused.append(f"{key} version {original.version_id}: {exc}")
