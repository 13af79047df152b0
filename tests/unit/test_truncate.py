"""TRUNCATE of a source table: routed to every partition, and each key forgets the table's rows.

Debezium's truncate event (``skipped.operations=none``) names the table and carries no row and
no key; its shape here is the captured update event's with ``op: "t"`` and no before/after.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from schemas.entities import Booking, Certificate, Inspection, PestDetection, SensorReading
from schemas.envelope import make_version
from streams.messages import (
    LOCATION_MSG,
    BookingChanged,
    CertificateChanged,
    InspectionChanged,
    PestChanged,
    ReadingChanged,
    Truncated,
    encode,
)
from streams.routing import BROADCAST, route
from streams.state import (
    BookingState,
    InspectionState,
    LocationState,
    Shelf,
    TruncationMarks,
    VendorState,
)
from tests.unit.test_state import answer

DATA = Path(__file__).resolve().parents[1] / "data"
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
UPDATE: dict[str, Any] = json.loads((DATA / "storage_bookings.json").read_text())[1]["value"]


def v(n: int) -> str:
    return make_version(n, n)


def truncate_event(table: str, commit: int, lsn: int) -> bytes:
    event = copy.deepcopy(UPDATE)
    event.update(op="t", before=None, after=None)
    event["source"].update(table=table, lsn=lsn, sequence=json.dumps([str(commit), str(lsn)]))
    return json.dumps(event).encode()


@pytest.mark.parametrize(
    ("table", "space"),
    [
        ("storage_bookings", "booking"),
        ("crop_inspections", "inspection"),
        ("sensor_readings", "location"),
        ("pest_detections", "location"),
        ("certificates", "vendor"),
    ],
)
def test_a_truncate_goes_to_every_partition_of_its_key_space(table: str, space: str) -> None:
    [(routed_space, key, message)] = route(table, truncate_event(table, 500, 600))
    assert (routed_space, key) == (space, BROADCAST)
    assert isinstance(message, Truncated)
    assert (message.table, message.version) == (table, make_version(500, 600))
    assert message.committed_at is not None
    if space == "location":
        assert LOCATION_MSG.validate_json(encode(message)) == message


def reading(rid: int, location: Any) -> SensorReading:
    return SensorReading(
        id=rid,
        location_id=location,
        sensor_id=f"s{rid}",
        sensor_type="temperature",
        value=float(rid),
        unit="C",
        reading_time=NOW - timedelta(minutes=rid),
    )


def test_a_location_forgets_the_truncated_table_only_and_ignores_late_older_changes() -> None:
    loc_id = uuid4()
    loc = LocationState()
    for n in (1, 2):
        loc.apply_reading(
            ReadingChanged(deleted=False, version=v(n), row=reading(n, loc_id)), history=4
        )
    pest = PestDetection(
        id=uuid4(),
        location_id=loc_id,
        pest_type="moth",
        severity="high",
        confidence=0.5,
        detected_at=NOW,
    )
    loc.apply_pest(PestChanged(deleted=False, version=v(3), row=pest), now=NOW)
    late = ReadingChanged(deleted=False, version=v(4), row=reading(4, loc_id))
    newer = ReadingChanged(deleted=False, version=v(6), row=reading(6, loc_id))
    assert loc.apply_reading(newer, history=4)  # committed after the TRUNCATE, routed before it

    assert loc.truncate("sensor_readings", v(5))
    assert [r.id for r in loc.part("x").readings] == [6]
    assert [p.id for p in loc.part("x").pests] == [pest.id]  # another table
    assert loc.version == v(6)
    assert not loc.truncate("sensor_readings", v(5))  # a duplicate of the broadcast
    assert not loc.apply_reading(late, history=4)  # made before the TRUNCATE, arrived after
    assert loc.truncate("pest_detections", v(7)) and loc.part("x").pests == []
    assert loc.version == v(7)  # the part's version moves on, so bookings take it


def test_a_truncate_that_removes_nothing_changes_nothing_but_is_remembered() -> None:
    ven = VendorState()
    assert not ven.truncate("certificates", v(5))
    cert = Certificate(id=uuid4(), vendor_id=uuid4(), type="organic", status="valid")
    assert not ven.apply_certificate(CertificateChanged(deleted=False, version=v(4), row=cert))
    assert ven.apply_certificate(CertificateChanged(deleted=False, version=v(8), row=cert))
    assert [c.id for c in ven.part("x").certificates] == [cert.id]


def test_an_inspection_is_forgotten() -> None:
    ins = InspectionState()
    row = Inspection(id=uuid4(), status="completed")
    ins.apply_inspection(InspectionChanged(deleted=False, version=v(1), row=row))
    assert ins.truncate("crop_inspections", v(2)) and ins.part("x").inspection is None
    assert not ins.apply_inspection(InspectionChanged(deleted=False, version=v(2), row=row))


def booking() -> Booking:
    return Booking(
        id=uuid4(),
        farmer_id=uuid4(),
        vendor_id=uuid4(),
        location_id=uuid4(),
        crop_type="tomato",
        quantity_kg=10,
        status="confirmed",
    )


def test_a_truncated_booking_is_withdrawn_and_stays_so() -> None:
    shelf = Shelf()
    b = booking()
    state = BookingState()
    state.apply_booking(BookingChanged(deleted=False, version=v(1), row=b))
    answer(shelf, state, "location", LocationState().part(str(b.location_id)))
    answer(shelf, state, "vendor", VendorState().part(str(b.vendor_id)))
    first = state.evaluate(NOW, shelf.get)
    assert first is not None and first.snapshot.status == "ready_to_publish"

    at = NOW + timedelta(seconds=1)
    assert state.truncate(Truncated(table="storage_bookings", version=v(5), committed_at=at))
    withdrawn = state.evaluate(NOW, shelf.get)
    assert withdrawn is not None and withdrawn.snapshot.status == "withdrawn"
    assert withdrawn.snapshot.finished_at == at and withdrawn.source_version == v(5)
    assert not state.truncate(Truncated(table="storage_bookings", version=v(5)))
    # A change made before the TRUNCATE, arriving after it, does not bring the booking back...
    stale = b.model_copy(update={"quantity_kg": 11})
    assert state.apply_booking(BookingChanged(deleted=False, version=v(3), row=stale)) == []
    assert state.deleted
    # ...one made after it (the row inserted again) does.
    again = BookingChanged(deleted=False, version=v(9), row=b)
    state.apply_booking(again)
    assert not state.deleted and state.evaluate(NOW, shelf.get) is not None


def test_a_booking_first_seen_after_the_truncate_learns_it_from_the_marks() -> None:
    marks = TruncationMarks()
    assert marks.merge("storage_bookings", v(5)) and not marks.merge("storage_bookings", v(4))
    state = BookingState()  # nothing stored yet: its insert (before the TRUNCATE) is late
    for table, version in marks.versions.items():
        state.truncate(Truncated(table=table, version=version))
    assert state.apply_booking(BookingChanged(deleted=False, version=v(2), row=booking())) == []
    assert state.booking is None


def test_states_stored_before_truncation_was_known_still_load() -> None:
    old_location = {
        "subscribers": [],
        "version": v(1),
        "tombstones": {},
        "readings": {},
        "pests": {},
    }
    assert LocationState.model_validate_json(json.dumps(old_location)).truncated == {}
    old_booking = BookingState().model_dump(mode="json")
    del old_booking["truncated_at"]
    assert BookingState.model_validate(old_booking).truncated_at is None
