"""The jars the local stack runs from: the Kafka broker, the Flink Kafka connector, and ours.

The first two come from Maven Central through `infra/pom.xml`, once, into `settings.jars_dir`:

    jars_dir/kafka/       the broker's classpath (kafka_2.13 4.x and its runtime dependencies)
    jars_dir/flink/       flink-sql-connector-kafka, handed to `flink run`
    jars_dir/operators/   auditlog-flink-<digest>.jar: the ingest job's JVM operators
                          (pipelines/jvm/), compiled by javac against the Flink in the virtualenv

`ensure_jars` runs Maven only when a jar is missing or the pom changed since the last fetch, and
javac only when the operators' sources (or Flink's version) changed, so it is instant afterwards.
From a shell::

    python -m infra.jars          # fetch if needed, then print the paths
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from infra.daemons import StackError
from schemas.settings import Settings

POM = Path(__file__).resolve().with_name("pom.xml")
STAMP_NAME = ".pom.sha256"
KAFKA_MAIN_JAR_GLOB = "kafka_2.13-*.jar"
CONNECTOR_JAR_GLOB = "flink-sql-connector-kafka-*.jar"
OPERATOR_SOURCES = Path(__file__).resolve().parent.parent / "pipelines" / "jvm"


@dataclass(frozen=True)
class Jars:
    """Where the fetched jars are."""

    kafka_dir: Path
    flink_dir: Path
    operators: Path  # auditlog-flink-<digest>.jar (see build_operators)

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
    operators = settings.jars_dir / "operators" / f"auditlog-flink-{_operators_digest()[:16]}.jar"
    return Jars(kafka_dir=settings.jars_dir / "kafka", flink_dir=settings.jars_dir / "flink", operators=operators)


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
    ensure_operators(settings, say)
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


def ensure_operators(settings: Settings, say: Callable[[str], None] = print) -> Path:
    """The operators jar of the current sources, compiled first if it is not there (see build_operators)."""
    jar = jar_dirs(settings).operators
    return jar if jar.is_file() else build_operators(jar, say)


def build_operators(jar: Path, say: Callable[[str], None] = print) -> Path:
    """Compiles pipelines/jvm/**/*.java against the virtualenv's Flink into `jar` (seconds, once per change).

    Raises StackError if javac is missing or the sources do not compile (with javac's output).
    """
    javac = shutil.which("javac")
    if javac is None:
        raise StackError(
            "javac is not on PATH: the ingest job's JVM operators (pipelines/jvm) are compiled on first use; "
            "install a JDK (apt-get install openjdk-17-jdk-headless, or `make tools`)"
        )
    sources = sorted(OPERATOR_SOURCES.rglob("*.java"))
    lib = _flink_home()
    say(f"compiling the ingest job's JVM operators into {jar} ...")
    jar.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="auditlog-javac-") as classes:
        classpath = f"{lib / 'lib' / '*'}:{lib / 'opt' / '*'}"
        command = [javac, "--release", "17", "-nowarn", "-d", classes, "-cp", classpath, *map(str, sources)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise StackError(
                f"compiling {OPERATOR_SOURCES} failed (javac exited {done.returncode}):\n{done.stderr[-3000:]}"
            )
        partial = jar.with_suffix(".partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as out:
            out.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\nCreated-By: auditlog infra/jars.py\n")
            for path in sorted(Path(classes).rglob("*.class")):
                out.write(path, path.relative_to(classes).as_posix())
        partial.replace(jar)
    for stale in jar.parent.glob("auditlog-flink-*.jar"):
        if stale != jar:
            stale.unlink(missing_ok=True)
    return jar


def _flink_home() -> Path:
    """The folder of the virtualenv's PyFlink, whose lib/ and opt/ hold Flink's jars."""
    import pyflink

    return Path(pyflink.__file__).resolve().parent


def _operators_digest() -> str:
    """SHA-256 over the operators' sources and the Flink version they are compiled against."""
    digest = hashlib.sha256(version("apache-flink").encode())
    for path in sorted(OPERATOR_SOURCES.rglob("*.java")):
        digest.update(path.relative_to(OPERATOR_SOURCES).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


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
    print(f"auditlog flink operators: {jars.operators}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
