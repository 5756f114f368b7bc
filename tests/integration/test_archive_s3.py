"""The WORM archive on real SeaweedFS: conditional puts, Object Lock, listing, and an S3 outage.

Only the S3 service of the test stack is needed; it is started here (or found running if the
session's full `stack` fixture came first) and stopped at the end of the session::

    .venv/bin/python -m pytest tests/integration/test_archive_s3.py
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from infra.seaweedfs import VOLUME_SLOTS
from infra.stack import Stack
from pipelines.io.archive import (
    ArchiveConflictError,
    ArchiveLockedError,
    PutResult,
    RetryPolicy,
    S3Archive,
    block_key,
    ensure_bucket,
    lock_until,
    open_archive,
)
from pipelines.io.s3 import s3_client
from schemas.settings import REPO_ROOT, Settings

pytestmark = pytest.mark.integration

OUTAGE_S = 8.0


@pytest.fixture(scope="session")
def s3_stack(stack_settings: Settings) -> Iterator[Stack]:
    """The test stack with (at least) S3 running; S3 is stopped when the session ends."""
    lines: list[str] = []
    stack = Stack(stack_settings, say=lines.append)
    try:
        stack.up(["s3"])
        yield stack
    finally:
        stack.down(["s3"])
        print("\n".join(["", "s3 log:", *lines]))


@pytest.fixture
def archive(s3_stack: Stack) -> S3Archive:
    s = s3_stack.settings
    return open_archive(s.s3_endpoint, s.bucket, s.s3_access_key, s.s3_secret_key, retention_days=1)


@pytest.fixture
def log_id() -> str:
    """A fresh log per test: locked objects can never be cleaned up, so tests must not share keys."""
    return f"it-{uuid.uuid4().hex[:12]}"


def test_ensure_bucket_is_idempotent_and_checks_object_lock(s3_stack: Stack) -> None:
    client = s3_client(s3_stack.settings)

    ensure_bucket(client, s3_stack.settings.bucket)  # exists: no error
    fresh = f"it-{uuid.uuid4().hex[:12]}"
    ensure_bucket(client, fresh)

    lock = client.get_object_lock_configuration(Bucket=fresh)["ObjectLockConfiguration"]
    assert lock["ObjectLockEnabled"] == "Enabled"


def test_more_buckets_than_the_disk_has_free_gigabytes_each_take_a_write(s3_stack: Stack) -> None:
    """Every bucket written to holds a volume of its own until it is dropped (never, under a lock).

    Left to count its volume slots from free disk / 1 GB at start, `weed mini` refused the write
    to the 21st bucket on a disk with 20 GB free ("We encountered an internal error"), which
    stopped CI halfway through the suite. One more bucket than that count must still be written.
    """
    client = s3_client(s3_stack.settings)
    free_gb = shutil.disk_usage(s3_stack.settings.home / "s3" / "data").free // 2**30
    count = min(free_gb + 3, VOLUME_SLOTS // 2)
    names = [f"it-slots-{uuid.uuid4().hex[:8]}-{i}" for i in range(count)]
    made: list[str] = []
    try:
        for name in names:
            client.create_bucket(Bucket=name)
            made.append(name)
            client.put_object(Bucket=name, Key="k", Body=b"one volume each")
        assert [client.get_object(Bucket=n, Key="k")["Body"].read() for n in (names[0], names[-1])] == [
            b"one volume each"
        ] * 2
    finally:
        for name in made:
            client.delete_object(Bucket=name, Key="k")
            client.delete_bucket(Bucket=name)


def test_put_get_and_list(archive: S3Archive, log_id: str) -> None:
    until = lock_until(days=1)
    for index in (2, 0, 1):
        archive.put_block(log_id, index, f"block {index}\n".encode(), until)
    archive.put_checkpoint(log_id, 300, "note 300\n", until)
    archive.put_checkpoint(log_id, 150, "note 150\n", until)

    assert archive.get_block(log_id, 1) == b"block 1\n"
    assert archive.list_blocks(log_id) == [0, 1, 2]
    assert archive.list_checkpoints(log_id) == [150, 300]
    assert archive.latest_checkpoint(log_id) == (300, "note 300\n")
    assert log_id in archive.list_logs()
    assert archive.latest_checkpoint(f"{log_id}-none") is None


def test_listing_pages_through_continuation_tokens(s3_stack: Stack, log_id: str) -> None:
    s = s3_stack.settings
    archive = open_archive(s.s3_endpoint, s.bucket, s.s3_access_key, s.s3_secret_key, retention_days=1)
    for index in range(7):
        archive.put_block(log_id, index, b"x")
    assert archive.signed is not None
    real_get = archive.signed.get
    pages: dict[str, list[int]] = {"list": [], "versions": []}

    def small_pages(key: str, version_id: str | None = None, params: dict[str, str] | None = None) -> bytes:
        if not params:
            return real_get(key, version_id, params)
        data = real_get(key, version_id, {**params, "max-keys": "3"})
        pages["versions" if "versions" in params else "list"].append(data.count(b"<Key>"))
        return data

    archive.signed.get = small_pages  # type: ignore[method-assign]
    assert archive.list_blocks(log_id) == list(range(7))
    assert pages["list"] == [3, 3, 1]
    assert sorted(archive.versions_under(f"logs/{log_id}/")) == [block_key(log_id, i) for i in range(7)]
    assert len(pages["versions"]) >= 3 and sum(pages["versions"]) >= 7


def test_identical_re_put_succeeds(archive: S3Archive, log_id: str) -> None:
    first = archive.put_block(log_id, 0, b"the block")
    again = archive.put_block(log_id, 0, b"the block")

    assert first.created and not again.created and first.sha256 == again.sha256
    assert len(archive.object_versions(block_key(log_id, 0))) == 1


def test_different_bytes_raise_conflict_and_the_original_stays(archive: S3Archive, log_id: str) -> None:
    original = archive.put_block(log_id, 5, b"original")

    with pytest.raises(ArchiveConflictError) as excinfo:
        archive.put_block(log_id, 5, b"forged")

    assert excinfo.value.key == block_key(log_id, 5)
    assert excinfo.value.archived_sha256 == original.sha256
    assert archive.get_block(log_id, 5) == b"original"
    assert len(archive.object_versions(block_key(log_id, 5))) == 1

    archive.put_checkpoint(log_id, 10, "note A\n")
    with pytest.raises(ArchiveConflictError):
        archive.put_checkpoint(log_id, 10, "note B\n")
    assert archive.get_checkpoint(log_id, 10) == "note A\n"


def test_objects_are_locked_in_compliance_mode_until_retain_until(archive: S3Archive, log_id: str) -> None:
    until = lock_until(days=2).replace(microsecond=0)
    result = archive.put_block(log_id, 0, b"locked", until)

    retention = archive.retention(result.key)
    assert retention is not None and retention.mode == "COMPLIANCE"
    assert retention.retain_until == until
    head = archive.client.head_object(Bucket=archive.bucket, Key=result.key, ChecksumMode="ENABLED")
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ChecksumSHA256"]  # the server checked and kept the SHA-256 we sent

    with pytest.raises(ArchiveLockedError):
        archive.delete_version(result.key, str(result.version_id))
    with pytest.raises(ClientError) as excinfo:
        archive.client.delete_object(
            Bucket=archive.bucket, Key=result.key, VersionId=result.version_id, BypassGovernanceRetention=True
        )
    assert excinfo.value.response["Error"]["Code"] == "AccessDenied"
    assert archive.get_block(log_id, 0) == b"locked"


def test_a_write_without_if_none_match_shows_up_as_a_second_version(archive: S3Archive, log_id: str) -> None:
    key = archive.put_block(log_id, 0, b"original").key

    archive.client.put_object(Bucket=archive.bucket, Key=key, Body=b"tampered")  # what an attacker can do

    versions = archive.object_versions(key)
    assert len(versions) == 2 and versions[0].is_latest and not versions[1].is_latest
    assert archive.get(key, versions[1].version_id) == b"original"
    assert archive.retention(key, versions[1].version_id) is not None


def test_a_put_waits_out_an_s3_outage_and_completes(
    s3_stack: Stack, log_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    s = s3_stack.settings
    archive = open_archive(
        s.s3_endpoint,
        s.bucket,
        s.s3_access_key,
        s.s3_secret_key,
        retry=RetryPolicy(deadline_s=180, initial_backoff_s=0.2, max_backoff_s=1.0),
        retention_days=1,
    )
    archive.put_block(log_id, 0, b"before the outage")
    results: list[PutResult | BaseException] = []

    def put() -> None:
        try:
            results.append(archive.put_block(log_id, 1, b"during the outage"))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertions below
            results.append(exc)

    caplog.set_level(logging.WARNING, logger="pipelines.io.archive")
    s3_stack.down(["s3"])
    writer = threading.Thread(target=put, name="archive-put")
    try:
        writer.start()
        time.sleep(OUTAGE_S)
        assert writer.is_alive() and not results, f"the put should still be waiting: {results}"
    finally:
        restarted = time.monotonic()
        s3_stack.up(["s3"])
    writer.join(timeout=120)

    assert not writer.is_alive()
    assert len(results) == 1 and isinstance(results[0], PutResult), results
    assert results[0].created
    retries = [r.getMessage() for r in caplog.records if block_key(log_id, 1) in r.getMessage()]
    assert len(retries) >= 3, retries
    assert archive.get_block(log_id, 1) == b"during the outage"
    assert archive.get_block(log_id, 0) == b"before the outage"  # the data survived the restart
    assert archive.list_blocks(log_id) == [0, 1]
    print(f"put completed {time.monotonic() - restarted:.1f} s after S3 was restarted; {len(retries)} retries")


def test_put_latency(archive: S3Archive, log_id: str) -> None:
    """Not a benchmark, a sanity bound: a 64 KiB locked put takes milliseconds on loopback."""
    body = bytes(range(256)) * 256
    archive.put_block(log_id, 0, body)  # warm the connection
    took = []
    for index in range(1, 21):
        began = time.perf_counter()
        archive.put_block(log_id, index, body)
        took.append(time.perf_counter() - began)
    took.sort()
    print(f"64 KiB locked put: median {took[10] * 1000:.1f} ms, max {took[-1] * 1000:.1f} ms")
    assert took[10] < 1.0


def test_signed_gets_and_listings_read_what_boto3_does(s3_stack: Stack, archive: S3Archive) -> None:
    """`SignedS3` (how the archive reads and lists) against boto3 on the same keys, versions and errors."""
    from pipelines.io.archive import ArchiveNotFoundError
    from pipelines.io.archive.s3signed import SignedS3

    s = s3_stack.settings
    assert archive.signed is not None
    base = f"signed-get/{uuid.uuid4().hex}/"
    keys = [base + "plain", base + "with space+plus=eq&amp", base + "ünïcode/ü~tilde", base + "tile/entries/000.p/7"]
    for i, key in enumerate(keys):
        archive.client.put_object(Bucket=archive.bucket, Key=key, Body=f"first {i}".encode())
        archive.client.put_object(Bucket=archive.bucket, Key=key, Body=f"second {i}".encode())
    for i, key in enumerate(keys):
        versions = archive.client.list_object_versions(Bucket=archive.bucket, Prefix=key)["Versions"]
        for version in versions:
            want = archive.client.get_object(Bucket=archive.bucket, Key=key, VersionId=version["VersionId"])
            assert archive.get(key, version["VersionId"]) == want["Body"].read()
        assert archive.get(key) == f"second {i}".encode()
    with pytest.raises(ArchiveNotFoundError):
        archive.get(base + "missing")
    # Stored with a Content-Encoding it does not have: read as stored, neither decoded nor retried.
    archive.client.put_object(Bucket=archive.bucket, Key=base + "gz", Body=b"not gzip", ContentEncoding="gzip")
    assert archive.get(base + "gz") == b"not gzip"
    # Keys XML 1.0 cannot carry, as anyone with PutObject could write: listed (URL-encoded), not a failure.
    odd_base = f"signed-get-odd/{uuid.uuid4().hex}/"
    odd = [odd_base + "\x01ctl", odd_base + "cr\rlf\n", odd_base + "plus+ sp"]
    for key in odd:
        archive.client.put_object(Bucket=archive.bucket, Key=key, Body=b"odd")
    assert sorted(archive.keys(odd_base)) == sorted(odd)
    # (SeaweedFS's version listing ignores encoding-type and sends U+FFFD for \x01: boto3 sees the same)
    assert archive.versions_under(odd_base) == S3Archive(archive.client, archive.bucket).versions_under(odd_base)
    for version in archive.object_versions(base + "gz"):
        archive.client.delete_object(Bucket=archive.bucket, Key=base + "gz", VersionId=version.version_id)
    archive.client.delete_object(Bucket=archive.bucket, Key=keys[0])  # a delete marker on top
    by_boto3 = S3Archive(archive.client, archive.bucket)  # no reader: every call through boto3
    listed = archive.versions_under(base)
    assert listed == by_boto3.versions_under(base) and len(listed) == len(keys)
    assert listed[keys[0]][0].is_delete_marker and listed[keys[1]][0].etag.startswith('"')
    assert sorted(archive.keys(base)) == sorted(by_boto3.keys(base)) == sorted(keys[1:])
    assert archive.list_logs() == by_boto3.list_logs()
    wrong = SignedS3(s.s3_endpoint, archive.bucket, s.s3_access_key, s.s3_secret_key + "x")
    with pytest.raises(ClientError) as refused:
        wrong.get(keys[0])
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_signed_puts_lock_as_boto3_puts_do_and_a_wrong_checksum_is_refused(archive: S3Archive, log_id: str) -> None:
    """Writes go through `SignedS3.put_locked`: the same lock and checksum as boto3's put, and S3 checks the bytes."""
    import base64
    import hashlib

    from pipelines.io.archive.locks import LOCK_MODE

    assert archive.signed is not None
    until = lock_until(days=1).replace(microsecond=0)
    by_boto3 = S3Archive(archive.client, archive.bucket)  # no signer: every call through boto3
    ours = archive.put_block(log_id, 0, b"signed put", until)
    theirs = by_boto3.put_block(log_id, 1, b"boto3 put", until)
    for result in (ours, theirs):
        assert result.created and result.version_id
        assert archive.object_versions(result.key)[0].version_id == result.version_id
        retention = archive.retention(result.key)
        assert retention is not None and (retention.mode, retention.retain_until) == (LOCK_MODE, until)
    assert by_boto3.put_block(log_id, 0, b"signed put").created is False  # the key was taken: same bytes
    with pytest.raises(ArchiveConflictError):
        archive.put_block(log_id, 1, b"other bytes")

    wrong = base64.b64encode(hashlib.sha256(b"other bytes").digest()).decode()
    with pytest.raises(ClientError) as refused:
        archive.signed.put_locked(block_key(log_id, 2), b"these bytes", wrong, LOCK_MODE, until)
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400, refused.value.response
    assert block_key(log_id, 2) not in archive.keys(block_key(log_id, 2))


def test_tiles_migrate_publishes_an_old_archive_on_seaweedfs_verified_before_and_after(
    s3_stack: Stack, tmp_path: Path
) -> None:
    """`auditlog tiles migrate`, the command, on a WORM bucket that holds logs written before tiles.

    The logs are made by the ingest job's own code, and copied without their tiles (each block's
    entries in its object, as before tiles) into a fresh Object Lock bucket. The command must
    publish exactly the tiles and bundles the job would have, verify each log before and after,
    and do nothing the second time; `auditlog verify`'s archive check then reads them from S3.
    """
    from pipelines.archive_history import check_archive_log
    from pipelines.io.archive import log_prefix
    from pipelines.io.archive.testing import InMemoryArchive
    from tests.synthetic import ORIGIN, build_logs
    from tests.unit.test_archive_tiles import tile_objects, without_tiles

    whole = InMemoryArchive()
    logs = build_logs(whole, None, events=700, logs=2, block_size=90)
    settings = s3_stack.settings.replace(home=tmp_path, bucket=f"it-migrate-{uuid.uuid4().hex[:8]}", origin=ORIGIN)
    ensure_bucket(s3_client(settings), settings.bucket)
    s3 = open_archive(
        settings.s3_endpoint, settings.bucket, settings.s3_access_key, settings.s3_secret_key, retention_days=1
    )
    for log_id in logs.log_ids:
        bare = without_tiles(whole, log_id)
        for key in bare.keys(log_prefix(log_id)):
            s3.put_immutable(key, bare.get(key), lock_until(1))
        assert s3.keys(log_prefix(log_id) + "tile/") == []
    settings.verifier_key_file.parent.mkdir(parents=True, exist_ok=True)
    settings.verifier_key_file.write_text(logs.signer.verifier().encode())
    env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(REPO_ROOT)}

    def auditlog(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "runners.cli", *args],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )

    assert auditlog("tiles", "status").returncode == 1  # logs behind their tiles
    migrated = auditlog("tiles", "migrate", "--quiet")
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert migrated.stdout.count("verified before and after") == 2, migrated.stdout

    for log_id in logs.log_ids:
        assert tile_objects(s3, log_id) == tile_objects(whole, log_id)  # type: ignore[arg-type]
        checked = check_archive_log(s3, log_id, logs.signer.verifier(), f"{ORIGIN}/{log_id}")
        assert checked.findings == [] and checked.tiles_checked > 0
    assert auditlog("tiles", "status").returncode == 0
    again = auditlog("tiles", "migrate", "--quiet")
    assert again.returncode == 0 and len(re.findall(r"\b0 block\(s\) published", again.stdout)) == 2, again.stdout
