"""An outside tlog client reads every log `auditlog serve` serves from the real stack, and checks it.

tests/interop/test_tlog_client.py runs the client (tests/interop/go/tlogclient: filippo.io/torchwood
v0.6.1) against the query app over an in-memory archive. Here the tiles, bundles and checkpoints
were put in a SeaweedFS Object Lock bucket by the archive writer (tests/integration/tamper_store.py
build: two logs of 300 events in 50-event blocks), and `auditlog serve` runs as its own process on
it and on embedded chDB. The client must read every entry of both logs, authenticated against the
signed checkpoint; after a second version with one flipped bit is written over a bundle or a hash
tile (what a write that skips the archive's write-once rule leaves in a versioned bucket), it must
refuse the log.

    .venv/bin/python -m pytest tests/integration/test_tlog_client_stack.py
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipelines.io.archive import log_prefix
from pipelines.io.s3 import s3_client
from tests.integration.served import ServedDeployment, serving
from tests.interop.gobuild import build_go
from transforms.merkle import leaf_hash, root

pytestmark = pytest.mark.integration

LOGS = ("audit.events.p0", "audit.events.p1")
EVENTS_PER_LOG = 300


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_go(tmp_path_factory.mktemp("tlogclient"), "./tlogclient", "tlogclient")


@pytest.fixture(scope="module")
def served(stack, stack_settings, tmp_path_factory) -> Iterator[ServedDeployment]:
    with serving(stack_settings, tmp_path_factory.mktemp("served-tlog"), "tlog-client", admin=("--admin",)) as d:
        yield d


def read_log(client: Path, served: ServedDeployment, log_id: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(client),
            "-url",
            f"{served.base}/logs/{log_id}/",
            "-vkey",
            served.settings.verifier_key_file.read_text().strip(),
            "-origin",
            f"{served.settings.origin}/{log_id}",
            "-key",
            served.keys["admin"],
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_torchwood_reads_every_entry_of_each_log_on_seaweedfs_against_its_checkpoint(
    client: Path, served: ServedDeployment
) -> None:
    for log_id in LOGS:
        run = read_log(client, served, log_id)
        assert run.returncode == 0, run.stderr
        got = json.loads(run.stdout)
        entries = [base64.b64decode(e) for e in got["entries"]]
        assert got["size"] == len(entries) == EVENTS_PER_LOG
        assert base64.b64decode(got["root"]) == root([leaf_hash(e) for e in entries])
        assert {json.loads(e)["tenant_id"] for e in entries} <= {"t_1000", "t_1001", "t_1002"}


@pytest.mark.parametrize("path", ["tile/entries/000", "tile/entries/001.p/44", "tile/0/000", "tile/1/000.p/1"])
def test_a_flipped_bit_in_a_bundle_or_tile_on_seaweedfs_makes_the_client_refuse_the_log(
    client: Path, served: ServedDeployment, path: str
) -> None:
    log_id = LOGS[1]
    s3 = s3_client(served.settings)
    bucket, key = served.settings.bucket, log_prefix(log_id) + path
    versions = [v for v in s3.list_object_versions(Bucket=bucket, Prefix=key)["Versions"] if v["Key"] == key]
    assert len(versions) == 1, f"{key} is not one object of one version here: {versions}"
    original = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0x01
    # The server caches hash tiles (memory and disk): it is restarted without them, as after a reboot.
    restart_with(served, lambda: s3.put_object(Bucket=bucket, Key=key, Body=bytes(flipped)))
    try:
        run = read_log(client, served, log_id)
        assert run.returncode == 1, f"the client accepted a log with a flipped bit in {path}"
        # the client finds the entry or tile that does not hash to the signed root, or the server
        # refuses to hand out a checkpoint its tiles do not give (409)
        assert "tlogclient:" in run.stderr and (
            "mismatch" in run.stderr or "inconsistent" in run.stderr or "409" in run.stderr
        ), run.stderr
        # The locked original is still there, and the other log is untouched.
        first = s3.get_object(Bucket=bucket, Key=key, VersionId=versions[0]["VersionId"])["Body"].read()
        assert first == original
        assert read_log(client, served, LOGS[0]).returncode == 0
    finally:  # the original bytes as the newest version again, for the next case
        restart_with(served, lambda: s3.put_object(Bucket=bucket, Key=key, Body=original))
    assert read_log(client, served, log_id).returncode == 0


def restart_with(served: ServedDeployment, change: Callable[[], object]) -> None:
    served.stop()
    change()
    for cached in (served.settings.home / "api").glob("tiles.sqlite*"):
        cached.unlink()
    served.start()
