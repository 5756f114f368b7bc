"""The wheel works on its own: installed outside the checkout, `auditlog demo` and `auditlog serve` run.

What `pip install .` does, minus the downloads: the wheel is built (`pip wheel --no-deps`) from a
copy of the sources that pyproject.toml packages, then installed with `--no-deps` into a new
virtualenv. Its dependencies come from this interpreter's site-packages through a `.pth` line;
`.pth` files are processed only in site directories, so the editable install of the checkout
that lives there stays inactive. The installed `auditlog` then runs from a temporary directory,
without PYTHONPATH or AUDITLOG_* variables, so a data file missing from the wheel (the retention
policy, the UI, the OpenAPI document) fails here rather than for a user.

Building the wheel needs setuptools>=77 in pip's isolated build environment (PyPI or pip's cache).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UI_FILES = tuple(f"api/query/ui/{p.name}" for p in sorted((REPO / "api" / "query" / "ui").iterdir()) if p.is_file())


def _run(args: list[str | Path], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{' '.join(map(str, args))} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def _copy_sources(dest: Path) -> None:
    """Copies what the build reads: pyproject.toml, the README and the packages it names."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = {p.split(".")[0].rstrip("*") for p in config["tool"]["setuptools"]["packages"]["find"]["include"]}
    dest.mkdir()
    for name in ("pyproject.toml", config["project"]["readme"]):
        shutil.copy2(REPO / name, dest / name)
    for package in sorted(packages):
        shutil.copytree(REPO / package, dest / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass(frozen=True)
class Installed:
    venv: Path  # the new virtualenv
    site: Path  # its site-packages, where the wheel went
    env: dict[str, str]  # the environment to run its `auditlog` in
    workdir: Path  # a working directory outside the repository


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("wheel")
    _copy_sources(base / "src")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", base / "dist", base / "src"], cwd=base)
    (wheel,) = (base / "dist").glob("auditlog-*.whl")

    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=base)
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=base).strip())
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "_auditlog_test_deps.pth").write_text("".join(f"{path}\n" for path in deps))
    _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel], cwd=base)

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("AUDITLOG_")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["AUDITLOG_HOME"] = str(base / "home")
    workdir = base / "elsewhere"
    workdir.mkdir()
    return Installed(venv, site, env, workdir)


def test_the_project_is_imported_from_the_wheel(installed: Installed) -> None:
    out = _run(
        [installed.venv / "bin" / "python", "-c", "import runners; print(runners.__file__)"],
        cwd=installed.workdir,
        env=installed.env,
    )
    where = Path(out.strip().splitlines()[-1]).resolve()
    assert where.is_relative_to(installed.venv.resolve()), (
        f"runners came from {where}, not the wheel in {installed.venv}"
    )


def test_the_wheel_holds_the_data_files(installed: Installed) -> None:
    for name in (
        "schemas/audit_event.schema.json",
        "schemas/clickhouse.sql",
        "schemas/retention.toml",
        "api/openapi.json",
        *UI_FILES,  # index.html, style.css and every ES module the page imports
        "infra/pom.xml",
    ):
        assert (installed.site / name).is_file(), f"{name} is not in the wheel"


def test_demo_runs_from_the_installed_package(installed: Installed) -> None:
    out = _run(
        [installed.venv / "bin" / "auditlog", "demo", "--events", "300"], cwd=installed.workdir, env=installed.env
    )
    assert "verified" in out, out


def test_serve_answers_the_ui_and_openapi_from_the_installed_package(installed: Installed) -> None:
    auditlog, env, workdir = installed.venv / "bin" / "auditlog", installed.env, installed.workdir
    keys = Path(env["AUDITLOG_HOME"]) / "keys"
    _run([auditlog, "keys", "generate", "--name", "auditlog.local", "--out", keys, "--force"], cwd=workdir, env=env)
    port = _free_port()
    log = workdir / "serve.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [auditlog, "serve", "--no-kafka", "--no-index", "--port", str(port)],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, f"auditlog serve exited {server.returncode}:\n{log.read_text()}"
            try:
                status, body = _get(f"{base}/openapi.json")
                break
            except OSError:
                assert time.monotonic() < deadline, f"auditlog serve did not answer in 120 s:\n{log.read_text()}"
                time.sleep(0.5)
        assert status == 200, log.read_text()
        assert json.loads(body) == json.loads((installed.site / "api" / "openapi.json").read_text())
        status, body = _get(f"{base}/")
        assert status == 200, log.read_text()
        assert b"<html" in body.lower()
        for name in UI_FILES:  # app.js imports the other modules by relative URL: each must be served
            status, _ = _get(f"{base}/ui/{Path(name).name}")
            assert status == 200, f"{name}: {status}\n{log.read_text()}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
