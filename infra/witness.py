"""The local witness: litewitness (filippo.io/torchwood v0.6.1) and the ssh-agent holding its key.

A witness (C2SP tlog-witness) cosigns a checkpoint only if it is consistent with the last one it
cosigned for that origin, so a log that shows two histories, or rolls back, is refused by it.
`auditlog stack up` runs one locally; an outside witness is configured with AUDITLOG_WITNESSES
(schemas/settings.py) instead. Everything lives under `home/witness/`::

    home/witness/witness.key(.pub)   the witness's Ed25519 key (ssh-keygen, 0600), made once
    home/witness/witness.vkey        its cosignature/v1 verifier key, name+keyid+base64(0x04 ‖ key)
    home/witness/agent.sock          the dedicated ssh-agent litewitness signs through
    home/witness/litewitness.db      litewitness's SQLite: known logs, their keys and last sizes
    home/witness/log/                both daemons' output

The binaries come from `make witness` (go install into .local/bin); `litewitness_bin()` finds them
there or on PATH. Logs are made known to the witness with `witnessctl add-log` and `add-key`
(`register_log`), which the publisher does for the local witness when it meets a new log.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.daemons import Daemon, PortUse, StackError, port_open
from schemas.settings import REPO_ROOT, Settings
from transforms.cosignature import CosignatureVerifier

TORCHWOOD_VERSION = "v0.6.1"
BIN_DIR = REPO_ROOT / ".local" / "bin"
KEY_COMMENT = "auditlog-witness"


def _tool(name: str) -> str:
    local = BIN_DIR / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which(name)
    if found:
        return found
    raise StackError(
        f"witness: {name} is not installed; run `make witness` (go install "
        f"filippo.io/torchwood/cmd/{name}@{TORCHWOOD_VERSION} into {BIN_DIR})"
    )


def litewitness_bin() -> str:
    return _tool("litewitness")


def witnessctl_bin() -> str:
    return _tool("witnessctl")


def _ssh_tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        raise StackError(f"witness: {name} is missing; install Debian's openssh-client (make tools)")
    return found


def witness_dir(settings: Settings) -> Path:
    return settings.home / "witness"


def db_path(settings: Settings) -> Path:
    return witness_dir(settings) / "litewitness.db"


def agent_socket(settings: Settings) -> Path:
    return witness_dir(settings) / "agent.sock"


def key_file(settings: Settings) -> Path:
    return witness_dir(settings) / "witness.key"


def ssh_public_key(pub_line: str) -> bytes:
    """The raw 32-byte Ed25519 key of an `ssh-ed25519 BASE64 comment` line."""
    parts = pub_line.split()
    if len(parts) < 2 or parts[0] != "ssh-ed25519":
        raise StackError(f"witness: {pub_line[:40]!r} is not an ssh-ed25519 public key")
    blob = base64.b64decode(parts[1])
    # SSH wire format: string "ssh-ed25519", string key (each a 4-byte length, then bytes).
    n = int.from_bytes(blob[:4], "big")
    m = int.from_bytes(blob[4 + n : 8 + n], "big")
    key = blob[8 + n : 8 + n + m]
    if blob[4 : 4 + n] != b"ssh-ed25519" or len(key) != 32:
        raise StackError("witness: malformed ssh-ed25519 public key")
    return key


def ensure_key(settings: Settings) -> tuple[str, str]:
    """Makes the witness key once; returns (SSH SHA256 fingerprint, cosignature/v1 verifier key)."""
    key = key_file(settings)
    key.parent.mkdir(parents=True, exist_ok=True)
    if not key.exists():
        subprocess.run(
            [_ssh_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", KEY_COMMENT, "-f", str(key)],
            check=True,
            capture_output=True,
        )
    key.chmod(0o600)
    pub_line = Path(str(key) + ".pub").read_text()
    listed = subprocess.run(
        [_ssh_tool("ssh-keygen"), "-l", "-E", "sha256", "-f", str(key) + ".pub"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    fingerprint = listed[1]
    vkey = CosignatureVerifier.from_public(settings.local_witness_name, ssh_public_key(pub_line)).encode()
    vkey_file = settings.local_witness_vkey_file
    if not vkey_file.exists() or vkey_file.read_text().strip() != vkey:
        vkey_file.write_text(vkey + "\n")
    return fingerprint, vkey


def register_log(settings: Settings, origin: str, log_vkey: str) -> bool:
    """Makes `origin` known to the local witness with the log's verifier key; True if it was new.

    What the operator of any witness does once per log (`witnessctl add-log` and `add-key`).
    """
    db = db_path(settings)
    ctl = witnessctl_bin()
    listed = subprocess.run([ctl, "list-logs", "-db", str(db)], capture_output=True, text=True, timeout=30)
    if listed.returncode != 0:
        raise StackError(f"witness: witnessctl list-logs failed: {listed.stderr.strip()}")

    known = {}
    for line in listed.stdout.splitlines():
        if line.strip():
            row = json.loads(line)
            known[row["origin"]] = [k for k in (row.get("keys") or []) if k]
    if origin in known and log_vkey in known[origin]:
        return False
    steps = []
    if origin not in known:
        steps.append([ctl, "add-log", "-db", str(db), "-origin", origin])
    steps.append([ctl, "add-key", "-db", str(db), "-origin", origin, "-key", log_vkey])
    for argv in steps:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise StackError(f"witness: {' '.join(argv[1:2])} {origin} failed: {done.stderr.strip()}")
    return True


def local_registrar(settings: Settings, say: Callable[[str], None] | None = None) -> Callable[[Any, str, str], bool]:
    """A `register` for pipelines.witnessing's Publisher: adds a log to the local witness only.

    An outside witness's operator adds the log (origin and verifier key) on their side.
    """
    local_url = settings.local_witness_url.rstrip("/")

    def register(witness: Any, origin: str, log_vkey: str) -> bool:
        if witness.url != local_url:
            return False
        added = register_log(settings, origin, log_vkey)
        if added:
            (say or logging.getLogger(__name__).info)(f"witness: made {origin} known to the local witness")
        return added

    return register


@dataclass
class WitnessService:
    """The `witness` service of infra.stack.Stack: an ssh-agent, then litewitness signing through it.

    Duck-typed like infra.stack's services (daemons, prepare, command, healthy, ...).
    """

    settings: Settings
    say: Callable[[str], None]

    service = "witness"
    restart_together = True  # litewitness needs the agent it started with, holding its key

    @property
    def home(self) -> Path:
        return witness_dir(self.settings)

    @property
    def run_dir(self) -> Path:
        return self.settings.home / "run"

    @property
    def log_dir(self) -> Path:
        return self.home / "log"

    def _daemon(self, name: str, ports: tuple[PortUse, ...] = ()) -> Daemon:
        log = self.log_dir / f"{name}.log"
        return Daemon(name, self.settings.home, self.settings.host, self.run_dir, log, log, ports)

    def daemons(self) -> list[Daemon]:
        port = PortUse(self.settings.witness_port, "witness_port (AUDITLOG_WITNESS_PORT)")
        return [self._daemon("witness-ssh-agent"), self._daemon("witness", (port,))]

    def known_daemons(self) -> list[Daemon]:
        return self.daemons()

    def needs_java(self) -> bool:
        return False

    def prepare(self, jars: Any) -> None:
        litewitness_bin(), witnessctl_bin(), _ssh_tool("ssh-agent"), _ssh_tool("ssh-add")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.home.chmod(0o700)
        ensure_key(self.settings)

    def command(self, daemon: Daemon) -> tuple[list[str], dict[str, str]]:
        sock = agent_socket(self.settings)
        env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "SSH_AGENT_PID")}
        if daemon.name == "witness-ssh-agent":
            sock.unlink(missing_ok=True)  # left by an agent that was killed
            return [_ssh_tool("ssh-agent"), "-D", "-a", str(sock)], env
        # The agent was started just before: load the key into it, then run litewitness.
        self._load_key(sock, env)
        fingerprint, _ = ensure_key(self.settings)
        argv = [
            litewitness_bin(),
            "-name",
            self.settings.local_witness_name,
            "-db",
            str(db_path(self.settings)),
            "-ssh-agent",
            str(sock),
            "-key",
            fingerprint,
            "-listen",
            f"{self.settings.host}:{self.settings.witness_port}",
        ]
        return argv, env

    def _load_key(self, sock: Path, env: dict[str, str]) -> None:
        deadline = time.monotonic() + 10
        while not sock.exists():
            if time.monotonic() > deadline:
                raise StackError(f"witness: ssh-agent made no socket at {sock}\n{self.daemons()[0].log_tail()}")
            time.sleep(0.05)
        added = subprocess.run(
            [_ssh_tool("ssh-add"), "-q", str(key_file(self.settings))],
            env={**env, "SSH_AUTH_SOCK": str(sock)},
            capture_output=True,
            text=True,
            timeout=30,
        )
        if added.returncode != 0:
            raise StackError(f"witness: ssh-add failed: {added.stderr.strip()}")

    def address(self, daemon: Daemon) -> str:
        if daemon.name == "witness-ssh-agent":
            return str(agent_socket(self.settings))
        return self.settings.local_witness_url

    def healthy(self) -> bool:
        if not port_open(self.settings.host, self.settings.witness_port):
            return False
        # An empty add-checkpoint is a 400 from litewitness: it answers HTTP.
        request = urllib.request.Request(f"{self.settings.local_witness_url}/add-checkpoint", data=b"", method="POST")
        try:
            urllib.request.urlopen(request, timeout=2)
        except urllib.error.HTTPError as exc:
            return exc.code == 400
        except OSError:
            return False
        return True

    def finish(self) -> None:
        """Makes the logs already in the archive known to the witness, when the archive answers."""

    def detail(self, daemon: Daemon) -> str:
        if daemon.name == "witness" and self.settings.local_witness_vkey_file.is_file():
            return "vkey " + self.settings.local_witness_vkey_file.read_text().strip()
        return ""
