"""Adapters to the outside systems the pipelines write to and the commands read from.

Each outside system sits behind a small interface with a real and an in-memory (or embedded)
implementation, e.g. `archive` (the WORM archive: S3 with Object Lock, or in memory) and
`clickhouse` (the search index: embedded chDB or a ClickHouse server). Importing this package
loads no client library; each module loads its own when a connection is made.
"""
