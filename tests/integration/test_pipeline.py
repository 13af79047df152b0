"""Issue: continuous snapshots, end to end on the real stack (Postgres, Debezium, Kafka, FerretDB).

Every test writes to the source tables only, as any application would, and asserts on what the
pipeline made of it: the row in market_inventory_snapshots and the document in market_listings.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from confluent_kafka import Consumer, Producer

from schemas.snapshot import snapshot_id
from streams import source_db, topology
from tests.integration.workers import Worker, pipeline_drained, snapshot_row, wait_for

SETTLE = 45.0  # seconds allowed for a change to reach both sinks


@pytest.fixture(scope="module")
def app_id() -> str:
    return f"mis-it-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def worker(stack: Any, app_id: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    with Worker("w1", app_id, tmp_path_factory.mktemp("workers")).running() as w:
        yield w


def listing(mongo_db: Any, booking_id: UUID) -> dict[str, Any] | None:
    return mongo_db["market_listings"].find_one({"booking_id": str(booking_id)})


def settled(
    pg: Any, mongo_db: Any, booking_id: UUID, check: Any, timeout: float = SETTLE
) -> tuple[dict, dict]:
    """Wait until both the row and the listing exist, are in sync, and satisfy ``check``."""

    def probe() -> tuple[dict, dict] | None:
        row = snapshot_row(pg, booking_id)
        doc = listing(mongo_db, booking_id)
        if row is None or doc is None or row["synced_hash"] != row["content_hash"]:
            return None
        if doc["content_hash"] != row["content_hash"]:
            return None
        try:
            return (row, doc) if check(row, doc) else None
        except (KeyError, TypeError):  # a part not there yet (a sensor, a field): not settled
            return None

    return wait_for(f"snapshot of booking {booking_id}", probe, timeout=timeout)


class World:
    """One vendor, one location and one inspection, with a booking that ties them together."""

    def __init__(self, pg: Any) -> None:
        self.pg = pg
        self.now = datetime.now(UTC).replace(microsecond=0)
        self.vendor, self.location, self.farmer = uuid4(), uuid4(), uuid4()

    def add(self, table: str, **values: Any) -> Any:
        return source_db.insert(self.pg, table, **values)

    def reading(
        self,
        sensor: str,
        kind: str,
        value: float,
        minutes_ago: float,
        unit: str = "C",
        location: UUID | None = None,
        status: str = "active",
    ) -> int:
        return self.add(
            "sensor_readings",
            location_id=location or self.location,
            sensor_id=sensor,
            sensor_type=kind,
            value=value,
            unit=unit,
            status=status,
            reading_time=self.now - timedelta(minutes=minutes_ago),
        )

    def pest(self, pest_type: str, severity: str, confidence: float, ago: timedelta) -> UUID:
        return self.add(
            "pest_detections",
            location_id=self.location,
            pest_type=pest_type,
            severity=severity,
            confidence=confidence,
            detected_at=self.now - ago,
        )

    def booking(self, inspection: UUID | None, **kw: Any) -> UUID:
        values = source_db.booking_values(
            farmer_id=self.farmer,
            vendor_id=self.vendor,
            location_id=self.location,
            crop_type="tomato",
            quantity_kg=1200,
            ai_inspection_id=inspection,
            grade="A",
            status="confirmed",
            duration_days=30,
            start_date=self.now,
            end_date=self.now + timedelta(days=30),
        )
        values.update(kw)
        return source_db.insert(self.pg, "storage_bookings", **values)


def test_new_booking_yields_exactly_the_expected_snapshot(
    worker: Worker, pg: Any, mongo_db: Any
) -> None:
    w = World(pg)
    organic = w.add(
        "certificates",
        vendor_id=w.vendor,
        type="organic",
        issuer="Cert Board",
        status="valid",
        expiry_date=date.today() + timedelta(days=100),
        document_url="https://x/organic.pdf",
        score=90,
    )
    lapsed = w.add(
        "certificates",
        vendor_id=w.vendor,
        type="haccp",
        status="valid",
        expiry_date=date.today() - timedelta(days=2),
    )
    w.add("certificates", vendor_id=w.vendor, type="gap", status="revoked")
    w.reading("t-1", "temperature", 4.0, minutes_ago=10)
    w.reading("t-1", "temperature", 4.5, minutes_ago=2)  # latest of t-1
    w.reading("t-2", "temperature", 5.25, minutes_ago=3)  # latest of t-2
    w.reading("h-1", "humidity", 87.5, minutes_ago=1, unit="%")
    w.pest("moth", "low", 0.4, timedelta(days=2))
    w.pest("weevil", "high", 0.9, timedelta(hours=5))
    w.pest("beetle", "critical", 0.7, timedelta(days=8))  # outside the window
    inspection = w.add(
        "crop_inspections",
        farmer_id=w.farmer,
        crop_type="tomato",
        status="completed",
        quality_score=Decimal("91.25"),
        freshness="fresh",
        visual_defects="none",
        shelf_life_days=14,
    )
    booking = w.booking(inspection)

    # Every part in: the readings reach the location by another path than the booking (the
    # gatherer), so the booking's first snapshot may come before the last of them.
    row, doc = settled(
        pg,
        mongo_db,
        booking,
        lambda r, d: (
            r["pest_count"] == 2
            and r["is_certified"]
            and r["sensor_summary"].get("temperature_avg") == 4.88
            and "humidity" in r["sensors"]
        ),
    )

    assert row["id"] == snapshot_id(booking)
    assert (row["farmer_id"], row["vendor_id"], row["location_id"]) == (
        w.farmer,
        w.vendor,
        w.location,
    )
    assert (row["crop_type"], row["grade"], row["quantity_kg"], row["duration_days"]) == (
        "tomato",
        "A",
        1200,
        30,
    )
    assert (row["inspection_id"], row["inspection_status"]) == (inspection, "completed")
    assert (
        row["quality_score"],
        row["freshness"],
        row["visual_defects"],
        row["shelf_life_days"],
    ) == (Decimal("91.25"), "fresh", "none", 14)
    assert (
        row["sensors"]["temperature"]["value"] == 4.5
    )  # t-1 at -2 min is newer than t-2 at -3 min
    assert row["sensors"]["humidity"] == {
        "value": 87.5,
        "unit": "%",
        "status": "active",
        "reading_time": (w.now - timedelta(minutes=1)).isoformat().replace("+00:00", "Z"),
    }
    assert row["sensor_summary"] == {
        "temperature_avg": 4.88,
        "temperature_min": 4.5,
        "temperature_max": 5.25,
        "humidity_avg": 87.5,
        "humidity_min": 87.5,
        "humidity_max": 87.5,
    }
    assert [(p["pest_type"], p["severity"]) for p in row["pest_events"]] == [
        ("weevil", "high"),
        ("moth", "low"),
    ]
    assert row["has_pest_alerts"] is True
    by_id = {c["id"]: c for c in row["certificates"]}
    assert by_id[str(organic)]["status"] == "valid" and by_id[str(lapsed)]["status"] == "expired"
    assert len(by_id) == 3
    assert row["certification_types"] == ["organic"]
    assert row["metadata"] == {
        "is_certified": True,
        "pest_alert_active": True,
        "sensor_health": "ok",
    }
    assert row["status"] == "published"
    assert row["market_listing_id"] == str(snapshot_id(booking)) == doc["_id"]
    assert row["published_at"] is not None and row["last_synced_at"] is not None

    assert doc["status"] == "published"
    assert (doc["crop_type"], doc["quantity_kg"], doc["quality_score"]) == ("tomato", 1200, 91.25)
    assert doc["sensor_summary"] == row["sensor_summary"]
    assert doc["pest_count"] == 2 and doc["is_certified"] is True
    assert doc["certification_types"] == ["organic"]


def test_each_later_change_is_reflected(
    worker: Worker, pg: Any, mongo_db: Any, app_id: str
) -> None:
    w = World(pg)
    cert = w.add(
        "certificates",
        vendor_id=w.vendor,
        type="organic",
        status="valid",
        expiry_date=date.today() + timedelta(days=30),
    )
    second_cert = w.add("certificates", vendor_id=w.vendor, type="iso22000", status="valid")
    reading = w.reading("t-1", "temperature", 4.0, minutes_ago=5)
    inspection = w.add("crop_inspections", status="pending")
    booking = w.booking(inspection)
    settled(
        pg,
        mongo_db,
        booking,
        lambda r, d: r["inspection_status"] == "pending" and r["is_certified"],
    )

    # A new reading.
    newer = w.reading("t-1", "temperature", 6.5, minutes_ago=1)
    settled(
        pg,
        mongo_db,
        booking,
        lambda r, d: (
            r["sensors"]["temperature"]["value"] == 6.5
            and d["sensors"]["temperature"]["value"] == 6.5
        ),
    )
    # Deleting it brings back the reading before it.
    source_db.delete(pg, "sensor_readings", newer)
    settled(pg, mongo_db, booking, lambda r, d: r["sensors"]["temperature"]["value"] == 4.0)

    # A new pest event, then its deletion.
    pest = w.pest("weevil", "medium", 0.8, timedelta(hours=1))
    settled(pg, mongo_db, booking, lambda r, d: r["pest_count"] == 1 and d["has_pest_alerts"])
    source_db.delete(pg, "pest_detections", pest)
    settled(pg, mongo_db, booking, lambda r, d: r["pest_count"] == 0 and not d["has_pest_alerts"])

    # The inspection completes.
    source_db.update(
        pg, "crop_inspections", inspection, status="completed", quality_score=Decimal("88.10")
    )
    settled(
        pg,
        mongo_db,
        booking,
        lambda r, d: r["inspection_status"] == "completed" and d["quality_score"] == 88.1,
    )

    # A certificate expires (its date passes) and the other is revoked.
    source_db.update(pg, "certificates", cert, expiry_date=date.today() - timedelta(days=1))
    settled(pg, mongo_db, booking, lambda r, d: r["certification_types"] == ["iso22000"])
    source_db.update(pg, "certificates", second_cert, status="revoked")
    settled(
        pg, mongo_db, booking, lambda r, d: not r["is_certified"] and d["certification_types"] == []
    )

    # Deleting the certificates and the inspection removes their contribution.
    source_db.delete(pg, "certificates", cert)
    source_db.delete(pg, "certificates", second_cert)
    settled(pg, mongo_db, booking, lambda r, d: r["certificates"] == [])
    source_db.delete(pg, "crop_inspections", inspection)
    settled(
        pg,
        mongo_db,
        booking,
        lambda r, d: r["inspection_status"] is None and d["quality_score"] is None,
    )

    # Deleting the last reading leaves no sensors.
    source_db.delete(pg, "sensor_readings", reading)
    settled(
        pg,
        mongo_db,
        booking,
        lambda r, d: r["sensors"] == {} and r["metadata"]["sensor_health"] == "unknown",
    )

    # The booking moves to another location: the snapshot follows the new location's sensors.
    elsewhere = uuid4()
    w.reading("x-1", "humidity", 70.0, minutes_ago=1, unit="%", location=elsewhere)
    source_db.update(pg, "storage_bookings", booking, location_id=elsewhere)
    row, doc = settled(
        pg,
        mongo_db,
        booking,
        lambda r, d: r["location_id"] == elsewhere and "humidity" in r["sensors"],
    )
    assert list(row["sensors"]) == ["humidity"] and doc["location_id"] == str(elsewhere)
    # ... and no longer listens to the old one.
    w.reading("t-9", "co2", 900.0, minutes_ago=0, unit="ppm")
    pipeline_drained(app_id)
    assert "co2" not in snapshot_row(pg, booking)["sensors"]

    # Cancelled: withdrawn, and the listing says so rather than vanishing.
    source_db.update(pg, "storage_bookings", booking, status="cancelled")
    row, doc = settled(
        pg,
        mongo_db,
        booking,
        lambda r, d: r["status"] == "withdrawn" and d["status"] == "withdrawn",
    )


def test_deleted_booking_and_completed_booking(worker: Worker, pg: Any, mongo_db: Any) -> None:
    w = World(pg)
    gone, done = w.booking(None), w.booking(None)
    settled(pg, mongo_db, gone, lambda r, d: r["status"] == "published")
    settled(pg, mongo_db, done, lambda r, d: r["status"] == "published")
    source_db.delete(pg, "storage_bookings", gone)
    source_db.update(pg, "storage_bookings", done, status="completed")
    settled(
        pg, mongo_db, gone, lambda r, d: r["status"] == "withdrawn" and d["status"] == "withdrawn"
    )
    settled(
        pg, mongo_db, done, lambda r, d: r["status"] == "completed" and d["status"] == "completed"
    )


def test_pest_event_ages_out_with_no_write(worker: Worker, pg: Any, mongo_db: Any) -> None:
    w = World(pg)
    now = datetime.now(UTC)
    w.add(
        "pest_detections",
        location_id=w.location,
        pest_type="moth",
        severity="high",
        confidence=0.9,
        detected_at=now - timedelta(days=7) + timedelta(seconds=6),
    )
    booking = w.booking(None)
    row, _ = settled(pg, mongo_db, booking, lambda r, d: r["pest_count"] == 1)
    lsn_before = pg.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
    source_rows_before = _source_counts(pg, w)
    # Nothing is written to the source tables from here on: time alone moves the snapshot.
    row2, _ = settled(
        pg,
        mongo_db,
        booking,
        lambda r, d: r["pest_count"] == 0 and not d["has_pest_alerts"],
        timeout=30,
    )
    assert row2["updated_at"] > row["updated_at"]
    assert _source_counts(pg, w) == source_rows_before
    assert lsn_before is not None


def _source_counts(pg: Any, w: World) -> tuple[int, ...]:
    return tuple(
        pg.execute(sql, (w.location,)).fetchone()[0]
        for sql in (
            "SELECT count(*) FROM pest_detections WHERE location_id = %s",
            "SELECT count(*) FROM storage_bookings WHERE location_id = %s",
        )
    )


def _cdc_events(settings: Any, table: str, match: str, minimum: int) -> list[tuple[bytes, bytes]]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"it-{uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([settings.cdc_topic(table)])
    found: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline and len(found) < minimum:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() or msg.value() is None:
                continue
            if match in msg.value().decode():
                found.append((msg.key(), msg.value()))
    finally:
        consumer.close()
    return found


def test_duplicated_and_replayed_events_change_nothing(
    worker: Worker, pg: Any, mongo_db: Any, settings: Any, app_id: str
) -> None:
    w = World(pg)
    w.reading("t-1", "temperature", 3.0, minutes_ago=1)
    w.add("certificates", vendor_id=w.vendor, type="organic", status="valid")
    booking = w.booking(None)
    settled(pg, mongo_db, booking, lambda r, d: r["is_certified"] and r["sensors"])
    pipeline_drained(app_id)
    row, doc = settled(pg, mongo_db, booking, lambda r, d: True)

    events = []
    for table, match in (
        ("storage_bookings", str(booking)),
        ("sensor_readings", str(w.location)),
        ("certificates", str(w.vendor)),
    ):
        found = _cdc_events(settings, table, match, 1)
        assert found, f"no change event of {table} found on Kafka"
        events += [(settings.cdc_topic(table), k, v) for k, v in found]
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for _ in range(2):  # delivered twice more, as after a crash
        for topic, key, value in events:
            producer.produce(topic, key=key, value=value)
    producer.flush(10)
    pipeline_drained(app_id)  # the duplicates passed through the pipeline

    after = snapshot_row(pg, booking)
    assert after["updated_at"] == row["updated_at"]
    assert after["content_hash"] == row["content_hash"]
    assert after["last_synced_at"] == row["last_synced_at"]
    assert listing(mongo_db, booking) == doc


def test_malformed_event_goes_to_dead_letters_and_the_stream_goes_on(
    worker: Worker, pg: Any, mongo_db: Any, settings: Any, app_id: str
) -> None:
    marker = uuid4().hex
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    producer.produce(
        settings.cdc_topic("storage_bookings"),
        key=b'{"id":"x"}',
        value=f'{{"oops": "{marker}"'.encode(),
    )
    producer.produce(
        settings.cdc_topic("sensor_readings"),
        key=b'{"id":1}',
        value=json.dumps({"op": "c", "after": {"id": 1, "marker": marker}, "source": {}}).encode(),
    )
    producer.flush(10)
    w = World(pg)
    booking = w.booking(None)
    settled(pg, mongo_db, booking, lambda r, d: r["status"] == "published")

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"it-{uuid4()}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topology.dead_letter_topic(app_id)])
    letters: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(letters) < 2:
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error() and marker in msg.value().decode():
            letters.append(json.loads(msg.value()))
    consumer.close()
    assert len(letters) == 2
    by_topic = {d["topic"]: d for d in letters}
    assert "storage_bookings" in by_topic[settings.cdc_topic("storage_bookings")]["reason"]
    assert "location_id" in by_topic[settings.cdc_topic("sensor_readings")]["reason"]
    assert marker in by_topic[settings.cdc_topic("storage_bookings")]["value"]["text"]


def test_daily_cleanup_removes_finished_snapshots_after_90_days(
    worker: Worker, pg: Any, mongo_db: Any, app_id: str
) -> None:
    w = World(pg)
    old, recent, live = w.booking(None), w.booking(None), w.booking(None)
    for bk in (old, recent):
        source_db.update(pg, "storage_bookings", bk, status="completed")
    for bk in (old, recent):
        settled(pg, mongo_db, bk, lambda r, d: r["status"] == "completed" and r["finished_at"])
    settled(pg, mongo_db, live, lambda r, d: r["status"] == "published")
    # 91 days pass for one of them.
    pg.execute(
        "UPDATE market_inventory_snapshots SET finished_at = finished_at - interval '91 days' "
        "WHERE booking_id = %s",
        (old,),
    )
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "cleanup"],
        env={**worker.env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "evicting 1 " in result.stdout
    wait_for("the old snapshot to be deleted", lambda: snapshot_row(pg, old) is None, timeout=30)
    wait_for("its listing to be deleted", lambda: listing(mongo_db, old) is None, timeout=30)
    assert snapshot_row(pg, recent)["status"] == "completed"
    assert listing(mongo_db, recent)["status"] == "completed"
    assert snapshot_row(pg, live)["status"] == "published"
