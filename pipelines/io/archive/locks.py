"""How long a put locks its object: the Object Lock COMPLIANCE retain-until dates of blocks and checkpoints."""

from __future__ import annotations

import datetime as dt

from transforms.retention import KEPT_FOREVER, Period, parse_time

__all__ = ["DEFAULT_RETENTION_DAYS", "LOCK_MODE", "MIN_LOCK", "block_lock_dates", "lock_until"]

LOCK_MODE = "COMPLIANCE"
DEFAULT_RETENTION_DAYS = 2557.0
"""Seven years (SEC 17a-4, SOX): how long a put locks its object unless the caller says otherwise."""


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
