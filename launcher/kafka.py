"""Kafka 4.3 as one KRaft node that is both broker and controller."""

from __future__ import annotations

import base64
import logging
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from launcher import jvm, maven
from launcher.component import Component
from launcher.errors import StartError

log = logging.getLogger(__name__)

KAFKA_MAIN = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def admin_client(bootstrap: str) -> AdminClient:
    # librdkafka prints every refused connection to stderr unless given a logger.
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": logging.getLogger("rdkafka")}
    return AdminClient(conf)


def _cluster_id() -> str:
    # Kafka's Uuid: URL-safe base64 of 16 random bytes, unpadded, never starting with '-'
    # (a leading dash would be read as an option on the command line).
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


class Kafka(Component):
    name = "kafka"
    start_timeout_s = 90.0

    @property
    def port(self) -> int:
        return self.settings.kafka_port

    def ports(self) -> dict[str, int]:
        return {"kafka": self.port, "kafka controller": self.settings.kafka_controller_port}

    @property
    def config_file(self) -> Path:
        return self.directory / "server.properties"

    def server_properties(self) -> str:
        s = self.settings
        data = self.directory / "data"
        return f"""\
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{s.kafka_controller_port}
listeners=PLAINTEXT://127.0.0.1:{s.kafka_port},CONTROLLER://127.0.0.1:{s.kafka_controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{s.kafka_port},CONTROLLER://127.0.0.1:{s.kafka_controller_port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
num.partitions={s.partitions}
default.replication.factor=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# One node: nobody else is coming, so a consumer group need not wait for more members.
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
log.retention.hours=-1
"""

    def prepare(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self.server_properties())
        jvm.write_log4j2(self.directory)
        if not (self.directory / "data" / "meta.properties").exists():
            self._format()

    def _archive(self, name: str, main_class: str) -> jvm.ClassArchive:
        return jvm.class_archive(
            self.paths.cache, self.directory, name, main_class, maven.classpath(self.paths)
        )

    def _format(self) -> None:
        # 4.x needs an explicit cluster id; --standalone makes this node the whole dynamic quorum
        # (it requires controller.quorum.bootstrap.servers, not controller.quorum.voters).
        archive = self._archive("kafka-storage", STORAGE_TOOL)
        argv = jvm.command(
            STORAGE_TOOL,
            heap="256m",
            classpath=maven.classpath(self.paths),
            log4j2=self.directory / "log4j2.properties",
            args=["format", "-t", _cluster_id(), "-c", str(self.config_file), "--standalone"],
            archive=archive,
            jit_c1_only=True,
        )
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise StartError(f"formatting Kafka storage failed: {last[0]}")
        archive.keep()

    def argv(self) -> list[str]:
        return jvm.command(
            KAFKA_MAIN,
            heap=self.settings.kafka_heap,
            classpath=maven.classpath(self.paths),
            log4j2=self.directory / "log4j2.properties",
            props={"kafka.logs.dir": str(self.directory / "logs")},
            args=[str(self.config_file)],
            archive=self._archive("kafka", KAFKA_MAIN),
        )

    def after_stop(self, clean: bool) -> None:
        if clean:
            self._archive("kafka", KAFKA_MAIN).keep()

    def probe(self) -> str | None:
        if not port_open(self.port):
            return f"port {self.port} not open"
        try:
            meta = admin_client(self.settings.kafka_bootstrap).list_topics(timeout=3)
        except KafkaException as exc:
            return str(exc)
        return None if meta.brokers else "no broker in metadata"
