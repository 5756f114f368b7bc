"""Flink for the local stack: a standalone cluster (one JobManager, `flink_taskmanagers` TaskManagers).

    home/flink/conf/                FLINK_CONF_DIR generated from settings; the pip package's own
                                    conf is never touched
    home/flink/lib/                 links to the package's lib/ jars and opt/flink-python
    home/flink/{log,run,tmp,web}    logs, Flink's pid files, temporary folders
    home/flink/{checkpoints,savepoints}

Started, checked and stopped by infra/stack.py (`Stack.flink_bin`, `Stack.flink_env` for jobs).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import sysconfig
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from infra.daemons import Daemon, PortUse, StackError
from infra.jars import Jars
from infra.service import Service, write_if_changed

__all__ = ["FlinkService", "flink_home"]

FLINK_JOBMANAGER_PROCESS_SIZE = "1024m"
FLINK_TASKMANAGER_PROCESS_SIZE = "1536m"
FLINK_RESTART_ATTEMPTS = 30
"""Restarts a job gets before it fails. Losing a TaskManager costs one to four (the failure, then
deployments to its slot until the JobManager notices it is gone, after two missed heartbeats of
FLINK_HEARTBEAT_INTERVAL_MS), so a job rides out several TaskManager losses, and a job that keeps
failing still fails, within minutes."""
FLINK_HEARTBEAT_INTERVAL_MS = 2000


class FlinkService(Service):
    service = "flink"

    @property
    def conf_dir(self) -> Path:
        return self.home / "conf"

    @property
    def pid_dir(self) -> Path:
        return self.home / "run"

    @property
    def lib_dir(self) -> Path:
        """The daemons' FLINK_LIB_DIR: the package's lib/ plus opt/flink-python (see `prepare`)."""
        return self.home / "lib"

    def _daemon(self, role: str) -> Daemon:
        name = f"flink-{role}"
        ports: list[PortUse] = []
        if role == "jobmanager":
            ports = [
                PortUse(self.settings.flink_port, "AUDITLOG_FLINK_PORT (Settings.flink_port)"),
                PortUse(self.settings.flink_rpc_port, "AUDITLOG_FLINK_RPC_PORT (Settings.flink_rpc_port)"),
            ]
        return self.daemon(name, log=self._log_file(name), out=self.log_dir / f"{name}.launch.log", ports=ports)

    def _log_file(self, name: str) -> Path:
        # flink-console.sh names it flink-<ident>-<entrypoint>-<n>-<hostname>.log; ident is ours.
        ident = name.removeprefix("flink-")
        found = sorted(self.log_dir.glob(f"flink-{ident}-*.log"), key=lambda p: p.stat().st_mtime)
        if found:
            return found[-1]
        return self.log_dir / f"flink-{ident}-{_flink_entrypoint(name)}-0-{os.uname().nodename}.log"

    def daemons(self) -> list[Daemon]:
        count = self.settings.flink_taskmanagers
        return [self._daemon("jobmanager"), *(self._daemon(f"taskmanager-{i}") for i in range(1, count + 1))]

    def known_daemons(self) -> list[Daemon]:
        wanted = self.daemons()
        names = {d.name for d in wanted}
        extra = sorted(p.stem for p in self.run_dir.glob("flink-taskmanager-*.pid") if p.stem not in names)
        return wanted + [self._daemon(name.removeprefix("flink-")) for name in extra]

    def address(self, daemon: Daemon) -> str:
        if daemon.name == "flink-jobmanager":
            return self.settings.flink_rest
        return f"one slot, registers with {self.settings.host}:{self.settings.flink_rpc_port}"

    def prepare(self, jars: Jars | None) -> None:
        for folder in (self.conf_dir, self.log_dir, self.pid_dir, self.home / "tmp", self.home / "web"):
            folder.mkdir(parents=True, exist_ok=True)
        package_conf = flink_home() / "conf"
        for source in package_conf.iterdir():
            if source.name.startswith(("log4j", "logback")):
                write_if_changed(self.conf_dir / source.name, source.read_text())
        write_if_changed(self.conf_dir / "config.yaml", self.config_yaml(package_conf / "config.yaml"))
        write_if_changed(self.conf_dir / "masters", f"{self.settings.host}:{self.settings.flink_port}\n")
        write_if_changed(self.conf_dir / "workers", f"{self.settings.host}\n" * self.settings.flink_taskmanagers)
        self._link_lib()

    def _link_lib(self) -> None:
        """Fills `lib_dir` with links to the package's lib/ jars and opt/flink-python.

        flink-python (and PemJa in it) must be on the daemons' own classpath. Left to `flink run
        -py`, which ships it with each job, every job loads PemJa in a new user-code class loader,
        and the second thread-mode job on a TaskManager fails: PemJa 0.5 cannot load libpython
        again from another class loader on Java 17 ("NoSuchFieldException: loadedLibraryNames",
        FLINK-37727). From the system class path it is loaded once per TaskManager.
        """
        home = flink_home()
        wanted = {jar.name: jar for jar in sorted((home / "lib").glob("*.jar"))}
        wanted.update({jar.name: jar for jar in (home / "opt").glob("flink-python*.jar")})
        self.lib_dir.mkdir(parents=True, exist_ok=True)
        for link in self.lib_dir.iterdir():
            if link.name not in wanted or not link.is_symlink() or link.resolve() != wanted[link.name].resolve():
                link.unlink()
        for name, jar in wanted.items():
            if not (self.lib_dir / name).is_symlink():
                (self.lib_dir / name).symlink_to(jar)

    def config_yaml(self, package_config: Path) -> str:
        """The cluster's config.yaml: the package's defaults (JVM flags for Java 17) plus ours."""
        import yaml

        s = self.settings
        base = _flatten(yaml.safe_load(package_config.read_text()) or {})
        python_path = os.pathsep.join(
            dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
        )
        ours: dict[str, Any] = {
            "jobmanager.rpc.address": s.host,
            "jobmanager.rpc.port": s.flink_rpc_port,
            "jobmanager.bind-host": s.host,
            "jobmanager.memory.process.size": FLINK_JOBMANAGER_PROCESS_SIZE,
            "taskmanager.host": s.host,
            "taskmanager.bind-host": s.host,
            "taskmanager.numberOfTaskSlots": 1,
            "taskmanager.memory.process.size": FLINK_TASKMANAGER_PROCESS_SIZE,
            "rest.address": s.host,
            "rest.bind-address": s.host,
            "rest.port": s.flink_port,
            # The web UI and REST API show metrics fetched at most this often (default 10 s).
            "metrics.fetcher.update-interval": 1000,
            "parallelism.default": 1,
            # A job that keeps failing must fail, not restart forever (the default with checkpoints).
            "restart-strategy.type": "fixed-delay",
            "restart-strategy.fixed-delay.attempts": FLINK_RESTART_ATTEMPTS,
            "restart-strategy.fixed-delay.delay": "2 s",
            # A dead TaskManager is noticed after two missed heartbeat RPCs: 4 s here, not 20 s.
            "heartbeat.interval": FLINK_HEARTBEAT_INTERVAL_MS,
            "execution.checkpointing.dir": (self.home / "checkpoints").as_uri(),
            "execution.checkpointing.savepoint-dir": (self.home / "savepoints").as_uri(),
            # Python workers: the venv's interpreter in process mode, its site-packages in thread
            # mode (PEMJA embeds the base interpreter). The mode itself is each job's choice.
            "python.executable": sys.executable,
            "python.client.executable": sys.executable,
            "python.pythonpath": python_path,
            "io.tmp.dirs": str(self.home / "tmp"),
            "web.tmpdir": str(self.home / "web"),
            "env.log.dir": str(self.log_dir),
            "env.pid.dir": str(self.pid_dir),
            "env.stdout-err.redirect-to-file": True,
        }
        tmp = str(self.home / "tmp")
        if not any(c.isspace() for c in tmp):  # Flink's scripts split these options on spaces
            ours["env.java.opts.all"] = f"{base.get('env.java.opts.all', '')} -Djava.io.tmpdir={tmp}".strip()
        merged = {**base, **ours}
        header = "# Generated by infra/flink.py from schemas/settings.py; edits are overwritten.\n"
        return header + "".join(f"{key}: {json.dumps(value)}\n" for key, value in merged.items())

    def env(self) -> dict[str, str]:
        """Environment for Flink's scripts: our conf, log and pid dirs, the venv first on PATH."""
        env = dict(os.environ)
        env["FLINK_CONF_DIR"] = str(self.conf_dir)
        env["FLINK_LOG_DIR"] = str(self.log_dir)
        env["FLINK_PID_DIR"] = str(self.pid_dir)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env["PYFLINK_CLIENT_EXECUTABLE"] = sys.executable
        env["TMPDIR"] = str(self.home / "tmp")
        env.pop("FLINK_HOME", None)
        return env

    def command(self, daemon: Daemon) -> tuple[list[str], dict[str, str]]:
        script = "jobmanager.sh" if daemon.name == "flink-jobmanager" else "taskmanager.sh"
        env = self.env()
        env["FLINK_IDENT_STRING"] = daemon.name.removeprefix("flink-")
        env["FLINK_LIB_DIR"] = str(self.lib_dir)
        # flink-console.sh numbers logs by the lines in a pid file; a fresh one keeps it at 0.
        flink_pid_file = f"flink-{env['FLINK_IDENT_STRING']}-{_flink_entrypoint(daemon.name)}.pid"
        (self.pid_dir / flink_pid_file).unlink(missing_ok=True)
        return ["bash", str(flink_home() / "bin" / script), "start-foreground"], env

    def overview(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"{self.settings.flink_rest}/overview", timeout=3) as response:
                overview = json.load(response)
        except (urllib.error.URLError, OSError, ValueError):
            return None
        return overview if isinstance(overview, dict) else None

    def healthy(self) -> bool:
        overview = self.overview()
        wanted = self.settings.flink_taskmanagers
        if overview is None:
            return False
        return bool(overview.get("taskmanagers", 0) >= wanted and overview.get("slots-total", 0) >= wanted)

    def detail(self, daemon: Daemon) -> str:
        if daemon.name != "flink-jobmanager":
            return ""
        overview = self.overview()
        if not overview:
            return ""
        return (
            f"{overview.get('taskmanagers')} taskmanagers, "
            f"{overview.get('slots-available')}/{overview.get('slots-total')} slots free, "
            f"{overview.get('jobs-running')} jobs running"
        )


def flink_home() -> Path:
    """The Flink distribution inside the apache-flink pip package."""
    spec = importlib.util.find_spec("pyflink")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("apache-flink is not installed in this Python; run `make install` (pip install apache-flink)")
    return Path(next(iter(spec.submodule_search_locations)))


def _flink_entrypoint(name: str) -> str:
    return "standalonesession" if name == "flink-jobmanager" else "taskexecutor"


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, path + "."))
        else:
            flat[path] = value
    return flat
