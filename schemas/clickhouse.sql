-- auditlog ClickHouse schema (embedded chDB and server alike). ClickHouse is the search index;
-- the WORM archive in S3 is the source of truth (docs/design.md §8).
--
-- The seed's table ordered by (tenant_id, occurred_at, action, actor_id) and "deduplicated by
-- event ID" with ReplacingMergeTree, which would have collapsed distinct events sharing that key.
-- Here event_id is in the ORDER BY, the engine is a plain MergeTree (a forged duplicate stays
-- visible to the verifier instead of being merged away), and exactly-once inserts come from
-- insert_deduplication_token per sealed block, remembered by non_replicated_deduplication_window.
--
-- Parts under 128 MB are written compact (one file for all columns) rather than wide (two files a
-- column): the indexer's inserts of ten 1,000-event blocks are ~10 MB, just over the 10 MB default,
-- and creating the wide part's ~45 files cost 2-3 µs an event of the insert's CPU (perf: ext4_create;
-- tests/bench/bench_core.py --indexer). Merges still make wide parts above 128 MB.
--
-- Retention: TTL deletes an event's row once its retention ends (retain_until, from the event's
-- canonical form), unless a legal hold keeps it (hold_until, set by `auditlog hold`). Leaf hashes
-- stay in audit_leaves, so proofs of every retained event remain valid.

CREATE DATABASE IF NOT EXISTS auditlog;

CREATE TABLE IF NOT EXISTS auditlog.audit_logs
(
    tenant_id       String,
    event_id        String,
    occurred_at     DateTime64(3, 'UTC'),
    actor_id        String,
    actor_type      Enum8('USER' = 1, 'SYSTEM' = 2),
    actor_email_hash String,            -- keyed hash of the sealed email (seed's email_hash); '' if none
    action          LowCardinality(String),
    resource_id     String,
    resource_type   LowCardinality(String),
    result          Enum8('SUCCESS' = 1, 'FAILURE' = 2),
    request_id      String,
    metadata        String CODEC(ZSTD(3)),   -- canonical JSON of the metadata object
    log_id          LowCardinality(String),
    leaf_index      UInt64,
    leaf_hash       FixedString(32),
    block_index     UInt64,
    block_hash      FixedString(32),
    canonical       String CODEC(ZSTD(3)),   -- the exact RFC 8785 bytes that were hashed
    retention_class LowCardinality(String),  -- the event's retention class (canonical retention.class)
    retain_until    DateTime64(3, 'UTC') DEFAULT toDateTime64('2299-12-31 23:59:59.999', 3, 'UTC'),
                                             -- when its retention ends (canonical retention.until)
    hold_until      DateTime64(3, 'UTC') DEFAULT 0,  -- a legal hold suspends expiry until then
    INDEX idx_actor actor_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_resource resource_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_event event_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_email actor_email_hash TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant_id, occurred_at, event_id)
TTL retain_until DELETE WHERE hold_until <= now()
SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 100000, min_bytes_for_wide_part = 134217728;

-- Every leaf of every log in log order: what proofs and the verifier read. The by_event projection
-- is where an event sits, by (tenant, event id): a proof's lookup reads a granule of these four
-- narrow columns, not of the events' canonical bytes in audit_logs.
CREATE TABLE IF NOT EXISTS auditlog.audit_leaves
(
    log_id      LowCardinality(String),
    leaf_index  UInt64,
    leaf_hash   FixedString(32),
    tenant_id   String,
    event_id    String,
    block_index UInt64,
    PROJECTION by_event (SELECT tenant_id, event_id, log_id, leaf_index ORDER BY tenant_id, event_id)
)
ENGINE = MergeTree
ORDER BY (log_id, leaf_index)
SETTINGS non_replicated_deduplication_window = 100000, min_bytes_for_wide_part = 134217728;

CREATE TABLE IF NOT EXISTS auditlog.audit_blocks
(
    log_id           LowCardinality(String),
    block_index      UInt64,
    first_leaf_index UInt64,
    leaf_count       UInt32,
    tree_size        UInt64,
    tree_root        FixedString(32),
    block_root       FixedString(32),
    prev_block_hash  FixedString(32),
    block_hash       FixedString(32),
    min_event_time   DateTime64(3, 'UTC'),
    max_event_time   DateTime64(3, 'UTC'),
    header           String                 -- canonical JSON of the header (hashed for block_hash)
)
ENGINE = MergeTree
ORDER BY (log_id, block_index)
SETTINGS non_replicated_deduplication_window = 100000;

CREATE TABLE IF NOT EXISTS auditlog.audit_checkpoints
(
    log_id      LowCardinality(String),
    tree_size   UInt64,
    root        FixedString(32),
    block_index UInt64,
    note        String                      -- the signed note, verbatim
)
ENGINE = MergeTree
ORDER BY (log_id, tree_size)
SETTINGS non_replicated_deduplication_window = 100000;
