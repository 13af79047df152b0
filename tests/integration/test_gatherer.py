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


def test_a_gatherer_holds_back_while_the_location_agent_has_a_queue_and_goes_on_after(
    stack: Any, pg: Any, settings: Settings
) -> None:
    """A gatherer of an app whose location agent takes nothing (no worker runs) stops reading
    the partitions whose location queue passed MIS_GATHER_AHEAD; once the agent has taken the
    queue (its group committed the ends), the gatherer reads the rest."""
    from streams.admin import ensure_topics
    from streams.runtime.gatherer import GathererThread
    from tests.integration.workers import reading_ends

    app_id = f"mis-it-hold-{uuid.uuid4().hex[:8]}"
    s = settings.model_copy(update={"app_id": app_id, "gather_ahead": 5})
    ensure_topics(s)
    kafka, topic = Kafka(s.kafka_bootstrap), _readings_topic(s)
    since = reading_ends()
    locations = [uuid.uuid4() for _ in range(40)]
    for i, location in enumerate(locations):  # more than 5 messages for every partition
        insert_temperature(pg, location, float(i))
    wait_for(
        "the readings to be captured",
        lambda: sum(reading_ends().values()) - sum(since.values()) >= len(locations),
        timeout=60,
    )
    thread = GathererThread(s)
    thread.start()
    try:
        g = thread.gatherer
        wait_for("the gatherer to hold partitions back", lambda: g._held, timeout=60)
        (_, held), *_ = sorted(g._held)
        at = next(
            loc
            for loc in locations
            if topology.space_partition("location", str(loc), s.partitions) == held
        )
        before = reading_ends()[(topic, held)]
        insert_temperature(pg, at, 100.0)
        wait_for(
            "the new reading to be captured",
            lambda: reading_ends()[(topic, held)] > before,
            timeout=60,
        )
        committed = kafka.committed(topology.gather_group(app_id)).get((topic, held), 0)
        assert committed <= before, "a held-back partition was read"

        # The location agent takes its queue: its group commits the location topic's ends.
        location_topic = topology.key_space_topic(app_id, "location")
        marks = kafka.watermarks((location_topic, p) for p in range(s.partitions))
        agent = Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": app_id})
        try:
            agent.commit(
                offsets=[TopicPartition(t, p, high) for (t, p), (_, high) in marks.items()],
                asynchronous=False,
            )
        finally:
            agent.close()
        wait_for(
            "the held-back reading to be gathered",
            lambda: kafka.committed(topology.gather_group(app_id)).get((topic, held), 0) > before,
            timeout=60,
        )
    finally:
        thread.stop()
