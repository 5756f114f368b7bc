"""schemas/clickhouse.sql for a ClickHouse cluster: replicated local tables under Distributed ones."""

from __future__ import annotations

import re
import textwrap

from pipelines.io.clickhouse.schema import schema_statements

__all__ = ["CLUSTER_SHARDING_KEYS", "REPLICATED_DEDUPLICATION_WINDOW_SECONDS", "cluster_ddl"]


CLUSTER_SHARDING_KEYS: dict[str, tuple[str, str]] = {
    "audit_logs": (
        "cityHash64(tenant_id)",
        "one tenant's events on one shard, so a tenant search (the common query) reads one shard "
        "with optimize_skip_unused_shards = 1 (a block's rows spread over shards; each shard dedupes its part)",
    ),
    "audit_leaves": (
        "cityHash64(log_id)",
        "one log's leaves on one shard: proofs and the indexer read a log's leaves in leaf order",
    ),
    "audit_blocks": (
        "cityHash64(log_id)",
        "one log's hash chain on one shard, beside its leaves",
    ),
    "audit_checkpoints": (
        "cityHash64(log_id)",
        "one log's signed tree heads on one shard, beside its leaves",
    ),
}
"""Sharding key of each table's Distributed table, and why (`cluster_ddl` writes the reason in)."""

REPLICATED_DEDUPLICATION_WINDOW_SECONDS = 7 * 24 * 3600
"""How long replicated tables remember insert_deduplication_tokens.

ClickHouse 26 defaults to one hour, shorter than an indexer outage can last. The indexer only ever
re-inserts the block it was writing when it stopped, so a week covers a restart after any outage
shorter than that.
"""

_CREATE_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS (?P<db>\w+)\.(?P<table>\w+)\s*\n(?P<body>.*)", re.S)
_MERGE_TREE_ENGINE = re.compile(r"^ENGINE = (?P<family>\w*)MergeTree(?:\((?P<args>[^)]*)\))?$", re.M)
_NON_REPLICATED_WINDOW = re.compile(r"\bnon_replicated_deduplication_window\b")
_SETTINGS_CLAUSE = re.compile(r"^SETTINGS [^\n]*", re.M)

_CLUSTER_HEADER = """\
-- auditlog ClickHouse schema for a ClickHouse *cluster* (shards x replicas, Keeper or ZooKeeper).
-- GENERATED from schemas/clickhouse.sql by pipelines.io.clickhouse.cluster_ddl(): do not edit.
-- Regenerate after changing schemas/clickhouse.sql (tests/unit/test_cluster_manifests.py checks it):
--
--   .venv/bin/python -c "from pipelines.io.clickhouse import cluster_ddl; print(cluster_ddl(), end='')" \\
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
-- Distributed inserts would reorder."""


def cluster_ddl(cluster: str = "{cluster}") -> str:
    """Returns schemas/clickhouse.sql translated for a ClickHouse cluster (infra/clickhouse/cluster.sql).

    Every table becomes a `<name>_local` ReplicatedMergeTree table (Keeper path
    `/clickhouse/tables/{shard}/<db>/<name>`, replica `{replica}`) and a Distributed table named
    like the original over it, sharded by `CLUSTER_SHARDING_KEYS`; every statement runs
    `ON CLUSTER`. `{shard}` and `{replica}` stay server macros.

    Args:
        cluster: the cluster name of `ON CLUSTER` and of the Distributed tables; by default the
            `{cluster}` macro, so one file serves every cluster.

    Raises:
        ValueError: schemas/clickhouse.sql has a statement this translation does not know (a
            table without a sharding key in CLUSTER_SHARDING_KEYS, or an engine that is not a
            MergeTree): extend the translation rather than edit the generated file.
    """
    on_cluster = f"ON CLUSTER '{cluster}'"
    parts = [_CLUSTER_HEADER]
    for raw in schema_statements():
        statement = "\n".join(line.rstrip() for line in raw.splitlines())
        if statement.startswith("CREATE DATABASE ") and "\n" not in statement:
            parts.append(f"{statement} {on_cluster};")
            continue
        create = _CREATE_TABLE.fullmatch(statement)
        if create is None:
            raise ValueError(
                f"cluster_ddl: no cluster translation for this statement of schemas/clickhouse.sql: {raw[:80]!r}"
            )
        db, table, body = create["db"], create["table"], create["body"]
        if table not in CLUSTER_SHARDING_KEYS:
            raise ValueError(
                f"cluster_ddl: table {db}.{table} has no sharding key; add it to CLUSTER_SHARDING_KEYS "
                "in pipelines/io/clickhouse/cluster.py"
            )
        engine = _MERGE_TREE_ENGINE.search(body)
        if engine is None:
            raise ValueError(f"cluster_ddl: table {db}.{table} is not a MergeTree table; cannot replicate it")
        replicated_args = [f"'/clickhouse/tables/{{shard}}/{db}/{table}'", "'{replica}'"]
        if engine["args"]:
            replicated_args.append(engine["args"])
        body = (
            body[: engine.start()]
            + f"ENGINE = Replicated{engine['family']}MergeTree({', '.join(replicated_args)})"
            + body[engine.end() :]
        )
        body = _NON_REPLICATED_WINDOW.sub("replicated_deduplication_window", body)
        window = f"replicated_deduplication_window_seconds = {REPLICATED_DEDUPLICATION_WINDOW_SECONDS}"
        settings = _SETTINGS_CLAUSE.search(body)
        if settings is None:
            body = f"{body}\nSETTINGS {window}"
        else:
            body = f"{body[: settings.end()]}, {window}{body[settings.end() :]}"
        key, why = CLUSTER_SHARDING_KEYS[table]
        reason = textwrap.wrap(f"{table}: sharded by {key}: {why}.", width=96)
        parts.append(f"CREATE TABLE IF NOT EXISTS {db}.{table}_local {on_cluster}\n{body};")
        parts.append(
            "".join(f"-- {line}\n" for line in reason)
            + f"CREATE TABLE IF NOT EXISTS {db}.{table} {on_cluster} AS {db}.{table}_local\n"
            + f"ENGINE = Distributed('{cluster}', {db}, {table}_local, {key});"
        )
    return "\n\n".join(parts) + "\n"
