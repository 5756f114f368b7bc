"""The local stack (Kafka, SeaweedFS S3 with Object Lock, Flink) and cluster manifests."""
