"""The real local stack for integration tests, started once per test session.

It runs through the same `infra.stack.Stack` as `auditlog stack up`, but in a temporary
AUDITLOG_HOME and on ports of its own, so a developer's stack on the default ports is untouched::

    .venv/bin/python -m pytest -m integration tests/integration

Set AUDITLOG_TEST_PORT_OFFSET (default 10000) to move every test port if one is taken.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.stack import Stack, StackError
from schemas.settings import STACK_PORTS, Settings

DEFAULT_PORT_OFFSET = 10000


def _test_settings(home: os.PathLike[str]) -> Settings:
    offset = int(os.environ.get("AUDITLOG_TEST_PORT_OFFSET", DEFAULT_PORT_OFFSET))
    # Overrides win over any AUDITLOG_* variable of the developer's shell; ports 19092, 18333, ...
    moved = Settings().with_ports_moved(offset)
    ports = {name: getattr(moved, name) for name in STACK_PORTS}
    return Settings.from_env(
        home=Path(home).resolve(),
        **ports,
        flink_taskmanagers=2,
        host="127.0.0.1",
        bucket="auditlog-it",
        topic="audit.events",
        dlq_topic="audit.events.dlq",
    )


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings of the test stack: a fresh home under pytest's temp dir, non-default ports."""
    return _test_settings(tmp_path_factory.mktemp("auditlog-home"))


@pytest.fixture(scope="session")
def stack(stack_settings: Settings) -> Iterator[Stack]:
    """The running stack (Kafka, S3, Flink); stopped at the end of the session, even on failure."""
    lines: list[str] = []
    running = Stack(stack_settings, say=lines.append)
    try:
        try:
            running.up()
        except StackError as exc:
            hint = ""
            if "already in use" in str(exc):
                hint = "\n(another test session may hold the test ports: set AUDITLOG_TEST_PORT_OFFSET)"
            pytest.fail(f"the test stack did not come up: {exc}{hint}", pytrace=False)
        yield running
    finally:
        running.down()
        print("\n".join(["", "stack log:", *lines]))
