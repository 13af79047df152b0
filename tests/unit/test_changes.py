"""Listing changes: the events between two snapshots, table-driven; and their JSON Schema."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID, uuid4

import jsonschema
import pytest

from schemas.entities import Booking
from schemas.jsonschema import CHANGE_SCHEMA_PATH, render_changes
from schemas.snapshot import CertificateView, Snapshot, SnapshotMetadata, SnapshotRecord
from streams import samples
from streams.builder import build_snapshot
from streams.changes import listing_changes

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
CERT = UUID("00000000-0000-0000-0000-0000000000c1")
BOOKING = Booking(
    id=UUID("00000000-0000-0000-0000-0000000000b1"),
    farmer_id=uuid4(),
    vendor_id=uuid4(),
    location_id=uuid4(),
    crop_type="maize",
    quantity_kg=10,
    status="confirmed",
)
BASE = build_snapshot(
    BOOKING, inspection=None, readings=[], pests=[], certificates=[], deleted=False, now=NOW
).model_copy(update={"quality_score": 80.0})


def cert(status: str) -> CertificateView:
    return CertificateView(
        id=CERT,
        type="organic",
        issuer=None,
        status=status,
        expiry_date=date(2026, 11, 1),
        document_url=None,
        score=None,
    )


def health(value: str) -> SnapshotMetadata:
    return SnapshotMetadata(is_certified=False, pest_alert_active=False, sensor_health=value)  # type: ignore[arg-type]


def record(snapshot: Snapshot, version: int) -> SnapshotRecord:
    return samples.record(snapshot, version, NOW)


def snap(**changes: Any) -> Snapshot:
    return BASE.model_copy(update=changes)


CASES: list[tuple[str, dict[str, Any] | None, dict[str, Any], list[str]]] = [
    ("nothing a buyer is told of", {}, {"quantity_kg": 11}, []),
    ("quality drops by exactly the threshold", {}, {"quality_score": 75.0}, ["quality_dropped"]),
    ("quality drops by less", {}, {"quality_score": 75.01}, []),
    ("quality rises", {}, {"quality_score": 95.0}, []),
    ("quality disappears", {}, {"quality_score": None}, []),
    ("pest alert raised", {}, {"has_pest_alerts": True, "pest_count": 2}, ["pest_alert_raised"]),
    ("pest alert stays", {"has_pest_alerts": True}, {"has_pest_alerts": True}, []),
    ("pest alert cleared", {"has_pest_alerts": True}, {}, ["pest_alert_cleared"]),
    (
        "certificate expires",
        {"certificates": [cert("valid")]},
        {"certificates": [cert("expired")]},
        ["certificate_expired"],
    ),
    (
        "expired certificate stays expired",
        {"certificates": [cert("expired")]},
        {"certificates": [cert("expired")]},
        [],
    ),
    ("sensors degrade", {}, {"metadata": health("degraded")}, ["sensor_health_degraded"]),
    (
        "sensors go offline",
        {"metadata": health("degraded")},
        {"metadata": health("offline")},
        ["sensor_health_offline"],
    ),
    ("sensors recover", {"metadata": health("offline")}, {"metadata": health("ok")}, []),
    ("status changes", {}, {"status": "completed"}, ["status_changed"]),
    (
        "several at once, in a fixed order",
        {"has_pest_alerts": True},
        {"quality_score": 10.0, "status": "withdrawn", "metadata": health("offline")},
        ["quality_dropped", "pest_alert_cleared", "sensor_health_offline", "status_changed"],
    ),
    ("a new listing: no status change", None, {}, []),
    (
        "a new listing with alerts",
        None,
        {
            "has_pest_alerts": True,
            "certificates": [cert("expired")],
            "metadata": health("degraded"),
        },
        ["pest_alert_raised", "certificate_expired", "sensor_health_degraded"],
    ),
]


@pytest.mark.parametrize("old, new, kinds", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_events_between_two_snapshots(
    old: dict[str, Any] | None, new: dict[str, Any], kinds: list[str]
) -> None:
    before = record(snap(**old), 1) if old is not None else None
    after = record(snap(**new), 2)
    events = listing_changes(before, after, quality_drop=5.0)
    assert [e.kind for e in events] == kinds
    for e in events:
        assert (e.booking_id, e.source_version) == (BOOKING.id, after.source_version)
        assert e.event_id.startswith(f"{BOOKING.id}:{after.source_version}:{e.kind}")
    assert len({e.event_id for e in events}) == len(events)
    # Pure: the same snapshots give the same events.
    assert listing_changes(before, after, quality_drop=5.0) == events


def test_the_event_carries_what_changed() -> None:
    (event,) = listing_changes(
        record(snap(), 1), record(snap(quality_score=60.0), 2), quality_drop=5.0
    )
    assert (event.previous_quality_score, event.quality_score) == (80.0, 60.0)
    (event,) = listing_changes(
        record(snap(), 1), record(snap(certificates=[cert("expired")]), 2), quality_drop=5.0
    )
    assert (event.certificate_id, event.certificate_type) == (CERT, "organic")
    assert event.event_id.endswith(f":{CERT}")


def test_the_committed_schema_is_the_one_the_model_generates() -> None:
    assert CHANGE_SCHEMA_PATH.read_text() == render_changes(), "run `python -m schemas.jsonschema`"


def test_an_event_validates_against_the_schema_and_a_broken_one_does_not() -> None:
    schema = json.loads(CHANGE_SCHEMA_PATH.read_text())
    (event,) = listing_changes(record(snap(), 1), record(snap(status="completed"), 2), 5.0)
    value = json.loads(event.model_dump_json())
    jsonschema.validate(value, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**value, "kind": "weather_changed"}, schema)
