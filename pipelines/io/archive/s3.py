"""The archive in an S3 bucket with versioning and Object Lock: S3Archive, its retries, opening, the bucket.

boto3 and botocore are loaded when a client is made or an error is classified.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote_plus
from xml.etree import ElementTree

from pipelines.io.archive.base import Archive, ObjectVersion, Retention
from pipelines.io.archive.errors import (
    ArchiveError,
    ArchiveLockedError,
    ArchiveNotFoundError,
    ArchiveUnavailableError,
    _KeyTaken,
)
from pipelines.io.archive.locks import DEFAULT_RETENTION_DAYS, LOCK_MODE
from pipelines.io.archive.s3signed import SignedS3

if TYPE_CHECKING:
    from schemas.settings import Settings

__all__ = ["RetryPolicy", "S3Archive", "ensure_bucket", "is_transient", "open_archive"]

log = logging.getLogger("pipelines.io.archive")  # the package's logger: log lines keep their name

# Errors S3 (or SeaweedFS) returns for an overloaded or restarting server: worth waiting for.
_RETRYABLE_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeoutException",
        "RequestLimitExceeded",
        "TooManyRequests",
    }
)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often to retry transient S3 failures.

    Attributes:
        deadline_s: give up (ArchiveUnavailableError) once this many seconds have passed since the
            operation began; an outage shorter than this only stalls the writer.
        initial_backoff_s: the first wait; each further wait doubles, up to `max_backoff_s`.
        max_backoff_s: the longest single wait.
    """

    deadline_s: float = 15 * 60.0
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """The wait before retry number `attempt` (1-based): half fixed, half jitter."""
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * 2.0 ** (attempt - 1))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _http_status(exc: Exception) -> int:
    response = getattr(exc, "response", None) or {}
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _xml(data: bytes) -> Any:
    """The root element of an S3 XML answer; a body that is not XML is an error that quotes it."""
    try:
        return ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:
        raise ArchiveError(f"S3 answered a listing with something that is not XML ({exc}): {data[:200]!r}") from exc


def _children(element: Any, name: str) -> Iterator[Any]:
    """The child elements called `name`, with or without the S3 namespace."""
    return (child for child in element if child.tag.rpartition("}")[2] == name)


_QUERY_NAMES = {
    "Prefix": "prefix",
    "Delimiter": "delimiter",
    "StartAfter": "start-after",
    "ContinuationToken": "continuation-token",
    "KeyMarker": "key-marker",
    "VersionIdMarker": "version-id-marker",
}


def _query(args: dict[str, Any]) -> dict[str, str]:
    """A listing's boto3 arguments (but the bucket) as the query parameters of its REST request."""
    return {_QUERY_NAMES[name]: value for name, value in args.items() if name != "Bucket"}


def _key_decoder(root: Any) -> Callable[[str], str]:
    """How the listing's keys read: URL-encoded when it says so (asked for: XML cannot carry every key)."""
    return unquote_plus if _text(root, "EncodingType") == "url" else str


def _text(element: Any, name: str) -> str:
    """The text of the first child called `name` ("" when there is none)."""
    for child in _children(element, name):
        return str(child.text or "")
    return ""


def is_transient(exc: Exception) -> bool:
    """True for failures worth retrying: no connection, timeouts, 5xx, 429 and throttling codes."""
    from botocore.exceptions import ClientError, HTTPClientError, IncompleteReadError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(exc, (HTTPClientError, BotoConnectionError, IncompleteReadError)):
        return True
    if isinstance(exc, ClientError):
        status = _http_status(exc)
        return status >= 500 or status == 429 or _error_code(exc) in _RETRYABLE_CODES
    return False


class S3Archive(Archive):
    """The archive in an S3 bucket with versioning and Object Lock (see `ensure_bucket`).

    Args:
        client: a boto3 S3 client (e.g. `infra.stack.s3_client(settings)`).
        bucket: the bucket; it must have Object Lock enabled.
        retry: how long to wait out transient failures.
        retention_days: how long puts lock their objects unless given a retain-until date.
        sleep: the sleep function (tests pass a fake).
        clock: a monotonic clock in seconds (tests pass a fake).
        signed: what GETs, lists and PUTs objects, if not the client (`open_archive` gives a
            `SignedS3`: a fraction of boto3's CPU per request, which verify pays for every block
            and bundle it reads and the ingest job for every object it writes).
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        retry: RetryPolicy | None = None,
        retention_days: float = DEFAULT_RETENTION_DAYS,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        signed: SignedS3 | None = None,
    ) -> None:
        self.client = client
        self.signed = signed
        self.bucket = bucket
        self.retry = retry or RetryPolicy()
        self.retention_days = retention_days
        self._sleep = sleep
        self._clock = clock
        self._rng = random.Random()

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> S3Archive:
        """The archive of `settings.bucket` at `settings.s3_endpoint` with the settings' keys."""
        return open_archive(
            settings.s3_endpoint, settings.bucket, settings.s3_access_key, settings.s3_secret_key, **options
        )

    # ---- retries

    def _call(self, what: str, key: str, operation: Callable[[], T]) -> T:
        """Runs `operation`, retrying transient failures until the deadline; other errors propagate."""
        began = self._clock()
        attempt = 0
        while True:
            try:
                return operation()
            except Exception as exc:  # noqa: BLE001 - classified below, re-raised unless transient
                if not is_transient(exc):
                    raise
                attempt += 1
                elapsed = self._clock() - began
                remaining = self.retry.deadline_s - elapsed
                if remaining <= 0:
                    raise ArchiveUnavailableError(
                        f"S3 {what} {self.bucket}/{key} still failing after {attempt} attempts over "
                        f"{elapsed:.0f} s: {exc}. Check that S3 is up (`auditlog stack status`) and retry."
                    ) from exc
                wait = min(self.retry.backoff(attempt, self._rng), remaining)
                log.warning(
                    "S3 %s %s/%s failed (%s: %s); retry %d in %.1f s, giving up in %.0f s",
                    what,
                    self.bucket,
                    key,
                    type(exc).__name__,
                    exc,
                    attempt,
                    wait,
                    remaining,
                )
                self._sleep(wait)

    # ---- primitives

    def _create(self, key: str, data: bytes, checksum: str, retain_until: dt.datetime) -> str | None:
        from botocore.exceptions import ClientError

        def put() -> str | None:
            if self.signed is not None:
                return self.signed.put_locked(key, data, checksum, LOCK_MODE, retain_until)
            response = self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                IfNoneMatch="*",
                ChecksumSHA256=checksum,
                ObjectLockMode=LOCK_MODE,
                ObjectLockRetainUntilDate=retain_until,
            )
            version: str | None = response.get("VersionId")
            return version

        try:
            return self._call("PUT", key, put)
        except ClientError as exc:
            # 409 ConditionalRequestConflict: a concurrent conditional write to the same key won.
            if _error_code(exc) in ("PreconditionFailed", "ConditionalRequestConflict") or _http_status(exc) == 412:
                raise _KeyTaken(key) from exc
            raise

    def get(self, key: str, version_id: str | None = None) -> bytes:
        from botocore.exceptions import ClientError

        def read() -> bytes:
            if self.signed is not None:
                return self.signed.get(key, version_id)
            extra = {"VersionId": version_id} if version_id else {}
            response = self.client.get_object(Bucket=self.bucket, Key=key, **extra)
            body: bytes = response["Body"].read()
            return body

        try:
            return self._call("GET", key, read)
        except ClientError as exc:
            if _error_code(exc) in ("NoSuchKey", "NoSuchVersion", "404") or _http_status(exc) == 404:
                raise ArchiveNotFoundError(key, version_id) from None
            raise

    def _list(self, prefix: str, delimiter: str | None, start_after: str | None = None) -> Iterator[str]:
        token: str | None = None
        while True:
            args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
            if start_after:
                args["StartAfter"] = start_after
            if delimiter:
                args["Delimiter"] = delimiter
            if token:
                args["ContinuationToken"] = token
            page = self._call("LIST", prefix, partial(self._list_page, args))
            if delimiter:
                yield from (p["Prefix"] for p in page.get("CommonPrefixes", []))
            else:
                yield from (o["Key"] for o in page.get("Contents", []))
            token = page.get("NextContinuationToken") if page.get("IsTruncated") else None
            if not token:
                return

    def _list_page(self, args: dict[str, Any]) -> dict[str, Any]:
        """One ListObjectsV2 page as boto3 shapes it (the fields `_list` reads)."""
        if self.signed is None:
            page: dict[str, Any] = self.client.list_objects_v2(**args)
            return page
        params = {"list-type": "2", "encoding-type": "url", **_query(args)}
        root = _xml(self.signed.get("", params=params))
        key = _key_decoder(root)
        page = {
            "Contents": [{"Key": key(_text(item, "Key"))} for item in _children(root, "Contents")],
            "CommonPrefixes": [{"Prefix": key(_text(item, "Prefix"))} for item in _children(root, "CommonPrefixes")],
            "IsTruncated": _text(root, "IsTruncated") == "true",
            "NextContinuationToken": _text(root, "NextContinuationToken"),
        }
        if page["IsTruncated"] and not page["NextContinuationToken"]:
            raise ArchiveError(f"S3 cut a listing of {args.get('Prefix')!r} short without saying where it goes on")
        return page

    def _versions_page(self, args: dict[str, Any]) -> dict[str, Any]:
        """One ListObjectVersions page as boto3 shapes it (the fields `_versions` reads)."""
        if self.signed is None:
            page: dict[str, Any] = self.client.list_object_versions(**args)
            return page
        params = {"versions": "", "encoding-type": "url", **_query(args)}
        root = _xml(self.signed.get("", params=params))
        key = _key_decoder(root)

        def version(item: Any) -> dict[str, Any]:
            modified = _text(item, "LastModified")
            return {
                "Key": key(_text(item, "Key")),
                "VersionId": _text(item, "VersionId"),
                "IsLatest": _text(item, "IsLatest") == "true",
                "LastModified": dt.datetime.fromisoformat(modified) if modified else None,
                "Size": int(_text(item, "Size") or 0),
                "ETag": _text(item, "ETag"),
            }

        page = {
            "Versions": [version(item) for item in _children(root, "Version")],
            "DeleteMarkers": [version(item) for item in _children(root, "DeleteMarker")],
            "IsTruncated": _text(root, "IsTruncated") == "true",
            "NextKeyMarker": key(_text(root, "NextKeyMarker")),
            "NextVersionIdMarker": _text(root, "NextVersionIdMarker"),
        }
        if page["IsTruncated"] and not page["NextKeyMarker"]:
            raise ArchiveError(f"S3 cut a version listing of {args.get('Prefix')!r} short without a key marker")
        return page

    def versions_under(self, prefix: str) -> dict[str, list[ObjectVersion]]:
        found = self._versions(prefix)
        # SeaweedFS's version listing pages in its directory order, not in key order, so a key that
        # is a prefix of a "directory" (tile/entries/083 beside tile/entries/083.p/2) can fall
        # between two pages and be skipped. The plain listing does not skip it: any current key it
        # holds that the version listing missed is listed on its own.
        for key in set(self._list(prefix, None)) - set(found):
            found[key] = self._versions(key).get(key, [])
        return found

    def _versions(self, prefix: str) -> dict[str, list[ObjectVersion]]:
        found: dict[str, list[ObjectVersion]] = {}
        markers: dict[str, str] = {}
        while True:
            args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, **markers}
            page = self._call("LIST-VERSIONS", prefix, partial(self._versions_page, args))
            for item in page.get("Versions", []):
                found.setdefault(item["Key"], []).append(
                    ObjectVersion(
                        item["Key"],
                        item["VersionId"],
                        bool(item.get("IsLatest")),
                        False,
                        int(item.get("Size", 0)),
                        item.get("LastModified"),
                        str(item.get("ETag", "")),
                    )
                )
            for item in page.get("DeleteMarkers", []):
                found.setdefault(item["Key"], []).append(
                    ObjectVersion(
                        item["Key"], item["VersionId"], bool(item.get("IsLatest")), True, 0, item.get("LastModified")
                    )
                )
            if not page.get("IsTruncated"):
                break
            markers = {"KeyMarker": page["NextKeyMarker"]}
            if page.get("NextVersionIdMarker"):
                markers["VersionIdMarker"] = page["NextVersionIdMarker"]
        epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
        for versions in found.values():
            # Newest first; the latest version leads even if two share a timestamp.
            versions.sort(key=lambda v: (v.is_latest, v.last_modified or epoch), reverse=True)
        return found

    def retention(self, key: str, version_id: str | None = None) -> Retention | None:
        from botocore.exceptions import ClientError

        extra = {"VersionId": version_id} if version_id else {}
        try:
            head = self._call("HEAD", key, lambda: self.client.head_object(Bucket=self.bucket, Key=key, **extra))
        except ClientError as exc:
            if _http_status(exc) == 404:
                raise ArchiveNotFoundError(key, version_id) from None
            raise
        if "ObjectLockMode" not in head:
            return None
        return Retention(head["ObjectLockMode"], head["ObjectLockRetainUntilDate"])

    def delete_version(self, key: str, version_id: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self._call(
                "DELETE",
                key,
                lambda: self.client.delete_object(Bucket=self.bucket, Key=key, VersionId=version_id),
            )
        except ClientError as exc:
            if _error_code(exc) == "AccessDenied":
                raise ArchiveLockedError(
                    f"{key} version {version_id} is under Object Lock retention or legal hold"
                ) from exc
            raise

    def legal_hold(self, key: str, version_id: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            answer = self._call(
                "GET legal hold",
                key,
                lambda: self.client.get_object_legal_hold(Bucket=self.bucket, Key=key, VersionId=version_id),
            )
        except ClientError as exc:
            if _http_status(exc) == 404 or _error_code(exc) in ("NoSuchObjectLockConfiguration", "NoSuchKey"):
                return False
            raise
        return bool(answer.get("LegalHold", {}).get("Status") == "ON")

    def set_legal_hold(self, key: str, version_id: str, on: bool) -> None:
        status = "ON" if on else "OFF"
        self._call(
            "PUT legal hold",
            key,
            lambda: self.client.put_object_legal_hold(
                Bucket=self.bucket, Key=key, VersionId=version_id, LegalHold={"Status": status}
            ),
        )


def open_archive(
    endpoint: str,
    bucket: str,
    access_key: str,
    secret_key: str,
    region: str = "us-east-1",
    retry: RetryPolicy | None = None,
    retention_days: float = DEFAULT_RETENTION_DAYS,
    connections: int = 10,
) -> S3Archive:
    """Opens the archive in `bucket` at an S3 endpoint (path-style addressing, which SeaweedFS needs).

    Takes plain values so a job can carry them in its JSON config. botocore retries each request
    a few times itself; `retry` then waits out longer outages. `connections`: the client's
    connection pool (botocore's default, 10); a caller with more threads reading at once needs as
    many, or each read past the tenth opens a connection and drops it.
    """
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
            max_pool_connections=connections,
        ),
    )
    signed = SignedS3(endpoint, bucket, access_key, secret_key, region, connections)
    return S3Archive(client, bucket, retry=retry, retention_days=retention_days, signed=signed)


def ensure_bucket(client: Any, bucket: str) -> None:
    """Creates `bucket` with Object Lock (which turns versioning on) unless it exists; checks the lock.

    Raises:
        ArchiveError: the bucket cannot be created, or exists without Object Lock (WORM writes
            would then be refused or, worse, unprotected).
    """
    from botocore.exceptions import ClientError

    try:
        client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
        log.info("archive: created bucket %s with Object Lock", bucket)
    except ClientError as exc:
        if _error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise ArchiveError(f"cannot create bucket {bucket}: {exc}") from exc
    try:
        lock = client.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    except ClientError as exc:
        lock = {"error": str(exc)}
    if lock.get("ObjectLockEnabled") != "Enabled":
        raise ArchiveError(
            f"bucket {bucket} exists without Object Lock ({lock}); use a bucket created with "
            "ObjectLockEnabledForBucket=True (a new AUDITLOG_BUCKET)"
        )
