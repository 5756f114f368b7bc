"""`auditlog stack up postgres`: the shared key store's database under the stack's home.

Starts only PostgreSQL (not the session's Kafka/S3/Flink stack), in a home of its own on the
test port offset, then uses it as the key store through settings, as every command does.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.sdk.localpg import PostgresUnavailable, find_postgres_bin
from infra.stack import Stack
from pipelines.io.keystore import PostgresKeyStore, open_keystore
from schemas.settings import Settings

pytestmark = pytest.mark.integration

MASTER = bytes(range(32))


@pytest.fixture
def home() -> Iterator[Path]:
    try:
        find_postgres_bin()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    # Not under pytest's 0700 temp root: as root the server runs as user postgres, which must reach it.
    folder = Path(tempfile.mkdtemp(prefix="auditlog-pg-stack-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_stack_up_postgres_serves_the_key_store_and_keeps_it_across_restarts(home: Path) -> None:
    offset = int(os.environ.get("AUDITLOG_TEST_PORT_OFFSET", 10000))
    settings = Settings.from_env(home=home, postgres_port=Settings().postgres_port + offset)
    settings = settings.replace(keystore_url=settings.local_keystore_url, master_key=base64.b64encode(MASTER).decode())
    lines: list[str] = []
    stack = Stack(settings, say=lines.append)
    try:
        rows = stack.up(["postgres"])
        assert [(r.service, r.running, r.healthy) for r in rows] == [("postgres", True, True)]
        assert rows[0].address == settings.local_keystore_url
        assert (home / "postgres" / "data" / "PG_VERSION").exists()
        assert "postgres" in {r.service for r in stack.status()}  # shown while it runs

        with open_keystore(settings) as store:
            assert isinstance(store, PostgresKeyStore)
            keys = store.get_or_create("t_1", "u_1")
            store.destroy("t_1", "u_2")

        assert stack.down() == ["postgres"]  # no names: stops it too
        assert "postgres" not in {r.service for r in stack.status()}  # optional: not listed when stopped
        stack.up(["postgres"])

        with open_keystore(settings) as store:
            assert store.get("t_1", "u_1").key_id == keys.key_id  # type: ignore[union-attr]
            assert store.is_erased("t_1", "u_2")
    finally:
        stack.down(["postgres"])
        print("\n".join(lines))
