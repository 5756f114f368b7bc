"""The audit event schema, its validation and canonical form, and the ClickHouse DDL."""
