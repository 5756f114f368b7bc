"""The jars the local stack runs from: the Kafka broker and the Flink Kafka connector.

They come from Maven Central through `infra/pom.xml`, once, into `settings.jars_dir`:

    jars_dir/kafka/   the broker's classpath (kafka_2.13 4.x and its runtime dependencies)
    jars_dir/flink/   flink-sql-connector-kafka, handed to `flink run`

`ensure_jars` runs Maven only when a jar is missing or the pom changed since the last fetch, so it
is instant afterwards. From a shell::

    python -m infra.jars          # fetch if needed, then print the paths
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from infra.daemons import StackError
from schemas.settings import Settings

POM = Path(__file__).resolve().with_name("pom.xml")
STAMP_NAME = ".pom.sha256"
KAFKA_MAIN_JAR_GLOB = "kafka_2.13-*.jar"
CONNECTOR_JAR_GLOB = "flink-sql-connector-kafka-*.jar"


@dataclass(frozen=True)
class Jars:
    """Where the fetched jars are."""

    kafka_dir: Path
    flink_dir: Path

    @property
    def kafka_classpath(self) -> str:
        """A `java -cp` value for the broker (the JVM expands the wildcard)."""
        return str(self.kafka_dir / "*")

    @property
    def kafka_connector(self) -> Path:
        """The Flink SQL Kafka connector jar; raises StackError if it has not been fetched."""
        found = sorted(self.flink_dir.glob(CONNECTOR_JAR_GLOB))
        if not found:
            raise StackError(f"the Flink Kafka connector is not in {self.flink_dir}: {fetch_hint()}")
        return found[-1]


def jar_dirs(settings: Settings) -> Jars:
    return Jars(kafka_dir=settings.jars_dir / "kafka", flink_dir=settings.jars_dir / "flink")


def jars_present(settings: Settings) -> bool:
    """True if both jar folders are filled from the current pom."""
    jars = jar_dirs(settings)
    stamp = settings.jars_dir / STAMP_NAME
    return (
        stamp.is_file()
        and stamp.read_text().strip() == _pom_digest()
        and any(jars.kafka_dir.glob(KAFKA_MAIN_JAR_GLOB))
        and any(jars.flink_dir.glob(CONNECTOR_JAR_GLOB))
    )


def ensure_jars(settings: Settings, say: Callable[[str], None] = print) -> Jars:
    """Fetches the jars with Maven unless they are already there; returns their folders.

    Raises StackError if Maven is missing or the fetch fails (with Maven's last output).
    """
    jars = jar_dirs(settings)
    if jars_present(settings):
        return jars
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(
            f"the Kafka and Flink connector jars are missing from {settings.jars_dir} and Maven "
            f"(mvn) is not installed: install it (apt-get install maven) and run {fetch_hint()}, "
            f"or set AUDITLOG_JARS to a folder that holds them"
        )
    say(f"fetching jars from Maven Central into {settings.jars_dir} (once) ...")
    # Old versions would stay on the broker's classpath beside the new ones.
    for folder in (jars.kafka_dir, jars.flink_dir):
        shutil.rmtree(folder, ignore_errors=True)
    settings.jars_dir.mkdir(parents=True, exist_ok=True)
    command = [mvn, "-B", "-f", str(POM), f"-Djars.dir={settings.jars_dir}", "generate-resources"]
    output: list[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line.rstrip())
            # Show each jar as it arrives (not the poms and plugins Maven also downloads).
            if line.startswith("Downloaded from") and ".jar " in line:
                say("  downloaded " + line.split("/")[-1].split(" ")[0])
            elif "[ERROR]" in line:
                say("  " + line.rstrip())
    if proc.returncode != 0:
        last = "\n".join(output[-30:])
        raise StackError(f"fetching jars failed ({' '.join(command)} exited {proc.returncode}):\n{last}")
    (settings.jars_dir / STAMP_NAME).write_text(_pom_digest() + "\n")
    count = len(list(jars.kafka_dir.glob("*.jar"))) + len(list(jars.flink_dir.glob("*.jar")))
    say(f"fetched {count} jars")
    return jars


def fetch_hint() -> str:
    """The command that fetches the jars, for error messages."""
    return f"`python -m infra.jars` (it runs `mvn -f {POM} -Djars.dir=<jars dir> generate-resources`)"


def _pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def main() -> int:
    settings = Settings.from_env()
    try:
        jars = ensure_jars(settings, say=lambda line: print(line, file=sys.stderr))
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"kafka classpath: {jars.kafka_classpath}")
    print(f"flink kafka connector: {jars.kafka_connector}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
