"""`stack up | down | status` on the test stack: idempotent, informative, and careful with ports."""

from __future__ import annotations

import argparse
import datetime as dt
import time
import uuid
from pathlib import Path

import pytest

from infra.stack import Stack, StackError
from pipelines.io.s3 import s3_client
from runners.commands import stack as stack_command

pytestmark = pytest.mark.integration


def _cli(argv: list[str], settings: object) -> int:
    parser = argparse.ArgumentParser(prog="auditlog")
    stack_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.handler(args, settings))


def test_up_twice_is_harmless(stack: Stack) -> None:
    before = {row.name: row.pid for row in stack.status()}

    started = time.monotonic()
    rows = stack.up()
    elapsed = time.monotonic() - started

    assert {row.name: row.pid for row in rows} == before
    assert rows and all(row.running and row.healthy for row in rows)
    assert elapsed < 15, f"a second `up` should only check, took {elapsed:.1f} s"


def test_status_lists_every_daemon_with_address_pid_and_log(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    rows = stack.status()

    names = [row.name for row in rows]
    taskmanagers = [f"flink-taskmanager-{i}" for i in range(1, stack.settings.flink_taskmanagers + 1)]
    assert names == ["kafka", "s3", "flink-jobmanager", *taskmanagers, "witness-ssh-agent", "witness"]
    assert all(row.log.is_relative_to(stack.settings.home) and row.log.is_file() for row in rows)

    assert _cli(["stack", "status"], stack.settings) == 0
    printed = capsys.readouterr().out
    for row in rows:
        assert row.name in printed and str(row.log) in printed and str(row.pid) in printed
    assert printed.count("  running  ") == len(rows)
    assert stack.settings.kafka_bootstrap in printed and stack.settings.s3_endpoint in printed


def test_a_second_stack_on_the_same_ports_says_which_port_and_setting(stack: Stack, tmp_path: Path) -> None:
    intruder = Stack(stack.settings.replace(home=tmp_path / "other-home"), say=lambda line: None)

    with pytest.raises(StackError) as excinfo:
        intruder.up(["kafka"])

    message = str(excinfo.value)
    assert f"port {stack.settings.kafka_port}" in message and "AUDITLOG_KAFKA_PORT" in message
    assert not any(row.running for row in intruder.status())
    assert stack.is_up(["kafka"])


def test_s3_restart_keeps_locked_objects(stack: Stack) -> None:
    s3 = s3_client(stack.settings)
    key = f"it/restart-{uuid.uuid4().hex}"
    until = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    s3.put_object(
        Bucket=stack.settings.bucket,
        Key=key,
        Body=b"kept",
        IfNoneMatch="*",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=until,
    )

    assert stack.down(["s3"]) == ["s3"]
    assert [row.state for row in stack.status(["s3"])] == ["stopped"]
    stack.up(["s3"])

    s3 = s3_client(stack.settings)
    assert s3.get_object(Bucket=stack.settings.bucket, Key=key)["Body"].read() == b"kept"
    assert s3.head_object(Bucket=stack.settings.bucket, Key=key)["ObjectLockMode"] == "COMPLIANCE"
    assert stack.is_up()  # every service but the optional ones (postgres: only when named)
