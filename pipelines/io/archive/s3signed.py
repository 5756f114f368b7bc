"""The archive's GETs and locked PUTs, signed with AWS Signature Version 4 and sent on pooled connections.

Verify, rebuild and export read every block, bundle and checkpoint of a log: thousands of GETs a
second. Through boto3 each costs about 1.3 ms of CPU (its event hooks, request model, signer and
response parser), more than the bytes themselves; here the signing key is derived once a day, the
request is the few headers SigV4 needs, and the answer is the body. About 0.45 ms a GET. The
ingest job writes every block, bundle, tile and checkpoint once, from the TaskManager's one
Python interpreter, where botocore's per-call work held the GIL the sequencer needs: the
conditional, Object-Locked PUT goes the same way.

It answers as the boto3 client would: a botocore `ClientError` with the S3 error code and HTTP
status for an error response, botocore connection errors for a failed connection or a timeout, so
`S3Archive`'s retry, not-found and key-taken handling treat both paths alike. Listings use it too
(their XML read with ElementTree, where botocore's response parser cost ~150 µs a key); bucket
set-up, deletes and retention changes stay on boto3.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import threading
from typing import Any
from urllib.parse import quote, urlsplit

from pipelines.io.archive.errors import ArchiveError

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_ERROR_PART = re.compile(rb"<(Code|Message)>([^<]*)</\1>")


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _uri_encode(text: str, keep_slash: bool) -> str:
    return quote(text, safe="/~" if keep_slash else "~")


class SignedS3:
    """GETs and PUTs objects of `bucket` at an S3 `endpoint` (path-style addressing), SigV4-signed.

    Args:
        endpoint: the S3 endpoint URL (http or https).
        bucket, access_key, secret_key, region: as for the boto3 client.
        connections: connections kept open (as many as threads read at once).
        connect_timeout, read_timeout: seconds, as the boto3 client's.
    """

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        access_key: str,
        secret_key: str,
        region: str = "us-east-1",
        connections: int = 10,
        connect_timeout: float = 5,
        read_timeout: float = 60,
    ) -> None:
        import urllib3

        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"S3 endpoint {endpoint!r} is not an http(s) URL")
        # The Host header as it is sent and as botocore signs it: lowercase, no userinfo, no
        # default port, an IPv6 address in brackets.
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        if parts.port is not None and parts.port != {"http": 80, "https": 443}[parts.scheme]:
            host += f":{parts.port}"
        self._origin = f"{parts.scheme}://{host}"
        self._host = host
        self._path = parts.path.rstrip("/") + "/" + bucket + "/"
        self._access_key = access_key
        self._secret_key = secret_key
        self._region = region
        self._pool = urllib3.PoolManager(
            maxsize=connections,
            block=False,
            retries=False,
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
        )
        self._keys: tuple[str, bytes] | None = None  # (date, signing key of that date)
        self._lock = threading.Lock()

    def _signing_key(self, date: str) -> bytes:
        keys = self._keys
        if keys is None or keys[0] != date:
            with self._lock:
                key = _hmac(("AWS4" + self._secret_key).encode(), date)
                for part in (self._region, "s3", "aws4_request"):
                    key = _hmac(key, part)
                self._keys = keys = (date, key)
        return keys[1]

    def headers(
        self,
        key: str,
        version_id: str | None,
        now: dt.datetime,
        params: dict[str, str] | None = None,
        *,
        method: str = "GET",
        payload_sha256: str = EMPTY_SHA256,
        extra: dict[str, str] | None = None,
    ) -> tuple[str, dict[str, str]]:
        """The path and query, and the signed headers, of a request for `key` (at `version_id`) at time `now`.

        `params` are query parameters beside the version (a listing: `key` "" and `list-type`...).
        `payload_sha256` is the hex SHA-256 of the body; `extra` headers are sent and signed too.
        """
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        date = stamp[:8]
        path = _uri_encode(self._path + key, keep_slash=True)
        query_params = dict(params or {})
        if version_id:
            query_params["versionId"] = version_id
        query = "&".join(
            f"{_uri_encode(k, keep_slash=False)}={_uri_encode(v, keep_slash=False)}"
            for k, v in sorted(query_params.items())
        )
        headers = {**(extra or {}), "x-amz-content-sha256": payload_sha256, "x-amz-date": stamp}
        signed = sorted([("host", self._host), *((name.lower(), value.strip()) for name, value in headers.items())])
        names = ";".join(name for name, _ in signed)
        canonical = "\n".join(
            [method, path, query, "".join(f"{name}:{value}\n" for name, value in signed), names, payload_sha256]
        )
        scope = f"{date}/{self._region}/s3/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(date), to_sign.encode(), hashlib.sha256).hexdigest()
        headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self._access_key}/{scope}, SignedHeaders={names}, Signature={signature}"
        )
        return path + ("?" + query if query else ""), headers

    def get(self, key: str, version_id: str | None = None, params: dict[str, str] | None = None) -> bytes:
        """The bytes at `key` (its `version_id`, else the current version); errors as boto3 raises them.

        With `key` "" and `params`, the bucket's answer to that query (a listing's XML).
        """
        target, headers = self.headers(key, version_id, dt.datetime.now(dt.UTC), params)
        # The stored bytes as they are: a Content-Encoding the object was stored with is not undone.
        response = self._send("GET", target, headers, None)
        if response.status == 200:
            body: bytes = response.data
            return body
        raise _client_error(response, "GetObject")

    def put_locked(self, key: str, data: bytes, checksum: str, mode: str, retain_until: dt.datetime) -> str | None:
        """Writes `data` at `key` unless the key exists (If-None-Match), Object-Locked in `mode` until `retain_until`.

        `checksum` is the base64 SHA-256 of `data` (S3 checks it; it is also the signed payload
        hash). The lock date is sent to the second, as botocore sends it. Returns the new version
        id; errors as boto3 raises them (412 PreconditionFailed when the key exists).
        """
        digest = base64.b64decode(checksum, validate=True)
        if len(digest) != 32:
            raise ValueError(f"checksum {checksum!r} is not a base64 SHA-256")
        until = retain_until.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        extra = {
            "If-None-Match": "*",
            "x-amz-checksum-sha256": checksum,
            "x-amz-object-lock-mode": mode,
            "x-amz-object-lock-retain-until-date": until,
        }
        target, headers = self.headers(
            key, None, dt.datetime.now(dt.UTC), method="PUT", payload_sha256=digest.hex(), extra=extra
        )
        headers["Content-Length"] = str(len(data))
        response = self._send("PUT", target, headers, data)
        if response.status == 200:
            version: str | None = response.headers.get("x-amz-version-id")
            return version
        raise _client_error(response, "PutObject")

    def _send(self, method: str, target: str, headers: dict[str, str], body: bytes | None) -> Any:
        from botocore.exceptions import EndpointConnectionError
        from urllib3.exceptions import HTTPError, NewConnectionError, ProtocolError, TimeoutError

        url = self._origin + target
        try:
            return self._pool.request(
                method, url, body=body, headers=headers, preload_content=True, decode_content=False
            )
        except (NewConnectionError, TimeoutError, ProtocolError) as exc:  # worth retrying
            raise EndpointConnectionError(endpoint_url=url, error=exc) from exc
        except HTTPError as exc:  # TLS, a proxy, a malformed answer: not a passing outage
            raise ArchiveError(f"S3 {method} {url} failed: {exc}") from exc


def _client_error(response: Any, operation: str) -> Exception:
    """The botocore ClientError an S3 error response makes: its Code and Message, and the HTTP status."""
    from botocore.exceptions import ClientError

    found = dict(_ERROR_PART.findall(response.data or b""))
    code = found.get(b"Code", str(response.status).encode()).decode(errors="replace")
    message = found.get(b"Message", b"").decode(errors="replace")
    error: Exception = ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": response.status}},
        operation,
    )
    return error
