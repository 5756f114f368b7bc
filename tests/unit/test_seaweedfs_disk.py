"""`auditlog stack up s3` warns before SeaweedFS starts on a nearly full disk (infra/seaweedfs.py)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

import infra.seaweedfs
from infra.seaweedfs import LOW_DISK_BYTES, S3Service
from schemas.settings import Settings


def _free(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    real = shutil.disk_usage

    def usage(path: Any) -> Any:
        total, used, _ = real(path)
        return type(real(path))(total, used, free)

    monkeypatch.setattr(infra.seaweedfs.shutil, "disk_usage", usage)


def test_a_nearly_full_disk_is_named_before_seaweedfs_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    said: list[str] = []
    service = S3Service(Settings(home=tmp_path), said.append)
    _free(monkeypatch, 3 * 1024**3)
    service.prepare(None)
    [warning] = said
    assert warning.startswith("s3: warning: only 3.0 GiB free under ")
    assert str(service.data_dir) in warning and "No writable volumes" in warning and "AUDITLOG_HOME" in warning


def test_enough_free_space_says_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    said: list[str] = []
    service = S3Service(Settings(home=tmp_path), said.append)
    _free(monkeypatch, LOW_DISK_BYTES)
    service.prepare(None)
    assert said == []
