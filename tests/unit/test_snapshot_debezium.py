"""The builder over captured-shape Debezium change events (tests/data/<table>.json).

Each fixture is a list of Kafka records from the topic ``sg.public.<table>`` in offset order:
``{"topic", "partition", "offset", "timestamp", "key", "value"}``, where ``value`` is the
Debezium 3.x envelope as the JSON converter writes it with ``schemas.enable=false`` and
``decimal.handling.mode=string`` (numeric as "87.50", timestamptz as an ISO string, date as days
since the epoch), or null for the tombstone that follows a delete.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from schemas.entities import Booking, Certificate, Inspection, PestDetection, Row, SensorReading
from schemas.snapshot import (
    CertificateView,
    PestEvent,
    SensorValue,
    Snapshot,
    SnapshotMetadata,
    snapshot_id,
)
from streams.builder import build_snapshot, content_hash, next_deadline

DATA = Path(__file__).resolve().parents[1] / "data"
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)

MODELS: dict[str, type[Row]] = {
    "storage_bookings": Booking,
    "crop_inspections": Inspection,
    "sensor_readings": SensorReading,
    "pest_detections": PestDetection,
    "certificates": Certificate,
}

B1 = UUID("6f1c2a4e-0b7d-4c1e-9a55-3e2f8d9b1a01")
B2 = UUID("6f1c2a4e-0b7d-4c1e-9a55-3e2f8d9b1a02")
FARMER = UUID("2b8e6c1d-5a4f-4e3b-8c2d-1f0a9e8d7c61")
VENDOR = UUID("9d4a7b2c-3e1f-4a5b-9c8d-7e6f5a4b3c21")
LOCATION = UUID("c3e5a7b9-1d2f-4e6a-8b0c-2d4f6a8b0c11")
I1 = UUID("e7a1b3c5-9d2f-4b6e-8a0c-4e6a8c0e2a41")


def records(table: str) -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = json.loads((DATA / f"{table}.json").read_text())
    return loaded


def replay(table: str) -> tuple[dict[Any, Any], dict[Any, Any]]:
    """Apply the table's change events in order: (live rows by id, deleted rows by id)."""
    model = MODELS[table]
    live: dict[Any, Any] = {}
    gone: dict[Any, Any] = {}
    for record in records(table):
        value = record["value"]
        if value is None:  # tombstone: compaction marker, no row
            continue
        if value["op"] == "d":
            row = model.model_validate(value["before"])
            live.pop(row.id, None)  # type: ignore[attr-defined]
            gone[row.id] = row  # type: ignore[attr-defined]
        else:
            row = model.model_validate(value["after"])
            live[row.id] = row  # type: ignore[attr-defined]
            gone.pop(row.id, None)  # type: ignore[attr-defined]
    return live, gone


@pytest.mark.parametrize("table", sorted(MODELS))
def test_fixture_has_the_debezium_shape(table: str) -> None:
    recs = records(table)
    assert recs, table
    assert [r["offset"] for r in recs] == list(range(len(recs)))
    for record in recs:
        assert record["topic"] == f"sg.public.{table}"
        value = record["value"]
        if value is None:
            continue
        assert set(value) >= {"before", "after", "source", "op", "ts_ms"}
        assert value["op"] in {"c", "u", "d", "r"}
        source = value["source"]
        assert (source["connector"], source["db"], source["schema"], source["table"]) == (
            "postgresql",
            "storage_guard",
            "public",
            table,
        )
        commit_lsn, lsn = json.loads(source["sequence"])
        assert int(lsn) == source["lsn"]
        assert (commit_lsn is None) is (value["op"] == "r")
        row = value["before"] if value["op"] == "d" else value["after"]
        assert record["key"] == {"id": row["id"]}


def test_wire_forms_decode_into_rows() -> None:
    inspections, _ = replay("crop_inspections")
    assert inspections[I1].quality_score == Decimal("87.50")
    assert inspections[I1].updated_at == datetime(2026, 11, 20, 11, 1, 37, 902113, tzinfo=UTC)
    certificates, _ = replay("certificates")
    assert {c.type: c.expiry_date for c in certificates.values()}["organic"] == date(2027, 6, 30)
    readings, deleted_readings = replay("sensor_readings")
    assert readings[1003].reading_time == datetime(2026, 11, 20, 11, 40, 0, 125000, tzinfo=UTC)
    assert set(deleted_readings) == {1006}
    pests, deleted_pests = replay("pest_detections")
    assert len(pests) == 3 and len(deleted_pests) == 1


def _parts() -> dict[str, Any]:
    inspections, _ = replay("crop_inspections")
    readings, _ = replay("sensor_readings")
    pests, _ = replay("pest_detections")
    certificates, _ = replay("certificates")
    return {
        "inspections": inspections,
        "readings": list(readings.values()),
        "pests": list(pests.values()),
        "certificates": list(certificates.values()),
    }


def test_snapshot_from_captured_events() -> None:
    bookings, _ = replay("storage_bookings")
    parts = _parts()
    booking = bookings[B1]
    snap = build_snapshot(
        booking,
        inspection=parts["inspections"].get(booking.ai_inspection_id),
        readings=parts["readings"],
        pests=parts["pests"],
        certificates=parts["certificates"],
        deleted=False,
        now=NOW,
    )

    def view(n: int, type: str, issuer: str, status: str, expiry: date | None, **kw: Any) -> Any:
        return CertificateView(
            id=UUID(f"5c0e7f10-1111-4222-8333-0000000000{n:02d}"),
            type=type,
            issuer=issuer,
            status=status,
            expiry_date=expiry,
            document_url=kw.get("url"),
            score=kw.get("score"),
        )

    assert snap == Snapshot(
        id=snapshot_id(B1),
        booking_id=B1,
        farmer_id=FARMER,
        vendor_id=VENDOR,
        location_id=LOCATION,
        crop_type="tomato",
        grade="A",
        quantity_kg=1200,
        start_date=datetime(2026, 11, 21, tzinfo=UTC),
        end_date=datetime(2026, 12, 21, tzinfo=UTC),
        duration_days=30,
        inspection_id=I1,
        inspection_status="completed",
        quality_score=87.5,
        freshness="fresh",
        visual_defects="minor surface blemishes on 2% of sample",
        shelf_life_days=14,
        sensors={
            # T-02's 11:50 reading is the newest temperature; its 11:55 one was deleted.
            "temperature": SensorValue(
                value=3.9,
                unit="C",
                reading_time=datetime(2026, 11, 20, 11, 50, tzinfo=UTC),
                status="active",
            ),
            "humidity": SensorValue(
                value=91.5,
                unit="%",
                reading_time=datetime(2026, 11, 20, 11, 40, 0, 125000, tzinfo=UTC),
                status="active",
            ),
            "co2": SensorValue(
                value=812.0,
                unit="ppm",
                reading_time=datetime(2026, 11, 20, 10, 30, 0, 250000, tzinfo=UTC),
                status="active",
            ),
        },
        sensor_summary={
            # T-01 latest 4.35, T-02 latest 3.9: mean 4.125, half away from zero -> 4.13.
            "temperature_avg": 4.13,
            "temperature_min": 3.9,
            "temperature_max": 4.35,
            "humidity_avg": 91.5,
            "humidity_min": 91.5,
            "humidity_max": 91.5,
            "co2_avg": 812.0,
            "co2_min": 812.0,
            "co2_max": 812.0,
        },
        pest_events=[
            PestEvent(
                pest_type="moth",
                severity="medium",
                confidence=0.88,
                detected_at=datetime(2026, 11, 18, 7, 45, 12, 500000, tzinfo=UTC),
            ),
            # Exactly seven days old: still inside the window.
            PestEvent(
                pest_type="weevil",
                severity="low",
                confidence=0.61,
                detected_at=datetime(2026, 11, 13, 12, 0, tzinfo=UTC),
            ),
        ],
        has_pest_alerts=True,
        pest_count=2,
        certificates=[
            view(5, "fair_trade", "FT Cert", "pending", date(2026, 11, 20)),
            view(4, "gap", "GlobalG.A.P.", "valid", None, score=75),
            view(
                2,
                "haccp",
                "FoodSafe Audits Ltd",
                "expired",  # stored "valid", expired yesterday
                date(2026, 11, 19),
                url="https://certs.example.org/haccp/2.pdf",
                score=88,
            ),
            view(3, "iso22000", "ISO Registrar", "revoked", date(2027, 1, 1)),
            view(
                1,
                "organic",
                "EU Organic Control Body",
                "valid",
                date(2027, 6, 30),
                url="https://certs.example.org/organic/1.pdf",
                score=92,
            ),
        ],
        is_certified=True,
        certification_types=["gap", "organic"],
        status="ready_to_publish",
        metadata=SnapshotMetadata(
            is_certified=True, pest_alert_active=True, sensor_health="degraded"
        ),
    )
    assert len(content_hash(snap)) == 64

    # The weevil is the first to change anything: it leaves the window a microsecond after
    # its seventh day. The pending fair_trade certificate expires at the next midnight.
    deadline = next_deadline(
        readings=parts["readings"],
        pests=parts["pests"],
        certificates=parts["certificates"],
        now=NOW,
    )
    assert deadline == datetime(2026, 11, 20, 12, 0, 0, 1, tzinfo=UTC)


def test_deleted_booking_is_withdrawn_from_its_delete_event() -> None:
    bookings, deleted = replay("storage_bookings")
    assert B2 not in bookings
    parts = _parts()
    snap = build_snapshot(
        deleted[B2],
        inspection=None,
        readings=parts["readings"],
        pests=parts["pests"],
        certificates=parts["certificates"],
        deleted=True,
        now=NOW,
    )
    assert snap.status == "withdrawn"
    assert (snap.booking_id, snap.crop_type, snap.grade, snap.inspection_id) == (
        B2,
        "onion",
        None,
        None,
    )


@pytest.mark.parametrize("table", sorted(MODELS))
def test_fixtures_decode_through_the_change_event_envelope(table: str) -> None:
    envelope = pytest.importorskip("schemas.envelope")
    model = MODELS[table]
    for record in records(table):
        value = record["value"]
        if value is None:
            continue
        event = envelope.EVENT_TYPES[table].model_validate(value)
        raw = value["before"] if value["op"] == "d" else value["after"]
        assert event.row == model.model_validate(raw)
        assert event.is_delete is (value["op"] == "d")
