"""`auditlog tiles migrate` and `status` (runners/commands/tiles.py) over an archive written before tiles.

The archive is the in-memory one, reached by the command through `archive_spec` (the only thing
replaced here); logs are built by the ingest job's own code and their tiles removed, as an archive
from before tiles has none.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import pipelines.ingest_config
from pipelines.archive_history import check_archive_log, register_memory_archive
from pipelines.io.archive import block_key
from pipelines.io.archive.testing import InMemoryArchive
from runners.cli import main
from schemas.settings import Settings
from tests.synthetic import ORIGIN, build_logs
from tests.unit.test_archive_tiles import tile_objects, without_tiles


@pytest.fixture
def deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[InMemoryArchive, object, InMemoryArchive]:
    whole = InMemoryArchive()
    logs = build_logs(whole, None, events=900, logs=2, block_size=80)
    bare = InMemoryArchive()
    for log_id in logs.log_ids:
        for key, versions in without_tiles(whole, log_id).objects.items():
            bare.objects[key] = versions
    spec = register_memory_archive(f"tiles-command-{id(bare)}", bare)
    monkeypatch.setattr(pipelines.ingest_config, "archive_spec", lambda settings: spec)
    settings = Settings().replace(home=tmp_path, origin=ORIGIN)
    settings.verifier_key_file.parent.mkdir(parents=True, exist_ok=True)
    settings.verifier_key_file.write_text(logs.signer.verifier().encode())
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    return bare, logs, whole


def test_migrate_publishes_exactly_the_tiles_the_job_would_have(deployment, capsys) -> None:
    bare, logs, whole = deployment
    assert main(["tiles", "status"]) == 1
    assert "leaves behind" in capsys.readouterr().out

    assert main(["tiles", "migrate", "--quiet"]) == 0

    out = capsys.readouterr().out
    assert out.count("verified before and after") == 2
    for log_id in logs.log_ids:
        assert tile_objects(bare, log_id) == tile_objects(whole, log_id)
        checked = check_archive_log(bare, log_id, logs.signer.verifier(), f"{ORIGIN}/{log_id}")
        assert checked.findings == [] and checked.tiles_checked > 0
    assert main(["tiles", "status"]) == 0
    assert main(["tiles", "migrate", "--quiet"]) == 0  # again: nothing to do
    assert "0 block(s) published" in capsys.readouterr().out


def test_migrate_refuses_a_log_that_does_not_verify(deployment, capsys) -> None:
    bare, logs, _ = deployment
    bad, good = logs.log_ids
    bare.overwrite_unconditionally(block_key(bad, 2), b"not a block")

    assert main(["tiles", "migrate", "--quiet"]) == 1

    out = capsys.readouterr().out
    assert f"{bad}: NOT migrated, the archive does not verify" in out
    assert f"{good}: verified before and after" in out
    assert tile_objects(bare, bad) == {}


def test_an_unknown_log_is_a_clear_error(deployment, capsys) -> None:
    assert main(["tiles", "migrate", "--log", "audit.events.p9"]) == 2
    assert "the archive has no log audit.events.p9" in capsys.readouterr().err
