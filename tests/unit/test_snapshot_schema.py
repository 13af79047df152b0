"""The published JSON Schema of the snapshot topic matches the model and the records."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from uuid import uuid4

import jsonschema
import pytest

from schemas.entities import Booking, Certificate, SensorReading
from schemas.jsonschema import SCHEMA_PATH, render
from streams import samples
from streams.builder import build_snapshot

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def test_the_committed_schema_is_the_one_the_model_generates() -> None:
    assert SCHEMA_PATH.read_text() == render(), "run `python -m schemas.jsonschema`"


def test_a_record_validates_and_a_broken_one_does_not() -> None:

    booking = Booking(
        id=uuid4(),
        farmer_id=uuid4(),
        vendor_id=uuid4(),
        location_id=uuid4(),
        crop_type="maize",
        quantity_kg=10,
        status="active",
    )
    reading = SensorReading(
        id=1,
        location_id=booking.location_id,
        sensor_id="t",
        sensor_type="temperature",
        value=3.5,
        unit="C",
        reading_time=NOW,
    )
    cert = Certificate(id=uuid4(), vendor_id=booking.vendor_id, type="organic", status="valid")
    snap = build_snapshot(
        booking,
        inspection=None,
        readings=[reading],
        pests=[],
        certificates=[cert],
        deleted=False,
        now=NOW,
    )
    record = samples.record(snap, 0, NOW)
    schema = json.loads(SCHEMA_PATH.read_text())
    value = json.loads(record.model_dump_json())
    jsonschema.validate(value, schema)

    value["snapshot"]["quantity_kg"] = "ten"
    with pytest.raises(jsonschema.ValidationError) as caught:
        jsonschema.validate(value, schema)
    assert list(caught.value.absolute_path) == ["snapshot", "quantity_kg"]
