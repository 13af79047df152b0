"""The field-level changes of a listing between two snapshots, and their producer.

``listing_changes`` is pure: the snapshot the Postgres sink replaced (None for a new one) and
the one it wrote give the events, whatever the order or the time they are computed in.
``ChangeOutbox`` is the Postgres sink's change log: it writes the events to the outbox in the
sink's transaction, from which ``streams.sinks.outbox.OutboxPublisher`` sends them to
``<app>-listing-changes``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

from schemas.changes import ChangeKind, ListingChange
from schemas.snapshot import SnapshotRecord
from streams.config import Settings
from streams.sinks import outbox
from streams.sinks.postgres import Changes

DEGRADED: dict[str, ChangeKind] = {
    "degraded": "sensor_health_degraded",
    "offline": "sensor_health_offline",
}


def changes_topic(app_id: str) -> str:
    return f"{app_id}-listing-changes"


def listing_changes(
    old: SnapshotRecord | None, new: SnapshotRecord, quality_drop: float
) -> list[ListingChange]:
    """The changes buyers are told of, from ``old`` (None: a new listing) to ``new``."""
    s, o = new.snapshot, old.snapshot if old is not None else None
    base: dict[str, Any] = {
        "booking_id": s.booking_id,
        "source_version": new.source_version,
        "evaluated_at": new.evaluated_at,
        "location_id": s.location_id,
        "vendor_id": s.vendor_id,
        "crop_type": s.crop_type,
        "status": s.status,
        "quality_score": s.quality_score,
    }
    events: list[ListingChange] = []

    def add(kind: ChangeKind, suffix: str = "", **fields: Any) -> None:
        event_id = f"{s.booking_id}:{new.source_version}:{kind}{suffix}"
        events.append(ListingChange(event_id=event_id, kind=kind, **base, **fields))

    if (
        o is not None
        and o.quality_score is not None
        and s.quality_score is not None
        and o.quality_score - s.quality_score >= quality_drop
    ):
        add("quality_dropped", previous_quality_score=o.quality_score)
    had_alert = o is not None and o.has_pest_alerts
    if s.has_pest_alerts and not had_alert:
        add("pest_alert_raised", pest_count=s.pest_count)
    elif had_alert and not s.has_pest_alerts:
        add("pest_alert_cleared", pest_count=s.pest_count)
    expired_before = {c.id for c in o.certificates if c.status == "expired"} if o else set()
    for cert in s.certificates:
        if cert.status == "expired" and cert.id not in expired_before:
            add(
                "certificate_expired",
                f":{cert.id}",
                certificate_id=cert.id,
                certificate_type=cert.type,
            )
    health, previous = s.metadata.sensor_health, o.metadata.sensor_health if o else None
    if health in DEGRADED and health != previous:
        add(DEGRADED[health], sensor_health=health, previous_sensor_health=previous)
    if o is not None and o.status != s.status:
        add("status_changed", previous_status=o.status)
    return events


class ChangeOutbox:
    """The Postgres sink's ChangeLog: a batch's listing changes go to the outbox in the sink's
    transaction; its commit wakes the publisher (streams.sinks.outbox)."""

    def __init__(self, settings: Settings, wake: Callable[[], None] | None = None) -> None:
        self.settings, self._wake = settings, wake
        self.topic = changes_topic(settings.app_id)

    def record(self, conn: psycopg.Connection[Any], changes: Changes) -> None:
        events = [
            e
            for old, new in changes
            for e in listing_changes(old, new, self.settings.quality_drop_notify)
        ]
        outbox.write(
            conn, self.topic, [(e.booking_id, e.event_id, e.model_dump_json()) for e in events]
        )

    def committed(self) -> None:
        if self._wake is not None:
            self._wake()
