"""The field-level changes of a listing between two snapshots, and their producer.

``listing_changes`` is pure: the snapshot the Postgres sink replaced (None for a new one) and
the one it wrote give the events, whatever the order or the time they are computed in.
``ChangeEmitter`` is the Postgres sink's ``on_changes``: it produces the events to
``<app>-listing-changes`` and flushes them before the sink returns, that is before the follower
commits the batch's offsets.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaException, Producer

from schemas.changes import ChangeKind, ListingChange
from schemas.snapshot import SnapshotRecord
from streams.config import Settings
from streams.errors import SinkUnavailable
from streams.sinks.postgres import Changes

log = logging.getLogger(__name__)

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


class ChangeEmitter:
    """Produces a batch's listing changes and waits until Kafka has them all."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = changes_topic(settings.app_id)
        self._producer: Producer | None = None

    def __call__(self, changes: Changes) -> None:
        events = [
            e
            for old, new in changes
            for e in listing_changes(old, new, self.settings.quality_drop_notify)
        ]
        if not events:
            return
        if self._producer is None:
            self._producer = Producer(
                {"bootstrap.servers": self.settings.kafka_bootstrap, "linger.ms": 5}
            )
        failed: list[str] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                failed.append(str(err))

        try:
            for event in events:
                self._producer.produce(
                    self.topic,
                    key=str(event.booking_id).encode(),
                    value=event.model_dump_json().encode(),
                    on_delivery=delivered,
                )
            left = self._producer.flush(30)
        except (KafkaException, BufferError) as exc:
            raise SinkUnavailable(f"listing changes: {exc}") from exc
        if left or failed:
            # The snapshots are committed: the follower retries the batch, whose upserts now
            # change nothing, so these events are lost (documented in the README).
            raise SinkUnavailable(
                f"listing changes: {left} undelivered, errors: {'; '.join(failed[:3])}"
            )
        log.debug("listing changes produced count=%d", len(events))
