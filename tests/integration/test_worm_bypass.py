"""The WORM archive has no side door: only the S3 gateway can reach what it stores.

S3 refuses to delete a COMPLIANCE-locked version, but SeaweedFS keeps that version as a filer
entry (`/buckets/<bucket>/<key>.versions/v_<id>`) whose bytes live in volume-server needles
(fids), in a collection named after the bucket that the master can drop. Each test here puts a
locked object through S3, attacks it on one of those layers as someone on the stack's host
*without* the stack's keys would — every HTTP method that could remove, replace or unlock it,
and the gRPC calls that do the same — and then finds the locked version still there through
S3, with the same bytes, the same lock and no delete marker.

The attacks are real: on a stack without `infra/stack.py`'s SeaweedFS security (JWT-signed
volume writes, mutual TLS on every gRPC port, no master or filer HTTP API) they delete the
object, and these tests fail.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import socket
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from botocore.exceptions import ClientError

from infra.seaweedfs import seaweedfs_ports, seaweedfs_security_dir
from infra.stack import Stack
from pipelines.io.s3 import s3_client
from schemas.settings import Settings

pytestmark = pytest.mark.integration

HTTP_TIMEOUT_S = 5.0
GRPC_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Locked:
    """One COMPLIANCE-locked object version put through S3."""

    bucket: str
    key: str
    version: str
    body: bytes

    @property
    def object_path(self) -> str:
        return f"/buckets/{self.bucket}/{self.key}"

    @property
    def versions_dir(self) -> str:
        return f"{self.object_path}.versions"

    @property
    def version_name(self) -> str:
        return f"v_{self.version}"

    @property
    def version_path(self) -> str:
        return f"{self.versions_dir}/{self.version_name}"


@pytest.fixture
def locked(stack: Stack) -> Locked:
    s3 = s3_client(stack.settings)
    bucket = stack.settings.bucket
    key = f"it/bypass-{uuid.uuid4().hex}.json"
    body = json.dumps({"block": 0, "nonce": uuid.uuid4().hex}).encode()
    response = s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=body,
        IfNoneMatch="*",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
    )
    return Locked(bucket=bucket, key=key, version=str(response["VersionId"]), body=body)


def _assert_intact(settings: Settings, locked: Locked) -> None:
    """The locked version answers through S3 with its bytes and lock; nothing shadows it."""
    s3 = s3_client(settings)
    try:
        by_version = s3.get_object(Bucket=locked.bucket, Key=locked.key, VersionId=locked.version)
        latest = s3.get_object(Bucket=locked.bucket, Key=locked.key)
    except ClientError as exc:
        pytest.fail(f"the locked version {locked.key}@{locked.version} is gone through S3: {exc}")
    assert by_version["Body"].read() == locked.body, "the locked version's bytes were replaced"
    assert by_version["ObjectLockMode"] == "COMPLIANCE", "the locked version lost its lock"
    assert latest["Body"].read() == locked.body, "something else answers for the key now"
    versions = s3.list_object_versions(Bucket=locked.bucket, Prefix=locked.key)
    assert [v["VersionId"] for v in versions.get("Versions", [])] == [locked.version]
    assert not versions.get("DeleteMarkers"), "a delete marker hides the locked version"


# --------------------------------------------------------------------------- HTTP


@dataclass(frozen=True)
class Answer:
    what: str
    status: int | None  # None: nothing listens (connection refused)
    body: bytes = b""

    @property
    def accepted(self) -> bool:
        return self.status is not None and self.status < 400

    def __str__(self) -> str:
        return f"{self.what} -> {self.status if self.status is not None else 'not listening'}"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=HTTP_TIMEOUT_S)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(HTTP_TIMEOUT_S)
        sock.connect(self._path)
        self.sock = sock


def _request(
    where: str | Path,
    method: str,
    target: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One HTTP request to `where` (host:port, or a Unix socket path) with no credentials."""
    what = f"{method} {where}{target}"
    if isinstance(where, Path):
        connection: http.client.HTTPConnection = _UnixConnection(str(where))
    else:
        connection = http.client.HTTPConnection(where, timeout=HTTP_TIMEOUT_S)
    try:
        connection.request(method, target, body=body, headers=headers or {})
        response = connection.getresponse()
        return Answer(what, response.status, response.read()[:4096])
    except (ConnectionRefusedError, FileNotFoundError):
        return Answer(what, None)
    finally:
        connection.close()


def _multipart(body: bytes) -> tuple[bytes, dict[str, str]]:
    boundary = uuid.uuid4().hex
    payload = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.json"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + body
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return payload, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _quote(path: str) -> str:
    return urllib.parse.quote(path)


def _filer_write_attacks(locked: Locked) -> Iterator[tuple[str, str, bytes | None, dict[str, str]]]:
    """(method, target, body, headers): every filer HTTP call that could remove, replace or unlock."""
    forged = b'{"block": 0, "forged": true}'
    form, form_headers = _multipart(forged)
    for path in (locked.version_path, locked.object_path, locked.versions_dir):
        target = _quote(path)
        yield "DELETE", target, None, {}
        yield "DELETE", f"{target}?recursive=true&ignoreRecursiveError=true", None, {}
        yield "PUT", target, forged, {"Content-Type": "application/octet-stream"}
        yield "POST", target, form, form_headers
        # Strip or rewrite the Object Lock attributes the S3 gateway keeps on the entry.
        yield "DELETE", f"{target}?tagging", None, {}
        yield (
            "PUT",
            f"{target}?tagging",
            None,
            {
                "Seaweed-X-Amz-Object-Lock-Mode": "GOVERNANCE",
                "Seaweed-X-Amz-Retention-Until-Date": "0",
            },
        )
    # Move the version out of the way, then out of the bucket.
    yield "POST", f"{_quote(locked.object_path)}.moved?mv.from={_quote(locked.version_path)}", None, {}
    yield "POST", f"/elsewhere-{uuid.uuid4().hex}?mv.from={_quote(locked.versions_dir)}", None, {}


def test_filer_http_cannot_delete_overwrite_or_unlock(stack: Stack, locked: Locked) -> None:
    settings = stack.settings
    filer = f"{settings.host}:{seaweedfs_ports(settings)['filer.port']}"
    doors: list[str | Path] = [filer]
    socket_path = settings.home / "s3" / "filer.sock"
    if socket_path.exists():
        doors.append(socket_path)

    answers = [
        _request(door, method, target, body, headers)
        for door in doors
        for method, target, body, headers in _filer_write_attacks(locked)
    ]

    accepted = [str(a) for a in answers if a.accepted]
    assert not accepted, "the filer's HTTP API accepted:\n" + "\n".join(accepted)
    _assert_intact(settings, locked)


def test_filer_http_does_not_reveal_metadata_or_fids(stack: Stack, locked: Locked) -> None:
    settings = stack.settings
    filer = f"{settings.host}:{seaweedfs_ports(settings)['filer.port']}"
    json_accept = {"Accept": "application/json"}

    answers = [
        _request(filer, "GET", f"{_quote(locked.version_path)}?metadata=true", headers=json_accept),
        _request(filer, "GET", f"{_quote(locked.versions_dir)}/", headers=json_accept),
        _request(filer, "GET", f"/buckets/{locked.bucket}/", headers=json_accept),
    ]

    leaked = [str(a) for a in answers if a.accepted or locked.version_name.encode() in a.body]
    assert not leaked, "the filer's HTTP API shows the archive's metadata:\n" + "\n".join(leaked)


def test_volume_http_cannot_delete_or_overwrite_the_needles(stack: Stack, locked: Locked) -> None:
    settings = stack.settings
    fids = _fids(settings, locked)
    assert fids, "the locked version has no chunks on a volume server"
    volume = f"{settings.host}:{seaweedfs_ports(settings)['volume.port']}"
    forged = b'{"block": 0, "forged": true}'
    form, form_headers = _multipart(forged)

    answers = []
    for fid in fids:
        target = f"/{fid}"
        answers += [
            _request(volume, "DELETE", target),
            _request(volume, "DELETE", f"{target}?type=replicate"),
            _request(volume, "PUT", target, forged, {"Content-Type": "application/octet-stream"}),
            _request(volume, "POST", target, form, form_headers),
            _request(volume, "POST", f"{target}?type=replicate", form, form_headers),
        ]

    accepted = [str(a) for a in answers if a.accepted]
    assert not accepted, "the volume server's HTTP API accepted:\n" + "\n".join(accepted)
    _assert_intact(settings, locked)


def test_master_http_cannot_drop_the_bucket_collection(stack: Stack, locked: Locked) -> None:
    settings = stack.settings
    master = f"{settings.host}:{seaweedfs_ports(settings)['master.port']}"
    collection = _quote(locked.bucket)

    answers = [
        _request(master, "GET", f"/col/delete?collection={collection}"),
        _request(master, "POST", f"/col/delete?collection={collection}"),
        _request(master, "DELETE", f"/col/delete?collection={collection}"),
        # A write token for a fresh fid, and the fid space, are the master's to hand out.
        _request(master, "GET", f"/dir/assign?collection={collection}"),
        _request(master, "GET", f"/vol/grow?collection={collection}&count=1"),
    ]

    accepted = [str(a) for a in answers if a.accepted]
    assert not accepted, "the master's HTTP API accepted:\n" + "\n".join(accepted)
    _assert_intact(settings, locked)


# --------------------------------------------------------------------------- gRPC


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _pb(*fields: tuple[int, Any]) -> bytes:
    """A protobuf message from (field number, str | bytes | bool) pairs; enough for these requests."""
    out = bytearray()
    for number, value in fields:
        if isinstance(value, bool):
            out += _varint(number << 3) + _varint(int(value))
        else:
            data = value.encode() if isinstance(value, str) else value
            out += _varint(number << 3 | 2) + _varint(len(data)) + data
    return bytes(out)


def _pb_fields(data: bytes) -> list[tuple[int, Any]]:
    """(field number, int | bytes) pairs of a protobuf message, without its schema."""
    fields: list[tuple[int, Any]] = []
    i = 0

    def varint() -> int:
        nonlocal i
        result = shift = 0
        while True:
            byte = data[i]
            i += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return result

    while i < len(data):
        tag = varint()
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            fields.append((number, varint()))
        elif wire == 1:
            fields.append((number, data[i : i + 8]))
            i += 8
        elif wire == 2:
            length = varint()
            fields.append((number, data[i : i + length]))
            i += length
        elif wire == 5:
            fields.append((number, data[i : i + 4]))
            i += 4
        else:
            raise ValueError(f"unexpected wire type {wire}")
    return fields


def _unary(channel: grpc.Channel, method: str, request: bytes) -> bytes:
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    return bytes(call(request, timeout=GRPC_TIMEOUT_S))


def _stack_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    """The stack's own client certificate (the S3 gateway's side), or None if it has none."""
    folder = seaweedfs_security_dir(settings)
    files = [folder / name for name in ("ca.crt", "node.key", "node.crt")]
    if not all(path.exists() for path in files):
        return None
    root, key, chain = (path.read_bytes() for path in files)
    return grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=chain)


def _fids(settings: Settings, locked: Locked) -> list[str]:
    """The version's needle ids, asked of the filer as the stack itself (with its certificate).

    This is the insider's view, so that the volume-server attacks aim at the real needles even
    when the filer shows outsiders nothing.
    """
    address = f"{settings.host}:{seaweedfs_ports(settings)['filer.port.grpc']}"
    credentials = _stack_credentials(settings)
    channel = grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
    with channel:
        response = _unary(
            channel,
            "/filer_pb.SeaweedFiler/LookupDirectoryEntry",
            _pb((1, locked.versions_dir), (2, locked.version_name)),
        )
    entry = next(value for number, value in _pb_fields(response) if number == 1)
    chunks = [value for number, value in _pb_fields(entry) if number == 3]
    return [next(v for n, v in _pb_fields(chunk) if n == 1).decode() for chunk in chunks]


def _grpc_attacks(settings: Settings, locked: Locked, fids: list[str]) -> list[tuple[str, str, bytes]]:
    """(port name, method, request): a harmful (or, where none is needed, any) call per gRPC port."""
    return [
        (
            "filer.port.grpc",
            "/filer_pb.SeaweedFiler/DeleteEntry",
            _pb((1, locked.versions_dir), (2, locked.version_name), (4, True), (5, True)),
        ),
        ("volume.port.grpc", "/volume_server_pb.VolumeServer/BatchDelete", _pb(*((1, f) for f in fids), (2, True))),
        ("volume.port.grpc", "/volume_server_pb.VolumeServer/DeleteCollection", _pb((1, locked.bucket))),
        ("master.port.grpc", "/master_pb.Seaweed/CollectionDelete", _pb((1, locked.bucket))),
        ("s3.port.grpc", "/messaging_pb.SeaweedS3IamCache/ListPolicies", b""),
        ("admin.port.grpc", "/worker_pb.WorkerService/WorkerStream", b""),
    ]


def test_grpc_ports_refuse_callers_without_the_stack_certificate(stack: Stack, locked: Locked) -> None:
    settings = stack.settings
    ports = seaweedfs_ports(settings)
    fids = _fids(settings, locked)
    ca = seaweedfs_security_dir(settings) / "ca.crt"
    # A caller who trusts the stack's CA (it is no secret) but has no client certificate of it.
    no_client_cert = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes() if ca.exists() else None)

    answered = []
    for port_name, method, request in _grpc_attacks(settings, locked, fids):
        address = f"{settings.host}:{ports[port_name]}"
        for label, channel in (
            ("plaintext", grpc.insecure_channel(address)),
            ("TLS without client certificate", grpc.secure_channel(address, no_client_cert)),
        ):
            with channel:
                try:
                    _unary(channel, method, request)
                    answered.append(f"{label} {method} on {address} -> OK")
                except grpc.RpcError as exc:
                    code = exc.code()
                    # UNAVAILABLE: the connection failed (no listener, or the TLS handshake
                    # refused us). Any other code means the server parsed our call.
                    if code != grpc.StatusCode.UNAVAILABLE:
                        answered.append(f"{label} {method} on {address} -> {code.name}: {exc.details()}")

    assert not answered, "gRPC servers answered a caller without the stack's certificate:\n" + "\n".join(answered)
    _assert_intact(settings, locked)


def test_the_stack_certificate_still_reaches_the_filer(stack: Stack, locked: Locked) -> None:
    """The refusals above are authentication, not a dead port: the stack's own certificate works."""
    assert _stack_credentials(stack.settings) is not None, "the stack has no SeaweedFS client certificate"
    assert _fids(stack.settings, locked)
