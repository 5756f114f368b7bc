"""How `Stack.up` starts a service of several daemons (infra/stack.py), with sleeping Pythons.

The witness is such a service: an ssh-agent holding the witness key, then litewitness signing
through it. A failure while starting the second must not leave the first running, and a first
one that died must not come back without the second restarting on it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import infra.stack
from infra.daemons import Daemon, StackError
from infra.stack import Stack
from schemas.settings import Settings

SLEEP = [sys.executable, "-c", "import time; time.sleep(120)"]


@dataclass
class Pair:
    """A service of two daemons, `first` and `second`, that may refuse to start `second`."""

    settings: Settings
    say: object
    refuse_second: bool = False
    restart_together: bool = True
    commands: list[str] = field(default_factory=list)

    service = "pair"

    @property
    def home(self) -> Path:
        return self.settings.home / "pair"

    def daemons(self) -> list[Daemon]:
        run, log = self.settings.home / "run", self.settings.home / "pair.log"
        return [Daemon(name, self.settings.home, self.settings.host, run, log, log) for name in ("first", "second")]

    def known_daemons(self) -> list[Daemon]:
        return self.daemons()

    def needs_java(self) -> bool:
        return False

    def prepare(self, jars: object) -> None:
        self.home.mkdir(parents=True, exist_ok=True)

    def command(self, daemon: Daemon) -> tuple[list[str], dict[str, str]]:
        self.commands.append(daemon.name)
        if daemon.name == "second" and self.refuse_second:
            raise StackError("second: the key could not be loaded")
        return SLEEP, dict(os.environ)

    def healthy(self) -> bool:
        return all(d.pid() for d in self.daemons())

    def finish(self) -> None:
        pass

    def address(self, daemon: Daemon) -> str:
        return daemon.name

    def detail(self, daemon: Daemon) -> str:
        return ""


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.setattr(infra.stack, "SERVICES", ("pair",))
    monkeypatch.setattr(infra.stack, "OPTIONAL_SERVICES", ())
    lines: list[str] = []
    stack = Stack(Settings(home=tmp_path), say=lines.append)
    stack._services = {"pair": Pair(stack.settings, stack.say)}  # type: ignore[dict-item]
    yield stack, stack._services["pair"], lines
    stack.down(["pair"], timeout=5)


def test_a_daemon_that_fails_to_start_leaves_none_of_its_service_running(stack: tuple) -> None:
    stack_, pair, _ = stack
    pair.refuse_second = True
    with pytest.raises(StackError, match="key could not be loaded"):
        stack_.up(["pair"], timeout=10)
    assert [d.pid() for d in pair.daemons()] == [None, None]  # the first was stopped again


def test_a_missing_daemon_restarts_the_others_of_a_service_that_runs_together(stack: tuple) -> None:
    stack_, pair, lines = stack
    stack_.up(["pair"], timeout=10)
    first, second = pair.daemons()
    old_second = second.pid()
    assert first.stop(timeout=5)  # the agent died; litewitness still runs, on a key it lost
    stack_.up(["pair"], timeout=10)
    assert first.pid() and second.pid() and second.pid() != old_second
    assert "pair: stopped second to start it with the others" in lines


def test_other_services_only_start_what_is_missing(stack: tuple) -> None:
    stack_, pair, _ = stack
    pair.restart_together = False
    stack_.up(["pair"], timeout=10)
    first, second = pair.daemons()
    old_second = second.pid()
    assert first.stop(timeout=5)
    stack_.up(["pair"], timeout=10)
    assert first.pid() and second.pid() == old_second
