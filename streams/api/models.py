"""What the API accepts and answers, as pydantic models; the OpenAPI document is built from them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
)

from schemas.entities import BookingStatus, UtcDatetime
from schemas.snapshot import Snapshot, SnapshotStatus

INT4_MAX = 2_147_483_647
# Bookings are for storage that starts within a sensible range; outside it, start_date plus
# duration_days could leave the calendar Python and Postgres share.
EARLIEST_START = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_START = datetime(2100, 1, 1, tzinfo=UTC)


def _no_nul(value: str) -> str:
    # Postgres text cannot hold NUL; refusing it here keeps it a 422 instead of a driver error.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _sensible_start(value: datetime) -> datetime:
    if not EARLIEST_START <= value < LATEST_START:
        raise ValueError("must be between 2000-01-01 and 2100-01-01")
    return value.astimezone(UTC)


CropType = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=120),
    AfterValidator(_no_nul),
]
Grade = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=16),
    AfterValidator(_no_nul),
]
StartDate = Annotated[AwareDatetime, AfterValidator(_sensible_start)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------- requests


class BookingRequest(_Model):
    """A new storage booking. Strict: "12" is not a number and unknown fields are refused."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    location_id: UUID = Field(description="not checked: Storage Guard has no location table")
    vendor_id: UUID = Field(description="not checked: Storage Guard has no vendor table")
    crop_type: CropType = Field(description="trimmed; 1 to 120 characters, no NUL")
    quantity_kg: int = Field(gt=0, le=INT4_MAX)
    duration_days: int = Field(ge=1, le=3650, description="end_date is start_date plus this")
    ai_inspection_id: UUID | None = Field(
        default=None,
        description="must name an existing crop_inspections row of this farmer (or of none)",
    )
    grade: Grade | None = Field(default=None, description="trimmed; 1 to 16 characters")
    start_date: StartDate | None = Field(
        default=None, description="with a time zone, from 2000 to 2100; defaults to now"
    )
    id: UUID | None = Field(
        default=None,
        description="the booking id, for safe retries: a second request with it answers 409",
    )


# --------------------------------------------------------------------------- responses


class ErrorDetail(_Model):
    loc: list[str | int]
    msg: str


class ErrorResponse(_Model):
    success: Literal[False] = False
    error: str
    details: list[ErrorDetail] | None = None


class SnapshotView(Snapshot):
    """A stored snapshot with its publication state."""

    market_listing_id: str | None = None
    published_at: UtcDatetime | None = None
    last_synced_at: UtcDatetime | None = None
    created_at: UtcDatetime | None = None
    updated_at: UtcDatetime | None = None


class SnapshotResponse(_Model):
    success: Literal[True] = True
    snapshot: SnapshotView


class PublishResponse(_Model):
    success: Literal[True] = True
    booking_id: UUID
    listing_id: str
    status: SnapshotStatus
    published_at: UtcDatetime | None


class SyncResult(_Model):
    booking_id: UUID
    success: bool
    listing_id: str | None = None
    error: str | None = None


class SyncAllResponse(_Model):
    success: Literal[True] = True
    total: int
    published: int
    results: list[SyncResult]


class AdditionalCondition(_Model):
    data_collection: str
    filter: str


class ReconcileResponse(_Model):
    success: Literal[True] = True
    booking_id: UUID
    signal_id: str
    data_collections: list[str]
    additional_conditions: list[AdditionalCondition]
    listing_republished: bool


class BookingView(_Model):
    id: UUID
    farmer_id: UUID
    vendor_id: UUID
    location_id: UUID
    crop_type: str
    grade: str | None
    quantity_kg: int
    start_date: UtcDatetime | None
    end_date: UtcDatetime | None
    duration_days: int | None
    ai_inspection_id: UUID | None
    status: BookingStatus
    created_at: UtcDatetime


class BookingResponse(_Model):
    success: Literal[True] = True
    booking: BookingView
    snapshot_url: str


class DependencyState(_Model):
    status: Literal["up", "down"]
    latency_ms: float | None = None
    error: str | None = None
    # Kafka Connect only: the connector's and its tasks' states.
    state: str | None = None
    tasks: list[str] | None = None


class WorkerInfo(_Model):
    app_id: str
    assigned_partitions: int


class HealthResponse(_Model):
    status: Literal["ok", "unavailable"]
    checks: dict[str, DependencyState]
    worker: WorkerInfo


class ProblemResponse(BaseModel):
    """RFC 9457 problem details (401, 403, 429), with the API's own error members besides."""

    model_config = ConfigDict(frozen=True, extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    success: Literal[False] = False
    error: str = Field(description="the same text as detail, as in every error of the API")


JobStatus = Literal["running", "succeeded", "failed"]


class JobProgress(_Model):
    pages: int = Field(description="pages of ready_to_publish snapshots handled so far")
    processed: int = Field(description="snapshots handled so far")
    published: int = Field(description="of which published")


class JobView(_Model):
    """A job of the worker that answered: kept in its memory, lost when it stops."""

    success: Literal[True] = True
    job_id: UUID
    kind: Literal["sync-all"]
    status: JobStatus
    started_at: UtcDatetime
    finished_at: UtcDatetime | None
    progress: JobProgress
    result: SyncAllResponse | None = Field(description="once succeeded")
    error: str | None = Field(description="once failed")
    location: str = Field(description="where to poll the job")


# --------------------------------------------------------------------------- history and trends


class HistoryEntry(Snapshot):
    """One content change of a snapshot, as the Postgres sink wrote it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source_version: str
    evaluated_at: UtcDatetime
    content_hash: str
    recorded_at: UtcDatetime = Field(description="when the sink wrote the change")


class HistoryResponse(_Model):
    success: Literal[True] = True
    booking_id: UUID
    entries: list[HistoryEntry] = Field(
        description="newest first (by source_version, evaluated_at)"
    )
    next_before: str | None = Field(
        description="pass as ?before= for the next (older) page; null on the last page"
    )


class TrendBucket(_Model):
    bucket_start: UtcDatetime
    snapshots: int = Field(description="snapshot versions of the location evaluated in the bucket")
    bookings: int
    quality_score: float | None = Field(description="average over the versions that have one")
    sensors: dict[str, float] = Field(
        description="average of each sensor_summary figure (e.g. temperature_avg) over the versions"
    )


class TrendsResponse(_Model):
    success: Literal[True] = True
    location_id: UUID
    bucket: Literal["hour", "day"]
    since: UtcDatetime
    buckets: list[TrendBucket] = Field(description="oldest first; buckets without data are absent")
