"""The archive's rules, on the in-memory archive and on S3Archive over a scripted fake S3 client.

The fake client lets the retry and conditional-write logic of `S3Archive` run without a network;
tests/integration/test_archive_s3.py checks the same against real SeaweedFS.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from pipelines.io.archive import (
    ArchiveConflictError,
    ArchiveLockedError,
    ArchiveNotFoundError,
    ArchiveUnavailableError,
    RetryPolicy,
    S3Archive,
    block_key,
    checkpoint_key,
    lock_until,
)
from pipelines.io.archive.testing import InMemoryArchive

UNTIL = lock_until(days=1)


# --------------------------------------------------------------------------- layout


@pytest.mark.parametrize(
    ("log_id", "index", "key"),
    [
        ("log0", 0, "logs/log0/blocks/000000000000.block"),
        ("p-0003", 42, "logs/p-0003/blocks/000000000042.block"),
        ("a.b_c=d", 10**12 - 1, "logs/a.b_c=d/blocks/999999999999.block"),
    ],
)
def test_block_key(log_id: str, index: int, key: str) -> None:
    assert block_key(log_id, index) == key


def test_checkpoint_key() -> None:
    assert checkpoint_key("log0", 4096) == "logs/log0/checkpoints/000000000004096.checkpoint"


@pytest.mark.parametrize("log_id", ["", "a/b", "..", "../x", ".hidden", "-x", "a b", "x" * 129])
def test_unsafe_log_ids_are_refused(log_id: str) -> None:
    with pytest.raises(ValueError, match="log id"):
        block_key(log_id, 0)


@pytest.mark.parametrize("index", [-1, 10**12])
def test_block_index_out_of_range(index: int) -> None:
    with pytest.raises(ValueError, match="block index"):
        block_key("log0", index)


# --------------------------------------------------------------------------- in memory


def test_put_and_get_block_and_checkpoint() -> None:
    archive = InMemoryArchive()

    result = archive.put_block("log0", 0, b"block-0", UNTIL)
    archive.put_checkpoint("log0", 256, "note 256\n", UNTIL)

    assert result.created and result.key == block_key("log0", 0)
    assert archive.get_block("log0", 0) == b"block-0"
    assert archive.get_checkpoint("log0", 256) == "note 256\n"
    assert archive.retention(result.key) is not None
    assert archive.retention(result.key).mode == "COMPLIANCE"  # type: ignore[union-attr]
    assert archive.retention(result.key).retain_until == UNTIL  # type: ignore[union-attr]


def test_identical_re_put_is_success_and_stores_nothing_new() -> None:
    archive = InMemoryArchive()
    first = archive.put_block("log0", 3, b"same bytes", UNTIL)

    again = archive.put_block("log0", 3, b"same bytes", lock_until(days=2))

    assert first.created and not again.created
    assert again.sha256 == first.sha256
    assert len(archive.object_versions(block_key("log0", 3))) == 1


def test_different_bytes_at_same_key_is_an_integrity_alarm_and_keeps_the_original() -> None:
    archive = InMemoryArchive()
    original = archive.put_block("log0", 7, b"original", UNTIL)

    with pytest.raises(ArchiveConflictError) as excinfo:
        archive.put_block("log0", 7, b"forged", UNTIL)

    err = excinfo.value
    assert err.key == block_key("log0", 7)
    assert err.archived_sha256 == original.sha256
    assert err.new_sha256 != original.sha256
    assert err.key in str(err) and original.sha256 in str(err) and err.new_sha256 in str(err)
    assert archive.get_block("log0", 7) == b"original"
    assert len(archive.object_versions(err.key)) == 1


def test_checkpoint_conflict() -> None:
    archive = InMemoryArchive()
    archive.put_checkpoint("log0", 10, "note A\n", UNTIL)
    archive.put_checkpoint("log0", 10, "note A\n", UNTIL)

    with pytest.raises(ArchiveConflictError):
        archive.put_checkpoint("log0", 10, "note B\n", UNTIL)


def test_listing_is_numeric_and_per_log() -> None:
    archive = InMemoryArchive()
    for index in (10, 2, 0, 1):
        archive.put_block("log1", index, f"b{index}".encode(), UNTIL)
    archive.put_block("log0", 0, b"x", UNTIL)
    for size in (1000, 256, 4096):
        archive.put_checkpoint("log1", size, f"note {size}\n", UNTIL)
    archive.objects["logs/log1/blocks/README"] = archive.objects[block_key("log0", 0)]  # a stray object

    assert archive.list_logs() == ["log0", "log1"]
    assert archive.list_blocks("log1") == [0, 1, 2, 10]
    assert archive.list_blocks("log0") == [0]
    assert archive.list_blocks("nope") == []
    assert archive.list_checkpoints("log1") == [256, 1000, 4096]
    assert archive.latest_checkpoint("log1") == (4096, "note 4096\n")
    assert archive.latest_checkpoint("log0") is None


def test_missing_objects() -> None:
    archive = InMemoryArchive()
    with pytest.raises(ArchiveNotFoundError, match="000000000005.block"):
        archive.get_block("log0", 5)
    with pytest.raises(ArchiveNotFoundError):
        archive.get_checkpoint("log0", 5)


def test_retain_until_must_be_aware_and_in_the_future() -> None:
    archive = InMemoryArchive()
    with pytest.raises(ValueError, match="time zone"):
        archive.put_block("log0", 0, b"x", dt.datetime(2099, 1, 1))
    with pytest.raises(ValueError, match="not in the future"):
        archive.put_block("log0", 0, b"x", dt.datetime(2000, 1, 1, tzinfo=dt.UTC))


def test_default_retention_comes_from_retention_days() -> None:
    archive = InMemoryArchive(retention_days=30)
    result = archive.put_block("log0", 0, b"x")

    until = archive.retention(result.key).retain_until  # type: ignore[union-attr]
    assert abs(until - lock_until(days=30)) < dt.timedelta(minutes=1)


def test_unconditional_overwrite_shows_as_a_second_version() -> None:
    archive = InMemoryArchive()
    key = archive.put_block("log0", 0, b"original", UNTIL).key

    archive.overwrite_unconditionally(key, b"tampered")

    versions = archive.object_versions(key)
    assert [v.is_latest for v in versions] == [True, False]
    assert archive.get(key) == b"tampered"
    assert archive.get(key, versions[1].version_id) == b"original"
    assert archive.retention(key) is None  # the tampered version is not locked


def test_delete_marker_hides_a_block_but_its_locked_version_stays() -> None:
    archive = InMemoryArchive()
    for index in range(3):
        archive.put_block("log0", index, f"b{index}".encode(), UNTIL)
    key = block_key("log0", 1)

    archive.delete(key)

    assert archive.list_blocks("log0") == [0, 2]
    versions = archive.object_versions(key)
    assert versions[0].is_delete_marker and not versions[1].is_delete_marker
    with pytest.raises(ArchiveLockedError):
        archive.delete_version(key, versions[1].version_id)
    assert archive.get(key, versions[1].version_id) == b"b1"


# --------------------------------------------------------------------------- S3Archive, scripted


def _client_error(status: int, code: str, op: str = "PutObject") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, op)


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self) -> bytes:
        return self.data


class FakeS3:
    """Enough of a boto3 S3 client: objects in a dict, plus scripted failures per operation."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.failures: dict[str, list[Exception]] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _maybe_fail(self, op: str) -> None:
        queue = self.failures.get(op)
        if queue:
            raise queue.pop(0)

    def put_object(self, **kw: Any) -> dict[str, Any]:
        self.calls.append(("put_object", kw))
        self._maybe_fail("put_object")
        if kw.get("IfNoneMatch") == "*" and kw["Key"] in self.objects:
            raise _client_error(412, "PreconditionFailed")
        self.objects[kw["Key"]] = kw["Body"]
        return {"VersionId": f"v{len(self.calls)}"}

    def get_object(self, **kw: Any) -> dict[str, Any]:
        self.calls.append(("get_object", kw))
        self._maybe_fail("get_object")
        if kw["Key"] not in self.objects:
            raise _client_error(404, "NoSuchKey", "GetObject")
        return {"Body": _Body(self.objects[kw["Key"]])}

    def list_objects_v2(self, **kw: Any) -> dict[str, Any]:
        self.calls.append(("list_objects_v2", kw))
        self._maybe_fail("list_objects_v2")
        keys = sorted(k for k in self.objects if k.startswith(kw["Prefix"]))
        start = int(kw.get("ContinuationToken", 0))
        page = keys[start : start + 2]  # tiny pages: exercise continuation
        more = start + 2 < len(keys)
        out: dict[str, Any] = {"Contents": [{"Key": k} for k in page], "IsTruncated": more}
        if more:
            out["NextContinuationToken"] = str(start + 2)
        return out


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


def _s3(policy: RetryPolicy | None = None) -> tuple[S3Archive, FakeS3, FakeClock]:
    fake, clock = FakeS3(), FakeClock()
    archive = S3Archive(fake, "bucket", retry=policy or RetryPolicy(60, 1, 8), sleep=clock.sleep, clock=clock)
    return archive, fake, clock


def test_s3_put_sends_if_none_match_lock_and_checksum() -> None:
    archive, fake, _ = _s3()

    archive.put_block("log0", 0, b"data", UNTIL)

    _, kw = fake.calls[0]
    assert kw["IfNoneMatch"] == "*"
    assert kw["ObjectLockMode"] == "COMPLIANCE"
    assert kw["ObjectLockRetainUntilDate"] == UNTIL
    assert kw["ChecksumSHA256"] == "Om6weQ85rIfJTzhWst0sXREOaBFgImGpqSPTuyOtyLc="  # base64 SHA-256 of b"data"


def test_s3_precondition_failed_with_same_bytes_is_success() -> None:
    archive, fake, _ = _s3()
    archive.put_block("log0", 0, b"data", UNTIL)

    again = archive.put_block("log0", 0, b"data", UNTIL)

    assert not again.created
    assert [c for c, _ in fake.calls] == ["put_object", "put_object", "get_object"]


def test_s3_precondition_failed_with_other_bytes_is_a_conflict() -> None:
    archive, fake, _ = _s3()
    archive.put_block("log0", 0, b"data", UNTIL)

    with pytest.raises(ArchiveConflictError):
        archive.put_block("log0", 0, b"other", UNTIL)
    assert fake.objects[block_key("log0", 0)] == b"data"


def test_s3_connection_errors_and_5xx_are_retried_with_growing_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    archive, fake, clock = _s3()
    fake.failures["put_object"] = [
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        _client_error(503, "ServiceUnavailable"),
        _client_error(500, "InternalError"),
        _client_error(400, "SlowDown"),
    ]

    with caplog.at_level(logging.WARNING, logger="pipelines.io.archive"):
        result = archive.put_block("log0", 0, b"data", UNTIL)

    assert result.created
    assert len(clock.sleeps) == 4
    assert 0.5 <= clock.sleeps[0] <= 1 and 4 <= clock.sleeps[3] <= 8  # half fixed, half jitter
    retries = [r.getMessage() for r in caplog.records]
    assert len(retries) == 4
    assert all(block_key("log0", 0) in line for line in retries)
    assert "EndpointConnectionError" in retries[0] and "ServiceUnavailable" in retries[1]


def test_s3_4xx_is_not_retried() -> None:
    archive, fake, clock = _s3()
    fake.failures["put_object"] = [_client_error(403, "AccessDenied")]

    with pytest.raises(ClientError, match="AccessDenied"):
        archive.put_block("log0", 0, b"data", UNTIL)
    assert clock.sleeps == []


def test_s3_gives_up_at_the_deadline() -> None:
    archive, fake, clock = _s3(RetryPolicy(deadline_s=30, initial_backoff_s=1, max_backoff_s=4))
    fake.failures["put_object"] = [EndpointConnectionError(endpoint_url="http://x")] * 1000

    with pytest.raises(ArchiveUnavailableError, match="still failing"):
        archive.put_block("log0", 0, b"data", UNTIL)
    assert 30 <= clock.now <= 30 + 1e-9  # the last wait is cut to the deadline


def test_s3_reads_retry_and_lists_follow_continuation_tokens() -> None:
    archive, fake, _ = _s3()
    for index in range(5):
        archive.put_block("log0", index, b"x", UNTIL)
    fake.failures["list_objects_v2"] = [EndpointConnectionError(endpoint_url="http://x")]
    fake.failures["get_object"] = [_client_error(502, "BadGateway", "GetObject")]

    assert archive.list_blocks("log0") == [0, 1, 2, 3, 4]
    assert archive.get_block("log0", 4) == b"x"
    with pytest.raises(ArchiveNotFoundError):
        archive.get_block("log0", 9)


@pytest.mark.parametrize("version", [None, "3a/b+c=="])
@pytest.mark.parametrize("key", ["logs/a.p0/blocks/0001.block", "logs/x y+z/ü~/tile/entries/000.p/7"])
def test_signed_get_signs_as_botocore_does(key: str, version: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Authorization of a SigV4 GET, held to botocore's S3 signer at the same instant."""
    import botocore.auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from pipelines.io.archive.s3signed import SignedS3

    now = dt.datetime(2026, 12, 4, 17, 5, 9, tzinfo=dt.UTC)
    reader = SignedS3("http://127.0.0.1:8333", "bucket", "AKID", "se/cret+key", "eu-west-3")
    target, headers = reader.headers(key, version, now)

    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: now.replace(tzinfo=None))
    request = AWSRequest("GET", "http://127.0.0.1:8333" + target)
    botocore.auth.S3SigV4Auth(Credentials("AKID", "se/cret+key"), "s3", "eu-west-3").add_auth(request)
    assert headers["x-amz-date"] == request.headers["X-Amz-Date"]
    assert headers["Authorization"] == request.headers["Authorization"]
    with pytest.raises(ValueError, match="not an http"):
        SignedS3("127.0.0.1:8333", "bucket", "a", "b")


@pytest.mark.parametrize("key", ["logs/a.p0/blocks/0001.block", "logs/x y+z/ü~/tile/entries/000.p/7"])
def test_signed_put_signs_as_botocore_does(key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Authorization of a conditional, Object-Locked SigV4 PUT, held to botocore's S3 signer."""
    import base64
    import hashlib

    import botocore.auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from pipelines.io.archive.s3signed import SignedS3

    now = dt.datetime(2026, 12, 4, 17, 5, 9, tzinfo=dt.UTC)
    data = b"block bytes\n" * 100
    digest = hashlib.sha256(data).digest()
    extra = {
        "If-None-Match": "*",
        "x-amz-checksum-sha256": base64.b64encode(digest).decode(),
        "x-amz-object-lock-mode": "COMPLIANCE",
        "x-amz-object-lock-retain-until-date": "2033-12-04T17:05:09Z",
    }
    signer = SignedS3("http://127.0.0.1:8333", "bucket", "AKID", "se/cret+key", "eu-west-3")
    target, headers = signer.headers(key, None, now, method="PUT", payload_sha256=digest.hex(), extra=extra)

    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: now.replace(tzinfo=None))
    request = AWSRequest("PUT", "http://127.0.0.1:8333" + target, data=data, headers=dict(extra))
    botocore.auth.S3SigV4Auth(Credentials("AKID", "se/cret+key"), "s3", "eu-west-3").add_auth(request)
    assert headers["x-amz-content-sha256"] == request.headers["X-Amz-Content-SHA256"] == digest.hex()
    assert headers["Authorization"] == request.headers["Authorization"]
    with pytest.raises(ValueError, match="not a base64 SHA-256"):
        signer.put_locked(key, data, base64.b64encode(b"short").decode(), "COMPLIANCE", now)


@pytest.mark.parametrize(
    "endpoint",
    ["http://LocalHost:8333", "http://127.0.0.1:80", "https://user@S3.example.com:443/", "http://[::1]:9000"],
)
def test_signed_get_signs_the_host_it_sends(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lowercase, no userinfo, no default port, IPv6 in brackets: botocore's Host, and the URL's."""
    import botocore.auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from pipelines.io.archive.s3signed import SignedS3

    now = dt.datetime(2026, 12, 4, 17, 5, 9, tzinfo=dt.UTC)
    reader = SignedS3(endpoint, "bucket", "AKID", "secret")
    target, headers = reader.headers("logs/a.p0/x", "v1", now)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: now.replace(tzinfo=None))
    request = AWSRequest("GET", endpoint.rstrip("/") + target)
    botocore.auth.S3SigV4Auth(Credentials("AKID", "secret"), "s3", "us-east-1").add_auth(request)
    assert headers["Authorization"] == request.headers["Authorization"]
    assert "@" not in reader._origin and reader._origin == reader._origin.lower()
