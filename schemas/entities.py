"""Rows of Storage Guard's five source tables, as Debezium's JSON converter renders them.

The connector runs with ``decimal.handling.mode=string`` and the default temporal mode, so
numeric columns arrive as strings, ``timestamptz`` as ISO-8601 strings and ``date`` as a number
of days since the epoch. The validators accept both those wire forms and ordinary Python values,
so the same models serve tests, the HTTP API and the stream.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

_EPOCH = date(1970, 1, 1)


def _to_utc(value: Any) -> Any:
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    if isinstance(value, int):  # io.debezium.time.MicroTimestamp, should the mode change
        return datetime.fromtimestamp(value / 1_000_000, tz=UTC)
    return value


def _to_date(value: Any) -> Any:
    if isinstance(value, int):  # io.debezium.time.Date: days since the epoch
        return _EPOCH + timedelta(days=value)
    return value


def _unsigned_zero(value: float) -> float:
    # double precision keeps -0.0; it equals 0.0 yet renders as "-0.0", so two rows that compare
    # equal would give snapshots that compare equal with different content hashes.
    return value + 0.0


UtcDatetime = Annotated[datetime, BeforeValidator(_to_utc)]
EpochDate = Annotated[date, BeforeValidator(_to_date)]
Double = Annotated[float, AfterValidator(_unsigned_zero)]


class Row(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


BookingStatus = Literal["pending", "confirmed", "active", "completed", "cancelled"]


class Booking(Row):
    id: UUID
    farmer_id: UUID
    vendor_id: UUID
    location_id: UUID
    crop_type: str
    grade: str | None = None
    quantity_kg: int
    start_date: UtcDatetime | None = None
    end_date: UtcDatetime | None = None
    duration_days: int | None = None
    ai_inspection_id: UUID | None = None
    status: BookingStatus = "pending"
    created_at: UtcDatetime | None = None
    updated_at: UtcDatetime | None = None


class Inspection(Row):
    id: UUID
    farmer_id: UUID | None = None
    crop_type: str | None = None
    status: str
    quality_score: Decimal | None = None
    freshness: str | None = None
    visual_defects: str | None = None
    shelf_life_days: int | None = None
    created_at: UtcDatetime | None = None
    updated_at: UtcDatetime | None = None


class SensorReading(Row):
    id: int
    location_id: UUID
    sensor_id: str
    sensor_type: str
    value: Double
    unit: str
    reading_time: UtcDatetime
    status: str = "active"


class PestDetection(Row):
    id: UUID
    location_id: UUID
    pest_type: str
    severity: str
    confidence: Double
    detected_at: UtcDatetime


class Certificate(Row):
    id: UUID
    vendor_id: UUID
    type: str
    issuer: str | None = None
    status: str
    expiry_date: EpochDate | None = None
    document_url: str | None = None
    score: int | None = None
