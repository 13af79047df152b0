"""A small demo data set, written to the source tables, and the snapshots it produces; and
``touch``, one more write for ``mis watch`` to show arriving."""

from __future__ import annotations

import random
import time
from datetime import UTC, date, datetime, timedelta
from uuid import UUID, uuid4

import psycopg

from streams import source_db
from streams.config import Settings

CROPS = ["tomato", "onion", "potato", "mango", "banana", "apple"]


def load(conn: psycopg.Connection, bookings: int, rng: random.Random) -> list[UUID]:
    now = datetime.now(UTC)
    vendor, location = uuid4(), uuid4()
    source_db.insert(
        conn,
        "certificates",
        vendor_id=vendor,
        type="organic",
        status="valid",
        issuer="Demo Cert Board",
        expiry_date=date.today() + timedelta(days=200),
        score=92,
    )
    source_db.insert(
        conn,
        "certificates",
        vendor_id=vendor,
        type="haccp",
        status="valid",
        expiry_date=date.today() - timedelta(days=3),
    )
    for sensor, kind, unit, value in [
        ("t-1", "temperature", "C", 4.2),
        ("t-2", "temperature", "C", 4.8),
        ("h-1", "humidity", "%", 88.0),
        ("c-1", "co2", "ppm", 420.0),
    ]:
        source_db.insert(
            conn,
            "sensor_readings",
            location_id=location,
            sensor_id=sensor,
            sensor_type=kind,
            value=value + rng.uniform(-0.3, 0.3),
            unit=unit,
            reading_time=now - timedelta(minutes=2),
        )
    source_db.insert(
        conn,
        "pest_detections",
        location_id=location,
        pest_type="fruit fly",
        severity="medium",
        confidence=0.82,
        detected_at=now - timedelta(days=1),
    )
    ids = []
    for _ in range(bookings):
        crop = rng.choice(CROPS)
        inspection = source_db.insert(
            conn,
            "crop_inspections",
            crop_type=crop,
            status="completed",
            quality_score=round(rng.uniform(70, 99), 2),
            freshness="fresh",
            shelf_life_days=rng.randint(5, 30),
        )
        ids.append(
            source_db.insert(
                conn,
                "storage_bookings",
                **source_db.booking_values(
                    farmer_id=uuid4(),
                    vendor_id=vendor,
                    location_id=location,
                    crop_type=crop,
                    quantity_kg=rng.randint(100, 5000),
                    ai_inspection_id=inspection,
                    status="confirmed",
                    duration_days=30,
                ),
            )
        )
    return ids


def run(settings: Settings, rows: int, watch_s: float) -> int:
    rng = random.Random()
    with psycopg.connect(settings.pg_dsn, autocommit=True) as conn:
        ids = load(conn, rows, rng)
        print(
            f"demo: wrote {rows} bookings with an inspection each, "
            "4 sensors, 1 pest event and 2 certificates"
        )
        deadline = time.monotonic() + watch_s
        found: list[tuple] = []
        while time.monotonic() < deadline:
            found = conn.execute(
                "SELECT booking_id, crop_type, quantity_kg, quality_score, pest_count, "
                "is_certified, "
                "certification_types, metadata->>'sensor_health', status, market_listing_id "
                "FROM market_inventory_snapshots WHERE booking_id = ANY(%s) ORDER BY crop_type",
                (ids,),
            ).fetchall()
            if len(found) == rows and all(r[8] == "published" for r in found):
                break
            time.sleep(0.5)
    header = (
        "booking",
        "crop",
        "kg",
        "quality",
        "pests",
        "certified",
        "types",
        "sensors",
        "status",
        "listing",
    )
    print(" | ".join(header))
    for r in found:
        print(" | ".join(str(x)[:8] if i in (0, 9) else str(x) for i, x in enumerate(r)))
    if len(found) < rows:
        print(
            f"demo: only {len(found)} of {rows} snapshots appeared within {watch_s:.0f}s "
            "(is the worker running? see `make stack-status` and `.stack/*.log`)"
        )
        return 1
    return 0


LATEST_BOOKING = (
    "SELECT l.location_id, (SELECT count(*) FROM storage_bookings b "
    "WHERE b.location_id = l.location_id) "
    "FROM storage_bookings l ORDER BY l.created_at DESC, l.id LIMIT 1"
)


def touch(conn: psycopg.Connection, location: UUID | None = None) -> tuple[UUID, int, int]:
    """Insert one temperature reading, at ``location`` or else at the location of the latest
    booking: every snapshot there changes. Returns the location, its bookings and the
    reading's id."""
    bookings = 0
    if location is None:
        row = conn.execute(LATEST_BOOKING).fetchone()
        if row is None:
            raise LookupError("no booking yet: run `mis demo` first")
        location, bookings = row
    else:
        count = conn.execute(
            "SELECT count(*) FROM storage_bookings WHERE location_id = %s", (location,)
        ).fetchone()
        bookings = count[0] if count else 0
    reading = source_db.insert(
        conn,
        "sensor_readings",
        location_id=location,
        sensor_id="t-1",
        sensor_type="temperature",
        value=round(random.uniform(3.5, 5.5), 2),
        unit="C",
        reading_time=datetime.now(UTC),
    )
    return location, bookings, reading


def run_touch(settings: Settings) -> int:
    try:
        with psycopg.connect(settings.pg_dsn, autocommit=True, connect_timeout=5) as conn:
            location, bookings, reading = touch(conn)
    except LookupError as exc:
        print(f"demo: {exc}")
        return 1
    except psycopg.OperationalError as exc:
        print(f"demo: Postgres is not reachable ({exc}); is the stack up (MIS_PG_PORT)?")
        return 2
    print(
        f"demo: inserted temperature reading {reading} at location {location} "
        f"({bookings} bookings there); `mis watch` shows it arrive"
    )
    return 0
