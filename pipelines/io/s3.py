"""A boto3 S3 client for the settings' S3 endpoint (the stack's SeaweedFS gateway by default).

Here, beside the archive's S3 code, not in infra/, so that commands and tests that read the bucket
need not import the code that starts the local stack.
"""

from __future__ import annotations

from typing import Any

from schemas.settings import Settings

__all__ = ["s3_client"]


def s3_client(settings: Settings, connections: int = 10) -> Any:
    """A boto3 S3 client for the stack's gateway: path-style, the stack's keys, the settings' region.

    `connections`: its connection pool (botocore's default, 10), for a caller with more threads.
    """
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint,
        aws_access_key_id=settings.s3_access_key,
        aws_secret_access_key=settings.s3_secret_key,
        region_name=settings.s3_region,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
            max_pool_connections=connections,
        ),
    )
