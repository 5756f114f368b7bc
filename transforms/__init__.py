"""The pure core: canonical bytes, Merkle trees, blocks, checkpoints and proofs.

Imports only the standard library and `cryptography`; no Flink, Beam, Kafka, ClickHouse or boto3.
"""
