"""What every service of the local stack shares: the `Service` base, Java and config-file helpers.

infra/kafka.py, infra/seaweedfs.py and infra/flink.py subclass `Service`; infra/witness.py and
infra/postgres.py are duck-typed like it. infra/stack.py starts, checks and stops them.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from infra.daemons import Daemon, PortUse, StackError
from infra.jars import Jars
from schemas.settings import Settings

__all__ = ["Say", "Service", "java", "write_if_changed"]

Say = Callable[[str], None]


@dataclass
class Service:
    """One service: the daemons it runs, how to start them and how to tell it answers."""

    settings: Settings
    say: Say

    service = ""  # kafka, s3 or flink; set by each subclass
    # True when the daemons depend on each other, so that one missing restarts them all
    # (infra/witness.py: litewitness signs through the ssh-agent it was started with).
    restart_together = False

    @property
    def home(self) -> Path:
        return self.settings.home / self.service

    @property
    def run_dir(self) -> Path:
        return self.settings.home / "run"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_dir(self) -> Path:
        return self.home / "log"

    def daemon(self, name: str, log: Path, out: Path, ports: Sequence[PortUse] = ()) -> Daemon:
        return Daemon(
            name=name,
            home=self.settings.home,
            host=self.settings.host,
            run_dir=self.run_dir,
            log=log,
            out=out,
            ports=tuple(ports),
        )

    def daemons(self) -> list[Daemon]:
        """The daemons this service should run."""
        raise NotImplementedError

    def known_daemons(self) -> list[Daemon]:
        """`daemons()` plus any left from a run with other settings (e.g. more TaskManagers)."""
        return self.daemons()

    def needs_java(self) -> bool:
        return True

    def prepare(self, jars: Jars | None) -> None:
        """Writes config files and one-time state; called before any daemon starts."""

    def command(self, daemon: Daemon) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def address(self, daemon: Daemon) -> str:
        raise NotImplementedError

    def healthy(self) -> bool:
        raise NotImplementedError

    def finish(self) -> None:
        """Creates what the project expects to exist once the service answers (topics, bucket)."""

    def detail(self, daemon: Daemon) -> str:
        return ""


def java() -> str:
    java = shutil.which("java")
    if java is None:
        raise StackError("java is not on PATH: Kafka and Flink need Java 17 (apt-get install openjdk-17-jre-headless)")
    return java


def write_if_changed(path: Path, text: str, mode: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    if mode is not None:
        path.chmod(mode)
