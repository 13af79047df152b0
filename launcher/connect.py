"""Kafka Connect in distributed mode, with Debezium's Postgres connector as an isolated plugin."""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import ConfigResource, NewTopic

from launcher import jvm, maven
from launcher.component import Component
from launcher.errors import StartError
from launcher.kafka import admin_client, port_open
from streams.config import Settings

log = logging.getLogger(__name__)

POSTGRES_CONNECTOR = "io.debezium.connector.postgresql.PostgresConnector"
CONNECT_MAIN = "org.apache.kafka.connect.cli.ConnectDistributed"


def internal_topics(settings: Settings) -> dict[str, str]:
    group = settings.connect_group
    return {
        "config.storage.topic": f"{group}-configs",
        "offset.storage.topic": f"{group}-offsets",
        "status.storage.topic": f"{group}-status",
    }


def settings_env(settings: Settings) -> dict[str, str]:
    """Settings as MIS_* variables, for the connector JSON's ${env:MIS_...} placeholders."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        plain = value.get_secret_value() if hasattr(value, "get_secret_value") else value
        env[f"MIS_{name.upper()}"] = str(plain).lower() if isinstance(plain, bool) else str(plain)
    return env


def rest(
    settings: Settings, method: str, path: str, body: Any = None, timeout: float = 10.0
) -> tuple[int, Any]:
    """One call to the Connect REST API; (status, decoded JSON or None). Raises OSError if down."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        settings.connect_url + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw) if raw else None
        except ValueError:
            return exc.code, raw.decode(errors="replace")


class Connect(Component):
    name = "connect"
    start_timeout_s = 120.0

    @property
    def port(self) -> int:
        return self.settings.connect_port

    @property
    def config_file(self) -> Path:
        return self.directory / "worker.properties"

    def worker_properties(self) -> str:
        s = self.settings
        topics = "\n".join(f"{key}={name}" for key, name in internal_topics(s).items())
        return f"""\
bootstrap.servers={s.kafka_bootstrap}
group.id={s.connect_group}
{topics}
config.storage.replication.factor=1
offset.storage.replication.factor=1
status.storage.replication.factor=1
offset.flush.interval.ms=1000
key.converter=org.apache.kafka.connect.json.JsonConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
listeners=http://127.0.0.1:{s.connect_port}
rest.advertised.host.name=127.0.0.1
rest.advertised.port={s.connect_port}
plugin.path={self.paths.plugin_path}
# Read plugins from their ServiceLoader manifests instead of scanning every class of every
# jar by reflection: the scan is most of Connect's start-up time on two cores.
plugin.discovery=service_load
config.providers=env
config.providers.env.class=org.apache.kafka.common.config.provider.EnvVarConfigProvider
"""

    def prepare(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self.worker_properties())
        jvm.write_log4j2(self.directory)
        ensure_internal_topics(self.settings)

    def _archive(self) -> jvm.ClassArchive:
        return jvm.class_archive(
            self.paths.cache, self.directory, "connect", CONNECT_MAIN, maven.classpath(self.paths)
        )

    def argv(self) -> list[str]:
        return jvm.command(
            CONNECT_MAIN,
            heap=self.settings.connect_heap,
            classpath=maven.classpath(self.paths),
            log4j2=self.directory / "log4j2.properties",
            props={"kafka.logs.dir": str(self.directory / "logs")},
            args=[str(self.config_file)],
            archive=self._archive(),
        )

    def after_stop(self, clean: bool) -> None:
        if clean:
            self._archive().keep()

    def env(self) -> Mapping[str, str]:
        return {**os.environ, **settings_env(self.settings)}

    def probe(self) -> str | None:
        if not port_open(self.port):
            return f"port {self.port} not open"
        try:
            # /connectors answers 200 only once the worker has joined its group.
            status, _ = rest(self.settings, "GET", "/connectors", timeout=3)
            if status != 200:
                return f"GET /connectors answered {status}"
            status, plugins = rest(self.settings, "GET", "/connector-plugins", timeout=3)
        except OSError as exc:
            return str(exc)
        classes = {p.get("class") for p in plugins or []} if status == 200 else set()
        if POSTGRES_CONNECTOR not in classes:
            return f"plugin {POSTGRES_CONNECTOR} not loaded from {self.paths.plugin_path}"
        return None


def ensure_internal_topics(settings: Settings) -> None:
    """Create Connect's internal topics compacted, one partition each.

    Connect refuses to start when they exist with cleanup.policy=delete, which is what broker
    auto-creation would give them if anything touched them first.
    """
    admin = admin_client(settings.kafka_bootstrap)
    names = list(internal_topics(settings).values())
    existing = set(admin.list_topics(timeout=10).topics)
    missing = [n for n in names if n not in existing]
    if missing:
        futures = admin.create_topics(
            [
                NewTopic(
                    n, num_partitions=1, replication_factor=1, config={"cleanup.policy": "compact"}
                )
                for n in missing
            ],
            operation_timeout=10,
        )
        for name, fut in futures.items():
            try:
                fut.result()
            except KafkaException as exc:
                raise StartError(f"could not create Connect topic {name}: {exc}") from exc
    present = [ConfigResource(ConfigResource.Type.TOPIC, n) for n in names if n in existing]
    for res, fut in admin.describe_configs(present).items() if present else []:
        policy = fut.result()["cleanup.policy"].value
        if policy != "compact":
            raise StartError(
                f"topic {res.name} has cleanup.policy={policy}, Connect needs compact: "
                f"delete it or run `python -m launcher down --purge`"
            )
