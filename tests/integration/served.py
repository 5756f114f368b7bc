"""A built deployment (SeaweedFS + chDB) with `auditlog serve` running on it, for the API and UI tests.

The deployment comes from tamper_store.py (600 events, two logs, signed); `auditlog serve` owns
its chDB directory, so tampering stops the server first and starts it again afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from schemas.settings import REPO_ROOT, Settings

SCRIPT = Path(__file__).with_name("tamper_store.py")
AUDITLOG = [sys.executable, "-m", "runners.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServedDeployment:
    def __init__(self, stack_settings: Settings, home: Path, name: str) -> None:
        bucket = "served-" + hashlib.sha256(name.encode()).hexdigest()[:16]
        self.settings = stack_settings.replace(home=home, bucket=bucket, origin="auditlog.test")
        self.port = free_port()
        self.env = {
            **os.environ,
            **self.settings.to_env(),
            "AUDITLOG_API_PORT": str(self.port),
            "PYTHONPATH": str(REPO_ROOT),
        }
        self.base = f"http://127.0.0.1:{self.port}"
        self.server: subprocess.Popen[bytes] | None = None
        self.keys: dict[str, str] = {}
        self.log_path = home / "serve.log"

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            list(args),
            env=self.env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{args} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
        return done

    def build(self) -> None:
        self.run(sys.executable, str(SCRIPT), "build")

    def tamper(self, case: str) -> None:
        self.run(sys.executable, str(SCRIPT), case)

    def api_key(self, *scope: str) -> str:
        out = self.run(*AUDITLOG, "apikeys", "create", *scope, "--label", "test").stdout
        match = re.search(r"alk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", out)
        assert match, out
        return match.group(0)

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.server = subprocess.Popen(
            [*AUDITLOG, "serve", "--no-kafka", "--no-index"],
            env=self.env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise AssertionError(
                    f"auditlog serve exited {self.server.returncode}:\n{self.log_path.read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(self.base + "/openapi.json", timeout=2):
                    return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.3)
        raise AssertionError(f"auditlog serve did not answer within 60 s:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.server is not None:
            self.server.terminate()
            try:
                self.server.wait(20)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait(10)
            self.server = None

    def get(self, path: str, key: str | None = None, **headers: str) -> tuple[int, Any, dict[str, str]]:
        request = urllib.request.Request(self.base + path)
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        for name, value in headers.items():
            request.add_header(name.replace("_", "-"), value)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                body = response.read()
                status, found = response.status, dict(response.headers)
        except urllib.error.HTTPError as exc:
            body, status, found = exc.read(), exc.code, dict(exc.headers)
        if found.get("content-type", "").startswith("application/json"):
            return status, json.loads(body), found
        return status, body, found


@contextlib.contextmanager
def serving(stack_settings: Settings, home: Path, name: str, **keys: tuple[str, ...]) -> Iterator[ServedDeployment]:
    """Builds a deployment, makes the named API keys (`admin=("--admin",)`), serves it, stops it after."""
    deployment = ServedDeployment(stack_settings, home, name)
    deployment.build()
    deployment.keys = {who: deployment.api_key(*scope) for who, scope in keys.items()}
    deployment.start()
    try:
        yield deployment
    finally:
        deployment.stop()
