"""Buyer notifications: the value of the topic ``<app>-listing-changes``.

A ListingChange is one field-level change of a listing, computed from the snapshot the Postgres
sink replaced and the one it wrote (streams.changes). Delivery is at least once: a consumer
deduplicates by ``event_id`` (the booking, the source version and the change).
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from schemas.entities import UtcDatetime
from schemas.snapshot import SensorHealth, SnapshotStatus

ChangeKind = Literal[
    "quality_dropped",
    "pest_alert_raised",
    "pest_alert_cleared",
    "certificate_expired",
    "sensor_health_degraded",
    "sensor_health_offline",
    "status_changed",
]


class ListingChange(BaseModel):
    """One change of a listing; the topic is keyed by booking_id."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str = Field(
        description="<booking_id>:<source_version>:<kind>[:<certificate id>]; the same change "
        "delivered twice has the same id"
    )
    kind: ChangeKind
    booking_id: UUID
    source_version: str = Field(description="the source_version of the snapshot that changed")
    evaluated_at: UtcDatetime
    location_id: UUID
    vendor_id: UUID
    crop_type: str
    status: SnapshotStatus = Field(description="the listing's status after the change")
    quality_score: float | None = Field(default=None, description="after the change")
    previous_quality_score: float | None = None
    previous_status: SnapshotStatus | None = None
    sensor_health: SensorHealth | None = None
    previous_sensor_health: SensorHealth | None = None
    pest_count: int | None = None
    certificate_id: UUID | None = None
    certificate_type: str | None = None
