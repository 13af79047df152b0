"""The reading topic read by the workers' gatherers (streams.runtime.gatherer) on the real stack:
the readings reach the snapshots as one message per location per read, their offsets are the
gather group's, and a worker killed with readings in flight loses none."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from streams import topology
from streams.config import Settings
from streams.ops.kafka import Kafka
from tests.integration.workers import (
    Worker,
    booking_at_temperature_1,
    insert_temperature,
    synced_temperature,
    wait_for,
)


def _readings_topic(settings: Settings) -> str:
    return settings.cdc_topic("sensor_readings")


def _caught_up(kafka: Kafka, group: str, topic: str) -> bool:
    """The group committed every message of ``topic``."""
    counts = kafka.partitions([topic])
    ends = kafka.watermarks((topic, p) for p in range(counts[topic]))
    committed = kafka.committed(group)
    return all(committed.get(tp, low) >= high for tp, (low, high) in ends.items() if high > low)


def _wait_gathered(kafka: Kafka, app_id: str, topic: str) -> None:
    wait_for(
        "the gather group to commit the reading topic",
        lambda: _caught_up(kafka, topology.gather_group(app_id), topic),
        timeout=60,
    )


def _gathered_at(settings: Settings, app_id: str, location: uuid.UUID) -> list[dict[str, Any]]:
    """The gathered messages of ``location`` on the app's location topic."""
    topic = topology.key_space_topic(app_id, "location")
    partition = topology.space_partition("location", str(location), settings.partitions)
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"it-{uuid.uuid4()}"}
    )
    found: list[dict[str, Any]] = []
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        consumer.assign([TopicPartition(topic, partition, low)])
        position = low
        while position < high:
            msg = consumer.poll(5)
            if msg is None:
                break
            if msg.error():
                continue
            position = (msg.offset() or 0) + 1
            if msg.key() == str(location).encode():
                value = json.loads(msg.value())
                if value.get("kind") == "gathered":
                    found.append(value)
    finally:
        consumer.close()
    return found


def test_readings_reach_the_snapshot_through_the_gatherer(
    stack: Any, pg: Any, settings: Settings, tmp_path: Path
) -> None:
    app_id = f"mis-itg-{uuid.uuid4().hex[:8]}"
    kafka = Kafka(settings.kafka_bootstrap)
    topic = _readings_topic(settings)
    with Worker("g1", app_id, tmp_path).running():
        location, booking = booking_at_temperature_1(pg)
        for value in (2.0, 3.0, 4.0, 5.0):
            insert_temperature(pg, location, value)
        wait_for(
            "the newest reading in the snapshot",
            lambda: synced_temperature(pg, booking) == 5.0,
            timeout=60,
        )
        _wait_gathered(kafka, app_id, topic)
    # The agents did not read the topic themselves: their group holds no offset of it.
    assert not [tp for tp in kafka.committed(app_id) if tp[0] == topic]
    gathered = _gathered_at(settings, app_id, location)
    values = [c["row"]["value"] for g in gathered for c in g["changes"]]
    assert sorted(set(values)) == [1.0, 2.0, 3.0, 4.0, 5.0], gathered
    assert all(c["row"]["location_id"] == str(location) for g in gathered for c in g["changes"])


def test_a_worker_killed_with_readings_in_flight_loses_none(
    stack: Any, pg: Any, settings: Settings, tmp_path: Path
) -> None:
    app_id = f"mis-itg-{uuid.uuid4().hex[:8]}"
    first = Worker("k1", app_id, tmp_path).start()
    try:
        first.wait_ready()
        location, booking = booking_at_temperature_1(pg)
        for value in (2.0, 3.0, 4.0, 5.0, 6.0, 7.0):
            insert_temperature(pg, location, value)
        first.kill()
    finally:
        first.stop()
    with Worker("k2", app_id, tmp_path).running():
        wait_for(
            "the newest reading in the snapshot after the kill",
            lambda: synced_temperature(pg, booking) == 7.0,
            timeout=120,
        )
        _wait_gathered(Kafka(settings.kafka_bootstrap), app_id, _readings_topic(settings))
