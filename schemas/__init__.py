"""Shapes of everything that comes from outside.

The audit event schema, its validation and canonical form, the retention policy, the ClickHouse
DDL, and the deployment's settings (`schemas.settings`, read from the environment, which every
layer above may import).
"""
