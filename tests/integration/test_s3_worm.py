"""The WORM bucket on the test stack: Object Lock COMPLIANCE and `If-None-Match: *` really hold."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from botocore.exceptions import ClientError

from infra.stack import Stack
from pipelines.io.s3 import s3_client

pytestmark = pytest.mark.integration


def _error_code(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    return str(excinfo.value.response["Error"]["Code"])


def _put_locked(s3: object, bucket: str, key: str, body: bytes) -> str:
    until = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    response = s3.put_object(  # type: ignore[attr-defined]
        Bucket=bucket,
        Key=key,
        Body=body,
        IfNoneMatch="*",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=until,
    )
    return str(response["VersionId"])


def test_bucket_has_object_lock_and_versioning(stack: Stack) -> None:
    s3 = s3_client(stack.settings)
    bucket = stack.settings.bucket

    lock = s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    assert lock["ObjectLockEnabled"] == "Enabled"
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"


def test_compliance_locked_version_cannot_be_deleted_even_with_bypass(stack: Stack) -> None:
    s3 = s3_client(stack.settings)
    bucket = stack.settings.bucket
    key = f"it/locked-{uuid.uuid4().hex}.json"
    version = _put_locked(s3, bucket, key, b'{"block": 0}')

    head = s3.head_object(Bucket=bucket, Key=key, VersionId=version)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    with pytest.raises(ClientError) as excinfo:
        s3.delete_object(Bucket=bucket, Key=key, VersionId=version, BypassGovernanceRetention=True)

    assert _error_code(excinfo) == "AccessDenied"
    body = s3.get_object(Bucket=bucket, Key=key, VersionId=version)["Body"].read()
    assert body == b'{"block": 0}'


def test_put_if_none_match_on_existing_key_is_precondition_failed(stack: Stack) -> None:
    s3 = s3_client(stack.settings)
    bucket = stack.settings.bucket
    key = f"it/once-{uuid.uuid4().hex}.json"
    _put_locked(s3, bucket, key, b"first")

    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=bucket, Key=key, Body=b"second", IfNoneMatch="*")

    assert _error_code(excinfo) == "PreconditionFailed"
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"first"


def test_wrong_credentials_are_refused(stack: Stack) -> None:
    intruder = s3_client(stack.settings.replace(s3_secret_key="not-the-secret"))

    with pytest.raises(ClientError) as excinfo:
        intruder.list_objects_v2(Bucket=stack.settings.bucket)

    assert _error_code(excinfo) in {"SignatureDoesNotMatch", "AccessDenied", "InvalidAccessKeyId"}
