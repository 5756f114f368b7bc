-- Optional: keep the last 30 days of audit_logs on local disks and move older partitions to S3.
-- Needs infra/clickhouse/storage.xml (the `s3` disk and the `hot_and_cold` policy) on every
-- server first; run after cluster.sql:
--
--   clickhouse-client --host HOST --multiquery < infra/clickhouse/tiering.sql
--
-- audit_logs holds nearly all the bytes (canonical events, metadata); leaves, blocks and
-- checkpoints stay hot. MODIFY TTL replaces the table's whole TTL, so it restates the retention
-- rule of schemas/clickhouse.sql (delete when an event's retention ends, unless on legal hold).
-- Switching to hot_and_cold is allowed because it keeps the table's current volume, `default`.

ALTER TABLE auditlog.audit_logs_local ON CLUSTER '{cluster}'
    MODIFY SETTING storage_policy = 'hot_and_cold';

ALTER TABLE auditlog.audit_logs_local ON CLUSTER '{cluster}'
    MODIFY TTL occurred_at + INTERVAL 30 DAY TO DISK 's3',
               retain_until DELETE WHERE hold_until <= now();
