"""Flink on the test stack: a PyFlink job submitted with `flink run -py` runs on both TaskManagers."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest

from infra.stack import Stack

pytestmark = pytest.mark.integration

JOB_FILE = Path(__file__).with_name("square_job.py")
COUNT = 100


def _rest(stack: Stack, path: str) -> dict:  # type: ignore[type-arg]
    with urllib.request.urlopen(f"{stack.settings.flink_rest}{path}", timeout=10) as response:
        return json.load(response)  # type: ignore[no-any-return]


def test_cluster_has_the_configured_one_slot_taskmanagers(stack: Stack) -> None:
    overview = _rest(stack, "/overview")

    assert overview["taskmanagers"] == stack.settings.flink_taskmanagers
    assert overview["slots-total"] == stack.settings.flink_taskmanagers


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_pyflink_job_submitted_with_flink_run_finishes_with_right_output(
    stack: Stack, tmp_path: Path, mode: str
) -> None:
    output = tmp_path / "out"
    command = [
        str(stack.flink_bin()),
        "run",
        "-py",
        str(JOB_FILE),
        "--output",
        str(output),
        "--mode",
        mode,
        "--count",
        str(COUNT),
    ]

    run = subprocess.run(command, env=stack.flink_env(), capture_output=True, text=True, timeout=300, check=False)

    assert run.returncode == 0, f"flink run failed:\n{run.stdout}\n{run.stderr}"
    match = re.search(r"JobID ([0-9a-f]{32})", run.stdout)
    assert match, run.stdout
    jobs = {job["jid"]: job for job in _rest(stack, "/jobs/overview")["jobs"]}
    job = jobs[match.group(1)]
    assert job["state"] == "FINISHED"
    assert job["name"] == f"auditlog-it-square-{mode}"
    lines = [
        line
        for part in sorted(output.rglob("*"))
        if part.is_file() and not part.name.startswith(".")
        for line in part.read_text().splitlines()
    ]
    assert sorted(lines) == sorted(f"{n}:{n * n}" for n in range(1, COUNT + 1))
