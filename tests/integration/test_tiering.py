"""Tiered storage: the shipped server configuration moves month partitions older than 30 days to S3.

The embedded default passes no config file to chDB, so the tiering is a server setting
(infra/clickhouse/storage.xml + tiering.sql). This runs exactly those files in chDB loaded with
the config file, against the test stack's SeaweedFS (tiering_check.py, in a child process):

    .venv/bin/python -m pytest tests/integration/test_tiering.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from schemas.settings import REPO_ROOT

pytestmark = pytest.mark.integration


def test_partitions_older_than_30_days_move_to_the_s3_disk_and_stay_readable(stack, stack_settings, tmp_path):
    env = {**os.environ, **stack_settings.to_env(), "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("tiering_check.py")), str(tmp_path)],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["policy"] == "hot_and_cold"
    assert result["disks"][result["old_partition"]] == "s3"
    assert result["disks"][result["new_partition"]] == "default"
    assert result["events"] == ["evt_new", "evt_old"]
    assert result["s3_objects"] > 0
