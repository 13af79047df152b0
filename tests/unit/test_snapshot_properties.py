"""Properties of the builder: order and duplicates never matter, and time alone changes the
snapshot exactly at ``next_deadline``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.entities import Booking, Certificate, Inspection, PestDetection, SensorReading
from schemas.envelope import make_version
from streams.builder import build_snapshot, content_hash, next_deadline
from streams.messages import ReadingChanged
from streams.state import LocationState

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
LOCATION = UUID("c3e5a7b9-1d2f-4e6a-8b0c-2d4f6a8b0c11")
VENDOR = UUID("9d4a7b2c-3e1f-4a5b-9c8d-7e6f5a4b3c21")
INSPECTION_ID = UUID(int=1000)
MICRO = timedelta(microseconds=1)
WEEK = timedelta(days=7)
HOUR = timedelta(hours=1)

SNAPSHOT_SETTINGS = settings(deadline=None, max_examples=100)

# Offsets before NOW, in seconds, with the boundaries the contract cares about drawn often.
_reading_age = st.one_of(
    st.integers(-600, 3 * 3600),
    st.sampled_from([0, 3599, 3600, 3601]),
).map(lambda s: timedelta(seconds=s))
_pest_age = st.one_of(
    st.integers(-86_400, 9 * 86_400),
    st.sampled_from([7 * 86_400 - 1, 7 * 86_400, 7 * 86_400 + 1, 0]),
).map(lambda s: timedelta(seconds=s))


@st.composite
def readings(draw: st.DrawFn, ids: st.SearchStrategy[int]) -> SensorReading:
    sensor_type = draw(st.sampled_from(["temperature", "humidity", "co2"]))
    return SensorReading(
        id=draw(ids),
        location_id=LOCATION,
        sensor_id=draw(st.sampled_from(["T-01", "T-02", "H-01", "C-01"])),
        sensor_type=sensor_type,
        value=draw(st.floats(-50, 2000, allow_nan=False).map(lambda v: round(v, 3))),
        unit={"temperature": "C", "humidity": "%", "co2": "ppm"}[sensor_type],
        reading_time=NOW - draw(_reading_age),
        status=draw(st.sampled_from(["active", "active", "active", "inactive", "fault"])),
    )


@st.composite
def pests(draw: st.DrawFn, ids: st.SearchStrategy[int]) -> PestDetection:
    return PestDetection(
        id=UUID(int=draw(ids)),
        location_id=LOCATION,
        pest_type=draw(st.sampled_from(["weevil", "moth", "rodent"])),
        severity=draw(st.sampled_from(["low", "medium", "high", "critical"])),
        confidence=draw(st.sampled_from([0.5, 0.75, 0.99])),
        detected_at=NOW - draw(_pest_age),
    )


@st.composite
def certificates(draw: st.DrawFn, ids: st.SearchStrategy[int]) -> Certificate:
    offset = draw(st.none() | st.integers(-3, 3))
    return Certificate(
        id=UUID(int=draw(ids)),
        vendor_id=VENDOR,
        type=draw(st.sampled_from(["organic", "haccp", "gap"])),
        issuer=draw(st.sampled_from([None, "Control Body"])),
        status=draw(st.sampled_from(["valid", "valid", "revoked", "pending", "expired"])),
        expiry_date=None if offset is None else NOW.date() + timedelta(days=offset),
        score=draw(st.none() | st.integers(0, 100)),
    )


def bookings() -> st.SearchStrategy[Booking]:
    return st.builds(
        Booking,
        id=st.just(UUID(int=1)),
        farmer_id=st.just(UUID(int=2)),
        vendor_id=st.just(VENDOR),
        location_id=st.just(LOCATION),
        crop_type=st.sampled_from(["tomato", "onion"]),
        quantity_kg=st.integers(1, 10_000),
        ai_inspection_id=st.sampled_from([None, INSPECTION_ID]),
        status=st.sampled_from(["pending", "confirmed", "active", "completed", "cancelled"]),
    )


def inspections() -> st.SearchStrategy[Inspection | None]:
    return st.none() | st.builds(
        Inspection,
        id=st.sampled_from([INSPECTION_ID, UUID(int=1001)]),
        status=st.sampled_from(["pending", "completed"]),
        quality_score=st.none() | st.decimals("0", "999.99", places=2),
        freshness=st.sampled_from([None, "fresh"]),
    )


def parts(unique: bool) -> st.SearchStrategy[dict[str, Any]]:
    """Readings, pests and certificates; with ``unique=False`` ids may repeat with other content."""
    ids = st.integers(1, 12)

    def rows(strategy: Any) -> st.SearchStrategy[list[Any]]:
        return st.lists(strategy(ids), max_size=10, unique_by=(lambda r: r.id) if unique else None)

    return st.fixed_dictionaries(
        {"readings": rows(readings), "pests": rows(pests), "certificates": rows(certificates)}
    )


def build(booking: Booking, inspection: Inspection | None, rows: dict[str, Any], **kw: Any) -> Any:
    return build_snapshot(
        booking,
        inspection=inspection,
        deleted=kw.pop("deleted", False),
        now=kw.pop("now", NOW),
        **rows,
    )


@SNAPSHOT_SETTINGS
@given(bookings(), inspections(), parts(unique=False), st.booleans(), st.randoms())
def test_any_permutation_gives_the_same_snapshot_and_hash(
    booking: Booking, inspection: Inspection | None, rows: dict[str, Any], deleted: bool, rnd: Any
) -> None:
    base = build(booking, inspection, rows, deleted=deleted)
    shuffled = {k: rnd.sample(v, len(v)) for k, v in rows.items()}
    again = build(booking, inspection, shuffled, deleted=deleted)
    assert again == base
    assert content_hash(again) == content_hash(base)


@SNAPSHOT_SETTINGS
@given(bookings(), inspections(), parts(unique=False), st.data())
def test_a_row_passed_twice_changes_nothing(
    booking: Booking, inspection: Inspection | None, rows: dict[str, Any], data: st.DataObject
) -> None:
    base = build(booking, inspection, rows)
    doubled = {}
    for key, values in rows.items():
        extra = data.draw(st.lists(st.sampled_from(values), max_size=3)) if values else []
        position = data.draw(st.integers(0, len(values)))
        doubled[key] = values[:position] + extra + values[position:]
    again = build(booking, inspection, doubled)
    assert again == base
    assert content_hash(again) == content_hash(base)


@SNAPSHOT_SETTINGS
@given(bookings(), inspections(), parts(unique=True), st.data())
def test_time_alone_changes_the_snapshot_exactly_at_the_deadline(
    booking: Booking, inspection: Inspection | None, rows: dict[str, Any], data: st.DataObject
) -> None:
    base = build(booking, inspection, rows)
    deadline = next_deadline(now=NOW, **rows)
    if deadline is None:
        for later in (NOW + MICRO, NOW + HOUR, NOW + 8 * WEEK):
            assert build(booking, inspection, rows, now=later) == base
        return

    assert deadline > NOW
    later = NOW + MICRO * data.draw(st.integers(0, (deadline - NOW) // MICRO - 1), label="micros")
    assert NOW <= later < deadline
    assert build(booking, inspection, rows, now=later) == base
    assert build(booking, inspection, rows, now=deadline - MICRO) == base
    assert build(booking, inspection, rows, now=deadline) != base
    # Re-evaluating early (a tick, another change) does not move the deadline.
    assert next_deadline(now=later, **rows) == deadline


@SNAPSHOT_SETTINGS
@given(bookings(), inspections(), parts(unique=True))
def test_walking_from_deadline_to_deadline_sees_every_change(
    booking: Booking, inspection: Inspection | None, rows: dict[str, Any]
) -> None:
    """What a timer does: sleep until the deadline, rebuild, ask for the next deadline."""
    now, current = NOW, build(booking, inspection, rows)
    while (deadline := next_deadline(now=now, **rows)) is not None:
        assert deadline > now
        assert build(booking, inspection, rows, now=deadline - MICRO) == current
        following = build(booking, inspection, rows, now=deadline)
        assert following != current
        now, current = deadline, following
    assert build(booking, inspection, rows, now=now + 52 * WEEK) == current


@SNAPSHOT_SETTINGS
@given(
    st.lists(
        st.decimals("-1000", "1000", places=3, allow_nan=False, allow_infinity=False),
        min_size=1,
        max_size=6,
    )
)
def test_summary_is_the_decimal_mean_rounded_half_away_from_zero(values: list[Decimal]) -> None:
    rows = [
        SensorReading(
            id=i,
            location_id=LOCATION,
            sensor_id=f"T-{i}",
            sensor_type="temperature",
            value=float(v),
            unit="C",
            reading_time=NOW,
        )
        for i, v in enumerate(values)
    ]
    booking = Booking(
        id=UUID(int=1),
        farmer_id=UUID(int=2),
        vendor_id=VENDOR,
        location_id=LOCATION,
        crop_type="tomato",
        quantity_kg=1,
    )
    summary = build(booking, None, {"readings": rows, "pests": [], "certificates": []})

    def half_away(d: Decimal) -> float:
        q = abs(d).quantize(Decimal("0.01"), rounding="ROUND_HALF_UP")
        return float(q if d >= 0 else -q) + 0.0

    mean = sum(values, Decimal(0)) / len(values)
    assert summary.sensor_summary == {
        "temperature_avg": half_away(mean),
        "temperature_min": half_away(min(values)),
        "temperature_max": half_away(max(values)),
    }
    assert all(isinstance(v, float) for v in summary.sensor_summary.values())


@SNAPSHOT_SETTINGS
@given(
    bookings(),
    st.lists(readings(st.integers(1, 40)), max_size=14, unique_by=lambda r: r.id),
    st.integers(1, 3),
    st.randoms(),
)
def test_a_location_keeps_what_the_builder_needs(
    booking: Booking, rows: list[SensorReading], history: int, rnd: Any
) -> None:
    """Whatever the arrival order and history bound, the part a location answers (the latest
    reading of each (sensor_id, sensor_type)) builds the same snapshot as every reading does,
    combined devices included (the strategy draws several types per sensor_id)."""
    loc = LocationState()
    for i, row in enumerate(rnd.sample(rows, len(rows)), 1):
        loc.apply_reading(
            ReadingChanged(deleted=False, version=make_version(i, i), row=row), history=history
        )
    part = loc.part(str(LOCATION))
    assert len(part.readings) == len({(r.sensor_id, r.sensor_type) for r in rows})
    everything = {"readings": rows, "pests": [], "certificates": []}
    answered = {"readings": part.readings, "pests": [], "certificates": []}
    assert build(booking, None, answered) == build(booking, None, everything)
    assert next_deadline(now=NOW, **answered) == next_deadline(now=NOW, **everything)


@SNAPSHOT_SETTINGS
@given(
    bookings(),
    st.lists(readings(st.integers(1, 40)), max_size=12, unique_by=lambda r: r.id),
    st.data(),
)
def test_deletes_fall_back_to_the_previous_reading_of_the_same_type(
    booking: Booking, rows: list[SensorReading], data: st.DataObject
) -> None:
    loc = LocationState()
    for i, row in enumerate(rows, 1):
        loc.apply_reading(
            ReadingChanged(deleted=False, version=make_version(i, i), row=row), history=16
        )
    gone = data.draw(
        st.lists(st.sampled_from(rows), unique_by=lambda r: r.id) if rows else st.just([])
    )
    for i, row in enumerate(gone, 100):
        loc.apply_reading(
            ReadingChanged(deleted=True, version=make_version(i, i), row=row), history=16
        )
    left = [r for r in rows if r not in gone]
    answered = {"readings": loc.part(str(LOCATION)).readings, "pests": [], "certificates": []}
    remaining = {"readings": left, "pests": [], "certificates": []}
    assert build(booking, None, answered) == build(booking, None, remaining)
