"""The ingest job's configuration: what its functions need on the workers, from the one settings object.

Light on purpose (no PyFlink): every command that only needs to open the archive or the key store
as the job does (`archive_spec`, `keystore_spec`) imports this, not the job.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from pipelines.ingest_core import (
    IngestOptions,
)
from schemas.retention import load_policy
from transforms.retention import RetentionPolicy


@dataclass(frozen=True)
class JobConfig:
    """Everything the job's functions need on the workers (pickled with them)."""

    options: IngestOptions
    bootstrap: str
    signer_key_file: str
    keystore: dict[str, Any]
    archive: dict[str, Any]
    dlq_topic: str
    dedupe_ttl_days: int = 7
    group_id: str = "auditlog-ingest"


def job_config(
    settings: Any, topic: str | None = None, block_size: int | None = None, verifiable: bool = True
) -> JobConfig:
    """The job's configuration from the one settings object."""
    options = IngestOptions(
        topic=topic or settings.topic,
        origin_prefix=settings.origin,
        block_size=block_size or settings.block_size,
        verifiable=verifiable,
        retention=load_policy(settings.retention_policy_path),
        core=settings.core,
    )
    return JobConfig(
        options=options,
        bootstrap=settings.kafka_bootstrap,
        signer_key_file=str(settings.signer_key_file),
        keystore=keystore_spec(settings),
        archive=archive_spec(settings),
        dlq_topic=settings.dlq_topic,
        dedupe_ttl_days=settings.dedupe_ttl_days,
    )


def keystore_spec(settings: Any) -> dict[str, Any]:
    """The settings fields that open the key store on a worker."""
    return {
        "keystore_file": str(settings.keystore_path),
        "keystore_url": settings.keystore_url,
        "master_key_file": settings.master_key_file,
        "master_key": settings.master_key,
        "key_seed": settings.key_seed,
    }


def archive_spec(settings: Any) -> dict[str, Any]:
    return {
        "endpoint": settings.s3_endpoint,
        "region": settings.s3_region,
        "bucket": settings.bucket,
        "access_key": settings.s3_access_key,
        "secret_key": settings.s3_secret_key,
    }


def config_to_json(config: JobConfig) -> str:
    data = dataclasses.asdict(config)
    data["options"]["retention"] = config.options.retention.to_spec()
    return json.dumps(data, indent=2)


def config_from_json(text: str) -> JobConfig:
    data = json.loads(text)
    options = data.pop("options")
    options["pii_fields"] = tuple(options["pii_fields"])
    options["retention"] = RetentionPolicy.parse(options["retention"], source="the job config's options.retention")
    return JobConfig(options=IngestOptions(**options), **data)
