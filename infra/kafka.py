"""Kafka for the local stack: one KRaft broker and controller in one JVM, and the project's topics.

    home/kafka/server.properties    generated from settings
    home/kafka/{data,log,tmp}       the KRaft log dir (formatted once), server.log

Started, checked and stopped by infra/stack.py; clients take their config from
pipelines/io/kafka.py (`kafka_client_config`), which does not import this module.
"""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from infra.daemons import Daemon, PortUse, StackError, port_open
from infra.jars import Jars, jar_dirs
from infra.service import Service, java, write_if_changed
from pipelines.io.kafka import kafka_client_config

__all__ = ["DLQ_TOPIC_PARTITIONS", "EVENT_TOPIC_PARTITIONS", "KAFKA_HEAP", "KafkaService"]

EVENT_TOPIC_PARTITIONS = 4
"""Partitions of `settings.topic`: one append-only log per partition, so this is the job's parallelism."""
DLQ_TOPIC_PARTITIONS = 1

KAFKA_HEAP = ("-Xms256m", "-Xmx512m")


class KafkaService(Service):
    service = "kafka"

    @property
    def properties(self) -> Path:
        return self.home / "server.properties"

    def daemons(self) -> list[Daemon]:
        s = self.settings
        return [
            self.daemon(
                "kafka",
                log=self.log_dir / "server.log",
                out=self.log_dir / "kafka.out",
                ports=[
                    PortUse(s.kafka_port, "AUDITLOG_KAFKA_PORT (Settings.kafka_port)"),
                    PortUse(
                        s.kafka_controller_port,
                        "AUDITLOG_KAFKA_CONTROLLER_PORT (Settings.kafka_controller_port)",
                    ),
                ],
            )
        ]

    def address(self, daemon: Daemon) -> str:
        return self.settings.kafka_bootstrap

    def prepare(self, jars: Jars | None) -> None:
        assert jars is not None
        s = self.settings
        for folder in (self.data_dir, self.log_dir, self.home / "tmp"):
            folder.mkdir(parents=True, exist_ok=True)
        listeners = f"PLAINTEXT://{s.host}:{s.kafka_port},CONTROLLER://{s.host}:{s.kafka_controller_port}"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{s.host}:{s.kafka_controller_port}",
            "listeners": listeners,
            "advertised.listeners": f"PLAINTEXT://{s.host}:{s.kafka_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            # Topics are created on purpose (Stack.finish): a typo must not make a new audit stream.
            "auto.create.topics.enable": "false",
            "num.partitions": str(EVENT_TOPIC_PARTITIONS),
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Flink's exactly-once KafkaSink uses 1 h transactions by default; the broker's cap is 15 min.
            "transaction.max.timeout.ms": "3600000",
            "group.initial.rebalance.delay.ms": "0",
            "log.retention.hours": "168",
        }
        write_if_changed(self.properties, "".join(f"{k}={v}\n" for k, v in props.items()))
        write_if_changed(self.home / "log4j2.properties", _KAFKA_LOG4J2.format(log_dir=self.log_dir))
        if not (self.data_dir / "meta.properties").exists():
            self._format_storage(jars)

    def _format_storage(self, jars: Jars) -> None:
        """Formats the KRaft log dir once, as `kafka-storage.sh format` does."""
        cluster_id = _kafka_cluster_id()
        self.say(f"kafka: formatting storage in {self.data_dir} (cluster id {cluster_id})")
        command = [
            java(),
            *KAFKA_HEAP,
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            "-cp",
            jars.kafka_classpath,
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            cluster_id,
            "--config",
            str(self.properties),
            "--ignore-formatted",
        ]
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise StackError(f"kafka: formatting storage failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")

    def command(self, daemon: Daemon) -> tuple[list[str], dict[str, str]]:
        jars = jar_dirs(self.settings)
        argv = [
            java(),
            *KAFKA_HEAP,
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Djava.io.tmpdir={self.home / 'tmp'}",
            f"-Dkafka.logs.dir={self.log_dir}",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            "-cp",
            jars.kafka_classpath,
            "kafka.Kafka",
            str(self.properties),
        ]
        return argv, dict(os.environ)

    def _admin(self) -> Any:

        from confluent_kafka.admin import AdminClient

        quiet = logging.getLogger("auditlog.stack.librdkafka")
        quiet.setLevel(logging.CRITICAL)
        return AdminClient(kafka_client_config(self.settings, logger=quiet))

    def healthy(self) -> bool:
        s = self.settings
        if not port_open(s.host, s.kafka_port):
            return False
        try:
            metadata = self._admin().list_topics(timeout=3)
        except Exception:  # noqa: BLE001 - any failure means "not answering yet"
            return False
        return bool(metadata.brokers)

    def finish(self) -> None:
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import NewTopic

        wanted = {
            self.settings.topic: EVENT_TOPIC_PARTITIONS,
            self.settings.dlq_topic: DLQ_TOPIC_PARTITIONS,
        }
        admin = self._admin()
        deadline = time.monotonic() + 30
        while True:
            existing = set(admin.list_topics(timeout=10).topics)
            missing = {name: n for name, n in wanted.items() if name not in existing}
            if not missing:
                return
            futures = admin.create_topics(
                [NewTopic(name, num_partitions=n, replication_factor=1) for name, n in missing.items()],
                operation_timeout=10,
            )
            retry = False
            for name, future in futures.items():
                try:
                    future.result(timeout=15)
                    self.say(f"kafka: created topic {name} ({missing[name]} partitions)")
                except KafkaException as exc:
                    error = exc.args[0]
                    if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                        continue
                    if error.retriable() and time.monotonic() < deadline:
                        retry = True
                        continue
                    raise StackError(f"kafka: cannot create topic {name}: {error.str()}") from exc
            if not retry:
                return
            time.sleep(1)


def _kafka_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, base64url without padding, never starting with '-'."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


_KAFKA_LOG4J2 = """\
# Generated by infra/kafka.py; edits are overwritten.
status = warn
name = auditlog-kafka
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = {log_dir}/server.log
appender.file.filePattern = {log_dir}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRefs = file
rootLogger.appenderRef.file.ref = file
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""
