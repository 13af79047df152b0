"""Snapshot records made outside the pipeline, for the benchmarks and the tests. Pure.

A record is a snapshot with its version, evaluation time and content hash; the pipeline makes
them in streams.state, the sinks take them. The benchmarks and the tests feed the sinks records
of their own: bookings alone (``booking_record``) or a booking with every part
(``full_record``, the size of a real listing).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from uuid import UUID, uuid4

from schemas.entities import Booking, Certificate, Inspection, PestDetection, SensorReading
from schemas.snapshot import Snapshot, SnapshotRecord
from streams.builder import build_snapshot, content_hash

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def record(snapshot: Snapshot, version: int, evaluated_at: datetime) -> SnapshotRecord:
    """``snapshot`` at source version ``version`` (32 hex digits, as the pipeline's)."""
    return SnapshotRecord(
        snapshot=snapshot,
        source_version=f"{version:032x}",
        evaluated_at=evaluated_at,
        content_hash=content_hash(snapshot),
    )


def booking(booking_id: UUID, crop_type: str, quantity_kg: int) -> Booking:
    """A confirmed booking of a farmer, vendor and location of its own."""
    return Booking(
        id=booking_id,
        farmer_id=uuid4(),
        vendor_id=uuid4(),
        location_id=uuid4(),
        crop_type=crop_type,
        quantity_kg=quantity_kg,
        status="confirmed",
    )


def booking_record(booking: Booking, version: int, now: datetime) -> SnapshotRecord:
    """The snapshot of ``booking`` with no inspection, readings, pests or certificates."""
    snap = build_snapshot(
        booking, inspection=None, readings=[], pests=[], certificates=[], deleted=False, now=now
    )
    return record(snap, version, now)


def full_record(version: int = 7) -> SnapshotRecord:
    """A booking with its inspection, four readings, three pests and three certificates."""
    location, vendor, inspection = uuid4(), uuid4(), uuid4()
    booked = Booking(
        id=uuid4(),
        farmer_id=uuid4(),
        vendor_id=vendor,
        location_id=location,
        crop_type="tomato",
        grade="A",
        quantity_kg=1200,
        start_date=NOW,
        end_date=None,
        duration_days=30,
        ai_inspection_id=inspection,
        status="confirmed",
    )
    readings = [
        SensorReading(
            id=i,
            location_id=location,
            sensor_id=f"{kind}-{i}",
            sensor_type=kind,
            value=4.5 + i,
            unit=unit,
            reading_time=NOW - timedelta(minutes=i),
            status="active",
        )
        for i, (kind, unit) in enumerate(
            [("temperature", "C"), ("humidity", "%"), ("co2", "ppm"), ("ethylene", "ppm")]
        )
    ]
    pests = [
        PestDetection(
            id=uuid4(),
            location_id=location,
            pest_type=pest,
            severity="high",
            confidence=0.5,
            detected_at=NOW - timedelta(days=i + 1),
        )
        for i, pest in enumerate(["moth", "weevil", "mite"])
    ]
    certificates = [
        Certificate(
            id=uuid4(),
            vendor_id=vendor,
            type=kind,
            issuer="Certification Board of Somewhere",
            status="valid",
            expiry_date=date(2027, 1, 1),
            document_url=f"https://certificates.example/{kind}/{uuid4()}.pdf",
            score=80,
        )
        for kind in ("organic", "fair-trade", "global-gap")
    ]
    snap = build_snapshot(
        booked,
        inspection=Inspection(
            id=inspection,
            status="completed",
            quality_score=Decimal("91.25"),
            freshness="fresh",
            visual_defects=None,
            shelf_life_days=9,
        ),
        readings=readings,
        pests=pests,
        certificates=certificates,
        deleted=False,
        now=NOW,
    )
    return record(snap, version, NOW)
