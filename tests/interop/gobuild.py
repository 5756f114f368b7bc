"""Builds a Go program of `tests/interop/go` for a test, never downloading (GOPROXY=off).

`make setup` fills the module cache (`go -C tests/interop/go mod download`); a test skips only
when no `go` binary is on PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

GO_DIR = Path(__file__).resolve().parent / "go"


def build_go(out_dir: Path, package: str = ".", name: str = "interop") -> Path:
    """Builds `package` (relative to tests/interop/go) into `out_dir`/`name`; fails the test if it does not build."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("no `go` binary on PATH: the Go interop programs (tests/interop/go) cannot be built")
    binary = out_dir / name
    env = {
        **os.environ,
        "GOFLAGS": "-mod=mod -buildvcs=false",
        "GOPROXY": "off",  # never download here; `go mod download` fills the cache at set-up
        "GOTOOLCHAIN": "local",
    }
    build = subprocess.run(
        [go, "build", "-o", str(binary), package], cwd=GO_DIR, env=env, capture_output=True, text=True, timeout=300
    )
    if build.returncode != 0:
        pytest.fail(
            f"building the Go program {package} failed; if modules are missing, fill the cache "
            f"with `go -C tests/interop/go mod download` (make setup):\n{build.stderr}"
        )
    return binary
