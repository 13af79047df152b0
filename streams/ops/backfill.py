"""``mis backfill``: re-read source rows through Debezium incremental snapshots, and wait.

An ``execute-snapshot`` signal of type ``incremental``, inserted into the connector's signal
table (``signal.data.collection``), makes Debezium read the chosen tables, or only their rows
matching ``additional-conditions``, in chunks while streaming goes on. The rows arrive as
``op: "r"`` events on the ordinary CDC topics and flow through the pipeline like any change:
rows it never saw (written while the connector did not capture the table) fill the snapshots
they belong to; rows it already holds change nothing.

Completion is read from the connector's notifications (``notification.enabled.channels=sink``,
``notification.sink.topic.name``): Debezium gives an incremental snapshot's notifications the
id of the signal that started it, and sends STARTED, IN_PROGRESS per chunk,
TABLE_SCAN_COMPLETED per table (with ``total_rows_scanned`` and a status) and COMPLETED, or
ABORTED.
"""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg
from confluent_kafka import KafkaError, TopicPartition
from psycopg import sql

from streams.config import Settings
from streams.debezium_signal import (
    CONNECTORS_DIR,
    SIGNAL_TABLE,
    declared_configs,
    execute_snapshot_data,
    insert_execute_snapshot,
)
from streams.ops.errors import BackfillFailed, OpsError
from streams.ops.kafka import Kafka
from streams.ops.terminal import Progress, duration, summary
from streams.topology import SOURCE_TABLES

log = logging.getLogger(__name__)

SCHEMA = "public"
INCREMENTAL = "Incremental Snapshot"


@dataclass(frozen=True)
class BackfillRequest:
    tables: tuple[str, ...]
    where: str | None = None
    wait: bool = True
    timeout_s: float = 1800.0
    connector: str | None = None


@dataclass(frozen=True)
class Notification:
    id: str
    type: str
    aggregate_type: str
    data: dict[str, str]
    timestamp_ms: int | None


def qualified(table: str) -> str:
    """``storage_bookings`` or ``public.storage_bookings`` -> ``public.storage_bookings``."""
    name = table.removeprefix(f"{SCHEMA}.")
    if name not in SOURCE_TABLES:
        raise OpsError(f"{table!r} is not a source table ({', '.join(SOURCE_TABLES)})")
    return f"{SCHEMA}.{name}"


def parse_notification(raw: bytes | None) -> Notification | None:
    """A notification from the sink topic (JSON converter, no schemas); None if it is not one."""
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
        return Notification(
            id=str(doc["id"]),
            type=str(doc["type"]),
            aggregate_type=str(doc["aggregate_type"]),
            data={str(k): str(v) for k, v in (doc.get("additional_data") or {}).items()},
            timestamp_ms=int(doc["timestamp"]) if doc.get("timestamp") is not None else None,
        )
    except (ValueError, KeyError, TypeError):
        return None


def captured(include_list: str, collection: str) -> bool:
    """Whether Debezium's ``table.include.list`` (comma-separated regexes) takes the table."""
    return any(re.fullmatch(p.strip(), collection) for p in include_list.split(",") if p.strip())


def default_connector() -> str:
    names = list(declared_configs(CONNECTORS_DIR))
    if len(names) != 1:
        raise OpsError(f"found connectors {names} in {CONNECTORS_DIR}: name one with --connector")
    return str(names[0])


def _get(settings: Settings, path: str) -> Any:
    url = settings.connect_url + path
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise OpsError(f"Kafka Connect answered {exc.code} to GET {path}") from exc
    except OSError as exc:
        raise OpsError(f"Kafka Connect at {settings.connect_url} is not reachable ({exc})") from exc


def connector_config(settings: Settings, name: str) -> dict[str, str]:
    """The connector's configuration, checked for what a backfill needs."""
    config: dict[str, str] = _get(settings, f"/connectors/{name}/config")
    state = _get(settings, f"/connectors/{name}/status")
    tasks = [t.get("state") for t in state.get("tasks", [])]
    if state.get("connector", {}).get("state") != "RUNNING" or tasks != ["RUNNING"] * len(tasks):
        raise OpsError(f"connector {name} is not RUNNING ({state.get('connector')}, {tasks})")
    channels = [c.strip() for c in config.get("notification.enabled.channels", "").split(",")]
    if "sink" not in channels or not config.get("notification.sink.topic.name"):
        raise OpsError(
            f"connector {name} sends no notifications to a topic, so the end of a snapshot "
            "cannot be seen: register connectors/storage_guard-source.json again "
            "(`python -m launcher up` or connectors/register.py)"
        )
    if not config.get(SIGNAL_TABLE):
        raise OpsError(f"connector {name} has no {SIGNAL_TABLE}")
    return config


def expected_rows(settings: Settings, collections: list[str], where: str | None) -> int:
    """How many rows the snapshot will read; also proves the filter is valid SQL."""
    total = 0
    with psycopg.connect(settings.pg_dsn, connect_timeout=10) as conn:
        # The filter is the operator's SQL: run it where it can change nothing.
        conn.execute("SET TRANSACTION READ ONLY")
        for collection in collections:
            schema, table = collection.split(".", 1)
            query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
            if where:
                query = sql.SQL("{} WHERE {}").format(query, sql.SQL(where))  # type: ignore[arg-type]
            try:
                row = conn.execute(query).fetchone()
            except psycopg.Error as exc:
                raise OpsError(f"--where does not work on {collection}: {exc}") from exc
            total += int(row[0]) if row else 0
    return total


def send_signal(settings: Settings, table: str, signal_id: str, data: str) -> None:
    with psycopg.connect(settings.pg_dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(insert_execute_snapshot(table), (signal_id, data))
    log.info("signal sent id=%s table=%s data=%s", signal_id, table, data)


@dataclass
class BackfillOutcome:
    request: BackfillRequest
    connector: str
    signal_id: str
    collections: list[str]
    expected: int
    status: str = "SENT"
    scanned: dict[str, tuple[int, str]] = field(default_factory=dict)
    seconds: float = 0.0

    def rows(self) -> list[tuple[str, str]]:
        rows = [
            ("connector", self.connector),
            ("signal", self.signal_id),
            ("tables", ", ".join(self.collections)),
            (
                "rows matching",
                f"{self.expected:,}" + (f" ({self.request.where})" if self.request.where else ""),
            ),
            ("snapshot", self.status),
        ]
        for collection, (count, status) in self.scanned.items():
            rows.append((collection, f"{count:,} rows read ({status})"))
        if self.status != "SENT":
            rows.append(("duration", duration(self.seconds)))
        return rows


def follow_notifications(
    kafka: Kafka, topic: str, start: dict[int, int], outcome: BackfillOutcome, timeout_s: float
) -> None:
    """Read the notification topic from ``start`` until our snapshot completes or aborts."""
    progress = Progress("backfill", outcome.expected or None)
    consumer = kafka.consumer()
    started = time.monotonic()
    done = 0
    try:
        consumer.assign([TopicPartition(topic, p, o) for p, o in start.items()])
        while time.monotonic() - started < timeout_s:
            msg = consumer.poll(0.5)
            progress.update(done, outcome.status.lower())
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise OpsError(f"reading {topic}: {error}")
            note = parse_notification(msg.value())
            if note is None or note.aggregate_type != INCREMENTAL or note.id != outcome.signal_id:
                continue
            outcome.status = note.type
            if note.type == "TABLE_SCAN_COMPLETED":
                count = int(note.data.get("total_rows_scanned", "0"))
                collection = note.data.get("scanned_collection", "?")
                outcome.scanned[collection] = (count, note.data.get("status", "?"))
                done += count
                progress.say(f"{collection}: {count:,} rows read ({note.data.get('status')})")
            elif note.type == "IN_PROGRESS":
                progress.update(
                    done,
                    f"reading {note.data.get('current_collection_in_progress')}"
                    f" up to key {note.data.get('last_processed_key')}",
                    force=True,
                )
            if note.type in ("COMPLETED", "ABORTED"):
                break
    finally:
        consumer.close()
        outcome.seconds = time.monotonic() - started
        progress.close(done, outcome.status.lower())


def run(settings: Settings, request: BackfillRequest) -> BackfillOutcome:
    if not request.tables:
        raise OpsError("name at least one table")
    collections = sorted({qualified(t) for t in request.tables})
    name = request.connector or default_connector()
    config = connector_config(settings, name)
    include = config.get("table.include.list", "")
    skipped = [c for c in collections if include and not captured(include, c)]
    if skipped:
        raise OpsError(
            f"connector {name} does not capture {', '.join(skipped)} (table.include.list): "
            "add them to its JSON and register it again before backfilling"
        )
    expected = expected_rows(settings, collections, request.where)
    topic = config["notification.sink.topic.name"]
    kafka = Kafka(settings.kafka_bootstrap)
    kafka.ensure_topic(topic, partitions=1, config={"retention.ms": str(7 * 24 * 3600 * 1000)})
    counts = kafka.partitions([topic])
    start = {
        p: high
        for (_, p), (_, high) in kafka.watermarks((topic, p) for p in range(counts[topic])).items()
    }
    outcome = BackfillOutcome(request, name, f"backfill-{uuid.uuid4()}", collections, expected)
    where = [(c, request.where) for c in collections] if request.where else []
    send_signal(
        settings,
        config[SIGNAL_TABLE],
        outcome.signal_id,
        execute_snapshot_data(collections, where),
    )
    if request.wait:
        follow_notifications(kafka, topic, start, outcome, request.timeout_s)
    return outcome


def main(settings: Settings, request: BackfillRequest) -> int:
    outcome = run(settings, request)
    summary("backfill summary", outcome.rows())
    if outcome.status == "ABORTED":
        raise BackfillFailed(f"Debezium aborted snapshot {outcome.signal_id}; see the connect log")
    if request.wait and outcome.status != "COMPLETED":
        raise BackfillFailed(
            f"snapshot {outcome.signal_id} not completed after {request.timeout_s:.0f}s "
            f"(last notification: {outcome.status}); it may still be running"
        )
    return 0
