"""An outside tlog client reads every log from `auditlog serve`'s tlog-tiles endpoints and checks it.

The client is tests/interop/go/tlogclient: filippo.io/torchwood v0.6.1's TileFetcher and
Client.Entries, golang.org/x/mod/sumdb/note for the checkpoint. It fetches `/logs/<log>/checkpoint`,
opens it with the deployment's verifier key, and reads every entry, each authenticated through the
hash tiles against the signed root. The served app is the real one (tests/query_app.py: uvicorn on
loopback over an in-process archive whose logs the ingest job's own code wrote), so a tamper case
can flip one byte of one stored tile or bundle and the client must refuse the log.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.io.archive import log_prefix
from tests.interop.gobuild import build_go
from tests.query_app import ORIGIN, ServedApp, served_app
from transforms.merkle import leaf_hash, root

EVENTS = 700  # two logs of 350: a full tile and bundle, and partial ones, at each


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_go(tmp_path_factory.mktemp("tlogclient"), "./tlogclient", "tlogclient")


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApp]:
    with served_app(
        tmp_path_factory.mktemp("served"), events=EVENTS, admin={"admin": True}, reader={"tenant_id": "t_1000"}
    ) as served:
        yield served


def read_log(client: Path, app: ServedApp, log_id: str, key: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(client),
            "-url",
            f"{app.base}/logs/{log_id}/",
            "-vkey",
            app.signer.verifier().encode(),
            "-origin",
            f"{ORIGIN}/{log_id}",
            "-key",
            key,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


def archived_entries(app: ServedApp, log_id: str) -> list[bytes]:
    archive = app.services.archive
    out: list[bytes] = []
    for index in archive.list_blocks(log_id):
        out += archive.read_block(log_id, index)[1]
    return out


def test_torchwood_reads_every_entry_of_every_log_and_checks_it_against_the_checkpoint(
    client: Path, app: ServedApp
) -> None:
    for log_id in app.services.archive.list_logs():
        run = read_log(client, app, log_id, app.keys["admin"])
        assert run.returncode == 0, run.stderr
        got = json.loads(run.stdout)
        entries = [base64.b64decode(e) for e in got["entries"]]
        assert entries == archived_entries(app, log_id)
        assert got["size"] == len(entries) == EVENTS // 2
        assert base64.b64decode(got["root"]) == root([leaf_hash(e) for e in entries])


@pytest.mark.parametrize(
    "path", ["tile/0/000", "tile/0/001.p/94", "tile/1/000.p/1", "tile/entries/000", "tile/entries/001.p/94"]
)
def test_a_flipped_byte_in_any_tile_or_bundle_makes_the_client_refuse_the_log(
    client: Path, app: ServedApp, path: str
) -> None:
    log_id = app.services.archive.list_logs()[0]
    assert read_log(client, app, log_id, app.keys["admin"]).returncode == 0  # the head is checked and kept
    archive = app.services.archive
    key = log_prefix(log_id) + path
    original = archive.get(key)
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0x01
    archive.overwrite_unconditionally(key, bytes(flipped))
    app.services.prover.tiles.clear()
    try:
        run = read_log(client, app, log_id, app.keys["admin"])
        assert run.returncode == 1, f"the client accepted a log with a flipped byte in {path}"
        assert "tlogclient:" in run.stderr
    finally:
        archive.overwrite_unconditionally(key, original)
        app.services.prover.tiles.clear()
    assert read_log(client, app, log_id, app.keys["admin"]).returncode == 0


def test_entry_bundles_need_an_admin_key_and_hash_tiles_any_reader(client: Path, app: ServedApp) -> None:
    log_id = app.services.archive.list_logs()[0]
    run = read_log(client, app, log_id, app.keys["reader"])
    assert run.returncode == 1 and "403" in run.stderr
    status, _, headers = app.get(f"/logs/{log_id}/tile/0/000", app.keys["reader"])
    assert status == 200 and headers["cache-control"] == "max-age=31536000, immutable"
    status, _, headers = app.get(f"/logs/{log_id}/tile/0/001.p/94", app.keys["reader"])
    assert status == 200 and headers["cache-control"] == "max-age=60"
    status, body, headers = app.get(f"/logs/{log_id}/checkpoint", app.keys["reader"])
    assert status == 200 and headers["cache-control"] == "no-cache"
    assert body.decode().startswith(f"{ORIGIN}/{log_id}\n")
    assert app.get(f"/logs/{log_id}/checkpoint")[0] == 401


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("tile/0/x000/001", 400),  # not canonical
        ("tile/0/001.p/256", 400),
        ("tile/64/000", 400),
        ("tile/0/002", 404),  # past the tree
        ("tile/entries/005.p/3", 404),
    ],
)
def test_a_path_that_names_no_published_tile_is_a_clear_error(app: ServedApp, path: str, status: int) -> None:
    log_id = app.services.archive.list_logs()[0]
    got, body, _ = app.get(f"/logs/{log_id}/{path}", app.keys["admin"])
    assert got == status, body
    assert body["error"]
