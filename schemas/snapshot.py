"""The market inventory snapshot: the value of the snapshot topic and the shape of both sinks."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal
from uuid import UUID, uuid5

from pydantic import BaseModel, ConfigDict

from schemas.entities import Booking, Inspection, UtcDatetime

# Snapshot ids are uuid5(SNAPSHOT_NAMESPACE, str(booking_id)): a rebuild gives the same id.
SNAPSHOT_NAMESPACE = UUID("5b1f3c0e-8f5a-4d7e-9a43-2f0c6d1e7b90")

SnapshotStatus = Literal["ready_to_publish", "published", "withdrawn", "completed"]
SensorHealth = Literal["ok", "degraded", "offline", "unknown"]


def snapshot_id(booking_id: UUID) -> UUID:
    return uuid5(SNAPSHOT_NAMESPACE, str(booking_id))


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SensorValue(_Frozen):
    value: float
    unit: str
    reading_time: UtcDatetime
    status: str


class PestEvent(_Frozen):
    pest_type: str
    severity: str
    confidence: float
    detected_at: UtcDatetime


class CertificateView(_Frozen):
    id: UUID
    type: str
    issuer: str | None
    status: str
    expiry_date: date | None
    document_url: str | None
    score: int | None


class SnapshotMetadata(_Frozen):
    is_certified: bool
    pest_alert_active: bool
    sensor_health: SensorHealth


class Snapshot(_Frozen):
    """What the pure builder derives from a booking, its three parts and the time."""

    id: UUID
    booking_id: UUID
    farmer_id: UUID
    vendor_id: UUID
    location_id: UUID
    crop_type: str
    grade: str | None
    quantity_kg: int
    start_date: UtcDatetime | None
    end_date: UtcDatetime | None
    duration_days: int | None
    inspection_id: UUID | None
    inspection_status: str | None
    quality_score: float | None
    freshness: str | None
    visual_defects: str | None
    shelf_life_days: int | None
    sensors: dict[str, SensorValue]
    sensor_summary: dict[str, float]
    pest_events: list[PestEvent]
    has_pest_alerts: bool
    pest_count: int
    certificates: list[CertificateView]
    is_certified: bool
    certification_types: list[str]
    # ready_to_publish, withdrawn or completed; "published" is set by the sinks, not the builder.
    status: SnapshotStatus
    metadata: SnapshotMetadata
    # When the booking was cancelled, completed or deleted (the commit time of that change);
    # the daily cleanup counts its 90 days from here. None while the booking is live.
    finished_at: UtcDatetime | None = None


# The fields a snapshot copies from its booking's row, and those it takes from its inspection.
BOOKING_FIELDS = tuple(
    f for f in Snapshot.model_fields if f in Booking.model_fields and f not in ("id", "status")
)
QUALITY_FIELDS = (
    "inspection_id",
    "inspection_status",
    *(
        f
        for f in Snapshot.model_fields
        if f in Inspection.model_fields and f not in Booking.model_fields
    ),
)


class SnapshotRecord(_Frozen):
    """The value on the compacted snapshot topic, keyed by booking_id.

    ``source_version`` and ``evaluated_at`` order records for the sinks' guard;
    ``content_hash`` identifies the content (see streams.builder.content_hash).
    """

    snapshot: Snapshot
    source_version: str
    evaluated_at: UtcDatetime
    content_hash: str


class Listing(_Frozen):
    """A Market Connect listing document in MongoDB (``_id`` is the snapshot id as text)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    booking_id: str
    snapshot_id: str
    status: SnapshotStatus
    crop_type: str
    grade: str | None
    quantity_kg: int
    farmer_id: str
    vendor_id: str
    location_id: str
    quality_score: float | None
    freshness: str | None
    shelf_life_days: int | None
    sensors: dict[str, SensorValue]
    sensor_summary: dict[str, float]
    pest_count: int
    has_pest_alerts: bool
    is_certified: bool
    certification_types: list[str]
    metadata: SnapshotMetadata
    source_version: str
    evaluated_at: datetime
    content_hash: str
