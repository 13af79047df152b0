"""The listing-change outbox on the real stack: an event committed with its snapshot reaches
Kafka even when the worker that wrote it dies before sending it.

The first worker runs the Postgres sink without the outbox's publisher (MIS_CHANGE_PUBLISHER=
false): its sink commits the snapshot, its history row and the event, and nothing sends the
event, which is the state a SIGKILL between the commit and the send leaves. The worker is then
killed; a second one, with its publisher, sends what the outbox holds.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from streams import source_db
from streams.changes import changes_topic
from streams.config import Settings
from tests.integration.test_history import history_rows
from tests.integration.test_sinks import new_booking
from tests.integration.workers import Worker, wait_for

SETTLE = 60.0
APP_ID = f"mis-it-outbox-{uuid.uuid4().hex[:8]}"
TOPIC = changes_topic(APP_ID)


def topic_values(settings: Settings, topic: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Every value on ``topic`` now, read from the beginning up to each partition's end."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"it-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        at_end: set[int] = set()
        values: list[dict[str, Any]] = []

        def read() -> bool:
            msg = consumer.poll(0.5)
            if msg is None:
                return False
            error = msg.error()
            if error is not None:
                assert error.code() == KafkaError._PARTITION_EOF, error
                at_end.add(msg.partition() or 0)
            else:
                values.append(json.loads(msg.value() or b"null"))
            return at_end == set(partitions)

        wait_for(f"the end of {topic}", read, timeout, every=0)
        return values
    finally:
        consumer.close()


def outbox_events(pg: Any, booking_id: UUID) -> list[str]:
    cur = pg.execute(
        "SELECT event_id FROM market_listing_change_outbox "
        "WHERE topic = %s AND booking_id = %s ORDER BY seq",
        (TOPIC, booking_id),
    )
    return [r[0] for r in cur.fetchall()]


@pytest.fixture
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    yield tmp_path_factory.mktemp("outbox-workers")


def test_an_event_committed_by_a_worker_killed_before_sending_it_is_sent_by_the_next(
    stack: Any, pg: Any, settings: Settings, workdir: Any
) -> None:
    silent = Worker("o1", APP_ID, workdir, extra_env={"MIS_CHANGE_PUBLISHER": "false"})
    silent.start()
    try:
        silent.wait_ready()
        booking_id = new_booking(pg, uuid4())
        wait_for("the booking's first history entry", lambda: history_rows(pg, booking_id), SETTLE)
        source_db.update(pg, "storage_bookings", booking_id, status="completed")
        rows = wait_for(
            "the completed version in the history",
            lambda: [r for r in history_rows(pg, booking_id) if r["status"] == "completed"],
            SETTLE,
        )
        expected = f"{booking_id}:{rows[-1]['source_version']}:status_changed"
        # Committed with the history row: in the outbox as soon as the row is visible.
        assert expected in outbox_events(pg, booking_id)
    finally:
        silent.kill()
    assert expected not in {v["event_id"] for v in topic_values(settings, TOPIC)}

    publisher = Worker("o2", APP_ID, workdir).start()
    try:
        publisher.wait_ready()
        wait_for(
            "the event on the topic",
            lambda: expected in {v["event_id"] for v in topic_values(settings, TOPIC)},
            SETTLE,
            every=0.5,
        )
        # Deleted only once Kafka acknowledged it.
        wait_for("the outbox emptied", lambda: not outbox_events(pg, booking_id), SETTLE)
        # At least once: a copy is enough, a second would be deduplicated by its event_id.
        event = next(v for v in topic_values(settings, TOPIC) if v["event_id"] == expected)
        assert (event["kind"], event["status"]) == ("status_changed", "completed")
        assert event["booking_id"] == str(booking_id)
    finally:
        publisher.stop()
