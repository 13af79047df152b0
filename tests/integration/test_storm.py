"""The join under many changes, on the real stack: re-keying, grouped and conflated answers,
and a key that outgrows its bounds."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any
from uuid import uuid4

import pytest
from confluent_kafka import Consumer, TopicPartition

from streams import source_db, topology
from streams.topology import partition_of
from tests.integration.test_pipeline import World, settled
from tests.integration.workers import Worker, snapshot_row, wait_for

WINDOW_S = 0.25
MAX_PART_BYTES = 12_000  # about 70 pest detections: small, so that the test stays quick


@pytest.fixture(scope="module")
def app_id() -> str:
    return f"mis-it-storm-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def worker(stack: Any, app_id: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    env = {"MIS_CONFLATE_WINDOW_S": str(WINDOW_S), "MIS_MAX_PART_BYTES": str(MAX_PART_BYTES)}
    w = Worker("storm", app_id, tmp_path_factory.mktemp("workers"), env).start()
    try:
        w.wait_ready()
        yield w
    finally:
        w.stop()


def read_all(settings: Any, topic: str, keep: Any, timeout: float = 10.0) -> list[Any]:
    """Every message of ``topic`` up to its current end for which ``keep`` is true."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"it-{uuid4()}",
            "enable.auto.commit": False,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        ends = {}
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        found, done = [], set()
        deadline = time.monotonic() + timeout + len(ends) * 5
        while len(done) < len(ends) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            if keep(msg):
                found.append(msg)
            if msg.offset() + 1 >= ends[msg.partition()]:
                done.add(msg.partition())
        assert len(done) == len(ends), f"{topic} not read to its end"
        return found
    finally:
        consumer.close()


def test_a_reading_that_changes_location_leaves_the_old_one(
    worker: Worker, pg: Any, mongo_db: Any
) -> None:
    here, there = World(pg), World(pg)
    a, b = here.booking(None), there.booking(None)
    reading = here.reading("p-1", "temperature", 5.5, minutes_ago=1)
    settled(pg, mongo_db, a, lambda r, d: "temperature" in r["sensors"])
    settled(pg, mongo_db, b, lambda r, d: r["status"] == "published")
    # The old location gets a delete of the reading, the new one the reading, at one version.
    source_db.update(pg, "sensor_readings", reading, location_id=there.location)
    settled(pg, mongo_db, b, lambda r, d: r["sensors"].get("temperature", {}).get("value") == 5.5)
    settled(pg, mongo_db, a, lambda r, d: r["sensors"] == {})


def test_a_storm_at_one_location_is_answered_grouped_and_conflated(
    worker: Worker, pg: Any, mongo_db: Any, settings: Any, app_id: str
) -> None:
    w = World(pg)
    bookings = [w.booking(None) for _ in range(12)]
    for bk in bookings:
        settled(pg, mongo_db, bk, lambda r, d: r["status"] == "published")
    readings = 300
    now = datetime.now(UTC)
    with pg.cursor() as cur:
        cur.executemany(
            "INSERT INTO sensor_readings (location_id, sensor_id, sensor_type, value, unit, "
            "reading_time) VALUES (%s, %s, 'temperature', %s, 'C', %s)",
            [
                (w.location, f"s-{i % 3}", float(i), now + timedelta(milliseconds=i))
                for i in range(readings)
            ],
        )
    last = float(readings - 1)
    for bk in bookings:
        settled(
            pg, mongo_db, bk, lambda r, d: r["sensors"].get("temperature", {}).get("value") == last
        )

    # One part per destination partition, naming the bookings of that partition.
    location = str(w.location).encode()
    parts = read_all(
        settings, topology.key_space_topic(app_id, "booking"), lambda m: m.key() == location
    )
    answered: set[str] = set()
    for msg in parts:
        named = json.loads(msg.value())["bookings"]
        assert named and all(partition_of(b, settings.partitions) == msg.partition() for b in named)
        answered.update(named)
    assert answered == {str(b) for b in bookings}
    # Conflated: far fewer parts and snapshots than readings, at most one per window per key.
    snaps = read_all(
        settings, topology.snapshot_topic(app_id), lambda m: m.key() == str(bookings[0]).encode()
    )
    stamps = sorted(m.timestamp()[1] for m in snaps)
    span_s = (stamps[-1] - stamps[0]) / 1000
    assert len(snaps) <= span_s / WINDOW_S + 2, (len(snaps), span_s)
    # The location's answers since the storm began: the messages of one flush leave within a
    # few milliseconds of each other, one per destination partition.
    started_ms = int(now.timestamp() * 1000) - 1000
    stamps = sorted(m.timestamp()[1] for m in parts if m.timestamp()[1] >= started_ms)
    flushes = 1 + sum(1 for a, b in pairwise(stamps) if b - a > 50)
    span_s = (stamps[-1] - stamps[0]) / 1000
    assert flushes <= span_s / WINDOW_S + 2, (flushes, span_s)
    assert len(parts) < readings


def test_a_location_outgrowing_its_part_dead_letters_the_excess_and_goes_on(
    worker: Worker, pg: Any, mongo_db: Any, settings: Any, app_id: str
) -> None:
    crowded, other = World(pg), World(pg)
    booking, neighbour = crowded.booking(None), other.booking(None)
    settled(pg, mongo_db, booking, lambda r, d: r["status"] == "published")
    detections = 300  # several times what fits in MAX_PART_BYTES
    with pg.cursor() as cur:
        cur.executemany(
            "INSERT INTO pest_detections (id, location_id, pest_type, severity, confidence, "
            "detected_at) VALUES (%s, %s, 'weevil', 'low', 0.5, %s)",
            [
                (uuid4(), crowded.location, crowded.now - timedelta(minutes=i))
                for i in range(detections)
            ],
        )
    other.reading("n-1", "humidity", 61.0, minutes_ago=1, unit="%")
    settled(pg, mongo_db, neighbour, lambda r, d: "humidity" in r["sensors"])

    key = str(crowded.location)

    def letters() -> list[dict[str, Any]]:
        # Parked under their own key (the detection's id), with the location's in the reason.
        found = read_all(
            settings,
            topology.dead_letter_topic(app_id),
            lambda m: f"processing failed for key {key}".encode() in (m.value() or b""),
        )
        return [json.loads(m.value()) for m in found]

    def accounted() -> tuple[int, list[dict[str, Any]]] | None:
        row = snapshot_row(pg, booking)
        parked = letters()
        if row is None or not parked or row["pest_count"] + len(parked) != detections:
            return None
        return row["pest_count"], parked

    kept, parked = wait_for("every detection kept or dead-lettered", accounted, timeout=90)
    assert 0 < kept < detections
    assert all(f"key {key}" in p["reason"] and "MAX_PART_BYTES" in p["reason"] for p in parked)
    assert len({p["offset"] for p in parked}) == len(parked)  # each event once
    # The location still answers: a reading there reaches the booking.
    crowded.reading("c-1", "temperature", 3.25, minutes_ago=0)
    row, _ = settled(pg, mongo_db, booking, lambda r, d: "temperature" in r["sensors"])
    assert row["pest_count"] == kept
    assert len(letters()) == len(parked)  # nothing more refused, nothing repeated
