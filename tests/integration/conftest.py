"""Fixtures for tests against the running local stack (`make test` starts it).

Every test in this directory is marked `integration`. A stack that is down or unhealthy fails
the session with the reason; it never skips, so a green run always means the stack was exercised.
MIS_TEST_BACKEND=containers runs the same tests against docker-compose.yml instead (backends.py);
only that backend is skipped, and only when no Docker engine is reachable.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, KafkaError
from confluent_kafka.admin import AdminClient
from pymongo import MongoClient
from pymongo.database import Database

from launcher.stack import Stack
from streams.config import Settings
from tests.integration import backends

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    try:
        reason = backends.skip_reason()
    except backends.BackendError as exc:
        raise pytest.UsageError(str(exc)) from exc
    for item in items:
        if _HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.integration)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))

    # A worker of a test module reads the CDC topics from the beginning: the tests that write
    # much (the fault matrix) or empty shared tables (TRUNCATE) go last, so the others start on
    # a short history and on the data they expect.
    def lateness(item: pytest.Item) -> int:
        marker = item.get_closest_marker("late")
        return int(marker.args[0]) if marker is not None else 0

    items.sort(key=lateness)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Iterator[Stack | backends.ComposeStack]:
    if backends.selected() == "containers":
        with backends.compose_stack(settings) as compose:
            yield compose
        return
    stack = Stack.from_settings(settings)
    problems = [f"{s.name}: {s.state}" for s in stack.status() if not s.healthy]
    if not problems:
        problems = [
            f"connector {name}: {state} tasks={tasks}"
            for name, state, tasks in stack.connector_states()
            if state != "RUNNING" or not tasks or any(t != "RUNNING" for t in tasks)
        ]
    if problems:
        pytest.fail(
            "the local stack is not healthy (" + "; ".join(problems) + "). "
            "Start it with `make stack-up` or run the tests through `make test`.",
            pytrace=False,
        )
    yield stack


@pytest.fixture(scope="session")
def pg(stack: Stack, settings: Settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(settings.pg_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def mongo_db(stack: Stack, settings: Settings) -> Iterator[Database]:
    client: MongoClient = MongoClient(settings.mongo_url, serverSelectionTimeoutMS=5000)
    try:
        yield client[settings.mongo_database]
    finally:
        client.close()


@pytest.fixture(scope="session")
def kafka_admin(stack: Stack, settings: Settings) -> AdminClient:
    return AdminClient({"bootstrap.servers": settings.kafka_bootstrap})


@dataclass(frozen=True)
class Record:
    """One Kafka message, key and value decoded from JSON (None for a tombstone, the text when
    it is not JSON)."""

    topic: str
    partition: int
    offset: int
    key: Any
    value: Any


Consume = Callable[..., Record]


def _decode(raw: bytes | None) -> Any:
    # Topics are shared by the whole session, and some tests write malformed events on purpose.
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def consume_until(
    settings: Settings,
    topic: str,
    predicate: Callable[[Record], bool],
    *,
    timeout_s: float = 30.0,
) -> Record:
    """Read `topic` from the beginning until `predicate` holds for a record; fail on timeout."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"it-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            # The topic may appear only with its first change event; notice it within a second.
            "topic.metadata.refresh.interval.ms": 500,
        }
    )
    seen = 0
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._PARTITION_EOF):
                    continue
                raise AssertionError(f"consuming {topic}: {error}")
            seen += 1
            record = Record(
                topic,
                msg.partition() or 0,
                msg.offset() or 0,
                _decode(msg.key()),
                _decode(msg.value()),
            )
            if predicate(record):
                return record
    finally:
        consumer.close()
    raise AssertionError(f"no matching record on {topic} within {timeout_s:.0f}s ({seen} read)")


@pytest.fixture(scope="session")
def consume(stack: Stack, settings: Settings) -> Consume:
    """`consume(topic, predicate, timeout_s=30.0) -> Record`, from the earliest offset."""

    def _consume(
        topic: str, predicate: Callable[[Record], bool], *, timeout_s: float = 30.0
    ) -> Record:
        return consume_until(settings, topic, predicate, timeout_s=timeout_s)

    return _consume
