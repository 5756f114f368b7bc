-- auditlog ClickHouse schema for a ClickHouse *cluster* (shards x replicas, Keeper or ZooKeeper).
-- GENERATED from schemas/clickhouse.sql by pipelines.io.clickhouse.cluster_ddl(): do not edit.
-- Regenerate after changing schemas/clickhouse.sql (tests/unit/test_cluster_manifests.py checks it):
--
--   .venv/bin/python -c "from pipelines.io.clickhouse import cluster_ddl; print(cluster_ddl(), end='')" \
--       > infra/clickhouse/cluster.sql
--
-- Apply it once, before the indexer first starts, on any one node:
--
--   clickhouse-client --host HOST --multiquery < infra/clickhouse/cluster.sql
--
-- Every server needs the macros {cluster}, {shard} and {replica} (config.d/macros.xml) and a
-- remote_servers entry named like {cluster} with internal_replication = true.
--
-- Each table of schemas/clickhouse.sql becomes
--   <name>_local  ReplicatedMergeTree on every node: the same columns, indexes, PARTITION BY and
--                 ORDER BY; inserts carrying an insert_deduplication_token are deduplicated in
--                 Keeper across replicas (replicated_deduplication_window blocks, for at most
--                 replicated_deduplication_window_seconds), so a re-indexed block is a no-op.
--   <name>        a Distributed table over <name>_local, named like the embedded table, so the
--                 indexer, the query API and `auditlog search` work unchanged against the cluster
--                 (their CREATE ... IF NOT EXISTS finds these tables and does nothing).
-- The indexer must insert with distributed_foreground_insert = 1 (see infra/k8s/indexer-deployment.yaml):
-- it writes a block's leaves before its block row and reads them back, which background
-- Distributed inserts would reorder.

CREATE DATABASE IF NOT EXISTS auditlog ON CLUSTER '{cluster}';

CREATE TABLE IF NOT EXISTS auditlog.audit_logs_local ON CLUSTER '{cluster}'
(
    tenant_id       String,
    event_id        String,
    occurred_at     DateTime64(3, 'UTC'),
    actor_id        String,
    actor_type      Enum8('USER' = 1, 'SYSTEM' = 2),
    actor_email_hash String,
    action          LowCardinality(String),
    resource_id     String,
    resource_type   LowCardinality(String),
    result          Enum8('SUCCESS' = 1, 'FAILURE' = 2),
    request_id      String,
    metadata        String CODEC(ZSTD(3)),
    log_id          LowCardinality(String),
    leaf_index      UInt64,
    leaf_hash       FixedString(32),
    block_index     UInt64,
    block_hash      FixedString(32),
    canonical       String CODEC(ZSTD(3)),
    retention_class LowCardinality(String),
    retain_until    DateTime64(3, 'UTC') DEFAULT toDateTime64('2299-12-31 23:59:59.999', 3, 'UTC'),

    hold_until      DateTime64(3, 'UTC') DEFAULT 0,
    INDEX idx_actor actor_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_resource resource_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_event event_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_email actor_email_hash TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/auditlog/audit_logs', '{replica}')
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant_id, occurred_at, event_id)
TTL retain_until DELETE WHERE hold_until <= now()
SETTINGS index_granularity = 8192, replicated_deduplication_window = 100000, min_bytes_for_wide_part = 134217728, replicated_deduplication_window_seconds = 604800;

-- audit_logs: sharded by cityHash64(tenant_id): one tenant's events on one shard, so a tenant
-- search (the common query) reads one shard with optimize_skip_unused_shards = 1 (a block's rows
-- spread over shards; each shard dedupes its part).
CREATE TABLE IF NOT EXISTS auditlog.audit_logs ON CLUSTER '{cluster}' AS auditlog.audit_logs_local
ENGINE = Distributed('{cluster}', auditlog, audit_logs_local, cityHash64(tenant_id));

CREATE TABLE IF NOT EXISTS auditlog.audit_leaves_local ON CLUSTER '{cluster}'
(
    log_id      LowCardinality(String),
    leaf_index  UInt64,
    leaf_hash   FixedString(32),
    tenant_id   String,
    event_id    String,
    block_index UInt64,
    PROJECTION by_event (SELECT tenant_id, event_id, log_id, leaf_index ORDER BY tenant_id, event_id)
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/auditlog/audit_leaves', '{replica}')
ORDER BY (log_id, leaf_index)
SETTINGS replicated_deduplication_window = 100000, min_bytes_for_wide_part = 134217728, replicated_deduplication_window_seconds = 604800;

-- audit_leaves: sharded by cityHash64(log_id): one log's leaves on one shard: proofs and the
-- indexer read a log's leaves in leaf order.
CREATE TABLE IF NOT EXISTS auditlog.audit_leaves ON CLUSTER '{cluster}' AS auditlog.audit_leaves_local
ENGINE = Distributed('{cluster}', auditlog, audit_leaves_local, cityHash64(log_id));

CREATE TABLE IF NOT EXISTS auditlog.audit_blocks_local ON CLUSTER '{cluster}'
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
    header           String
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/auditlog/audit_blocks', '{replica}')
ORDER BY (log_id, block_index)
SETTINGS replicated_deduplication_window = 100000, replicated_deduplication_window_seconds = 604800;

-- audit_blocks: sharded by cityHash64(log_id): one log's hash chain on one shard, beside its
-- leaves.
CREATE TABLE IF NOT EXISTS auditlog.audit_blocks ON CLUSTER '{cluster}' AS auditlog.audit_blocks_local
ENGINE = Distributed('{cluster}', auditlog, audit_blocks_local, cityHash64(log_id));

CREATE TABLE IF NOT EXISTS auditlog.audit_checkpoints_local ON CLUSTER '{cluster}'
(
    log_id      LowCardinality(String),
    tree_size   UInt64,
    root        FixedString(32),
    block_index UInt64,
    note        String
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/auditlog/audit_checkpoints', '{replica}')
ORDER BY (log_id, tree_size)
SETTINGS replicated_deduplication_window = 100000, replicated_deduplication_window_seconds = 604800;

-- audit_checkpoints: sharded by cityHash64(log_id): one log's signed tree heads on one shard,
-- beside its leaves.
CREATE TABLE IF NOT EXISTS auditlog.audit_checkpoints ON CLUSTER '{cluster}' AS auditlog.audit_checkpoints_local
ENGINE = Distributed('{cluster}', auditlog, audit_checkpoints_local, cityHash64(log_id));
