"""The snapshot builder, rule by rule (docs/snapshot-contract.md), table-driven.

The row factories here are shared by the other test_snapshot_* modules.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from schemas.entities import Booking, Certificate, Inspection, PestDetection, SensorReading
from schemas.snapshot import (
    BOOKING_FIELDS,
    QUALITY_FIELDS,
    CertificateView,
    PestEvent,
    SensorValue,
    Snapshot,
    snapshot_id,
)
from streams.builder import (
    build_snapshot,
    content_hash,
    latest_per_sensor,
    latest_per_sensor_type,
    next_deadline,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
TODAY = NOW.date()
BOOKING_ID = UUID("6f1c2a4e-0b7d-4c1e-9a55-3e2f8d9b1a01")
FARMER = UUID("2b8e6c1d-5a4f-4e3b-8c2d-1f0a9e8d7c61")
VENDOR = UUID("9d4a7b2c-3e1f-4a5b-9c8d-7e6f5a4b3c21")
LOCATION = UUID("c3e5a7b9-1d2f-4e6a-8b0c-2d4f6a8b0c11")
INSPECTION_ID = UUID("e7a1b3c5-9d2f-4b6e-8a0c-4e6a8c0e2a41")
MICRO = timedelta(microseconds=1)


def uid(n: int) -> UUID:
    return UUID(int=n)


# --- row factories -------------------------------------------------------------------------


def booking(**changes: Any) -> Booking:
    row: dict[str, Any] = {
        "id": BOOKING_ID,
        "farmer_id": FARMER,
        "vendor_id": VENDOR,
        "location_id": LOCATION,
        "crop_type": "tomato",
        "grade": "A",
        "quantity_kg": 1200,
        "start_date": datetime(2026, 11, 21, tzinfo=UTC),
        "end_date": datetime(2026, 12, 21, tzinfo=UTC),
        "duration_days": 30,
        "ai_inspection_id": INSPECTION_ID,
        "status": "confirmed",
    }
    return Booking(**(row | changes))


def inspection(**changes: Any) -> Inspection:
    row: dict[str, Any] = {
        "id": INSPECTION_ID,
        "status": "completed",
        "quality_score": Decimal("87.50"),
        "freshness": "fresh",
        "visual_defects": "none",
        "shelf_life_days": 14,
    }
    return Inspection(**(row | changes))


def reading(
    id: int,
    sensor_id: str = "T-01",
    sensor_type: str = "temperature",
    value: float = 4.0,
    *,
    age: timedelta = timedelta(minutes=5),
    status: str = "active",
    unit: str = "C",
    now: datetime = NOW,
) -> SensorReading:
    return SensorReading(
        id=id,
        location_id=LOCATION,
        sensor_id=sensor_id,
        sensor_type=sensor_type,
        value=value,
        unit=unit,
        reading_time=now - age,
        status=status,
    )


def pest(
    n: int,
    severity: str = "low",
    *,
    age: timedelta = timedelta(days=1),
    pest_type: str = "weevil",
    confidence: float = 0.9,
) -> PestDetection:
    return PestDetection(
        id=uid(n),
        location_id=LOCATION,
        pest_type=pest_type,
        severity=severity,
        confidence=confidence,
        detected_at=NOW - age,
    )


def cert(
    n: int,
    type: str = "organic",
    status: str = "valid",
    expiry: date | None = date(2027, 6, 30),
    **changes: Any,
) -> Certificate:
    row: dict[str, Any] = {
        "id": uid(n),
        "vendor_id": VENDOR,
        "type": type,
        "issuer": "Control Body",
        "status": status,
        "expiry_date": expiry,
        "document_url": None,
        "score": 90,
    }
    return Certificate(**(row | changes))


def build(
    *,
    booking_row: Booking | None = None,
    inspection_row: Inspection | None = None,
    readings: list[SensorReading] | tuple[SensorReading, ...] = (),
    pests: list[PestDetection] | tuple[PestDetection, ...] = (),
    certificates: list[Certificate] | tuple[Certificate, ...] = (),
    deleted: bool = False,
    now: datetime = NOW,
) -> Snapshot:
    return build_snapshot(
        booking_row or booking(),
        inspection=inspection_row,
        readings=readings,
        pests=pests,
        certificates=certificates,
        deleted=deleted,
        now=now,
    )


# --- identity and booking details ----------------------------------------------------------


def test_identity_and_booking_fields_are_copied() -> None:
    b = booking()
    snap = build(booking_row=b)
    assert snap.id == snapshot_id(b.id)
    assert snap.booking_id == b.id
    for field in BOOKING_FIELDS:
        assert getattr(snap, field) == getattr(b, field), field


def test_nullable_booking_fields_stay_null() -> None:
    snap = build(
        booking_row=booking(grade=None, start_date=None, end_date=None, duration_days=None)
    )
    assert (snap.grade, snap.start_date, snap.end_date, snap.duration_days) == (None,) * 4


def test_snapshot_id_is_stable_across_builds() -> None:
    assert build().id == build(now=NOW + timedelta(days=30)).id == snapshot_id(BOOKING_ID)
    assert build(booking_row=booking(id=uid(7))).id != snapshot_id(BOOKING_ID)


def test_empty_parts() -> None:
    snap = build()
    assert snap.sensors == {}
    assert snap.sensor_summary == {}
    assert (snap.pest_events, snap.pest_count, snap.has_pest_alerts) == ([], 0, False)
    assert (snap.certificates, snap.is_certified, snap.certification_types) == ([], False, [])
    assert snap.metadata.model_dump() == {
        "is_certified": False,
        "pest_alert_active": False,
        "sensor_health": "unknown",
    }


# --- quality -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("booking_row", "inspection_row"),
    [
        pytest.param(booking(), None, id="inspection-not-seen"),
        pytest.param(booking(), inspection(id=uid(99)), id="other-inspection"),
        pytest.param(booking(ai_inspection_id=None), inspection(), id="booking-without-inspection"),
    ],
)
def test_quality_is_null_without_the_booking_inspection(
    booking_row: Booking, inspection_row: Inspection | None
) -> None:
    snap = build(booking_row=booking_row, inspection_row=inspection_row)
    assert {f: getattr(snap, f) for f in QUALITY_FIELDS} == dict.fromkeys(QUALITY_FIELDS)


def test_quality_from_the_matching_inspection() -> None:
    snap = build(inspection_row=inspection())
    assert {f: getattr(snap, f) for f in QUALITY_FIELDS} == {
        "inspection_id": INSPECTION_ID,
        "inspection_status": "completed",
        "quality_score": 87.5,
        "freshness": "fresh",
        "visual_defects": "none",
        "shelf_life_days": 14,
    }
    assert type(snap.quality_score) is float


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        pytest.param(Decimal("87.50"), 87.5, id="numeric-5-2"),
        pytest.param(Decimal("0.01"), 0.01, id="smallest"),
        pytest.param(Decimal("999.99"), 999.99, id="largest"),
        pytest.param(None, None, id="not-scored-yet"),
    ],
)
def test_quality_score_as_float(score: Decimal | None, expected: float | None) -> None:
    snap = build(inspection_row=inspection(quality_score=score, status="pending"))
    assert snap.quality_score == expected
    assert snap.inspection_status == "pending"


# --- sensors -------------------------------------------------------------------------------


def test_sensors_latest_reading_per_type() -> None:
    readings = [
        reading(1, "T-01", value=4.0, age=timedelta(minutes=20)),
        reading(2, "T-02", value=5.5, age=timedelta(minutes=3)),
        reading(3, "T-01", value=4.2, age=timedelta(minutes=10)),
        reading(4, "H-01", "humidity", 91.5, unit="%", age=timedelta(minutes=7)),
    ]
    snap = build(readings=readings)
    assert snap.sensors == {
        "temperature": SensorValue(
            value=5.5, unit="C", reading_time=NOW - timedelta(minutes=3), status="active"
        ),
        "humidity": SensorValue(
            value=91.5, unit="%", reading_time=NOW - timedelta(minutes=7), status="active"
        ),
    }


@pytest.mark.parametrize("reverse", [False, True], ids=["ascending-ids", "descending-ids"])
def test_sensors_reading_time_tie_goes_to_greatest_id(reverse: bool) -> None:
    readings = [
        reading(10, "T-01", value=1.0, age=timedelta(minutes=5)),
        reading(12, "T-02", value=2.0, age=timedelta(minutes=5)),
        reading(11, "T-03", value=3.0, age=timedelta(minutes=5)),
    ]
    snap = build(readings=readings[::-1] if reverse else readings)
    assert snap.sensors["temperature"].value == 2.0


def test_sensors_carry_the_stored_status() -> None:
    snap = build(readings=[reading(1, status="calibrating")])
    assert snap.sensors["temperature"].status == "calibrating"


def test_latest_per_sensor() -> None:
    readings = [
        reading(1, "T-01", age=timedelta(minutes=9)),
        reading(3, "T-01", age=timedelta(minutes=2)),
        reading(2, "T-01", age=timedelta(minutes=2)),  # same time as 3, smaller id
        reading(4, "H-01", "humidity", age=timedelta(hours=3)),
    ]
    assert {k: v.id for k, v in latest_per_sensor(readings).items()} == {"T-01": 3, "H-01": 4}
    assert latest_per_sensor([]) == {}


def test_sensor_summary_over_latest_reading_of_each_sensor() -> None:
    readings = [
        reading(1, "T-01", value=100.0, age=timedelta(minutes=30)),  # superseded by id 2
        reading(2, "T-01", value=4.0, age=timedelta(minutes=10)),
        reading(3, "T-02", value=5.0, age=timedelta(minutes=50)),
        reading(4, "T-03", value=9.0, age=timedelta(minutes=1)),
        reading(5, "C-01", "co2", 800.0, unit="ppm"),
    ]
    assert build(readings=readings).sensor_summary == {
        "temperature_avg": 6.0,
        "temperature_min": 4.0,
        "temperature_max": 9.0,
        "co2_avg": 800.0,
        "co2_min": 800.0,
        "co2_max": 800.0,
    }


# A combined device: one sensor_id reporting several types. It counts in each of its types, and
# its newest reading of one type never hides its latest reading of another
# (docs/snapshot-contract.md).
M = timedelta(minutes=1)


@pytest.mark.parametrize(
    ("readings", "sensors", "summary"),
    [
        pytest.param(
            [
                reading(1, "TH-01", "temperature", 3.5, age=10 * M),
                reading(2, "TH-01", "humidity", 88.0, unit="%", age=2 * M),
            ],
            {"temperature": (3.5, 10), "humidity": (88.0, 2)},
            {"temperature": (3.5, 3.5, 3.5), "humidity": (88.0, 88.0, 88.0)},
            id="one-device-two-types",
        ),
        pytest.param(
            [
                reading(1, "TH-01", "temperature", 3.0, age=30 * M),
                reading(2, "TH-01", "temperature", 5.0, age=20 * M),
                reading(3, "TH-01", "humidity", 90.0, unit="%", age=1 * M),
                reading(4, "T-02", "temperature", 4.0, age=25 * M),
            ],
            {"temperature": (5.0, 20), "humidity": (90.0, 1)},
            {"temperature": (4.5, 4.0, 5.0), "humidity": (90.0, 90.0, 90.0)},
            id="device-latest-of-each-type-beside-a-plain-sensor",
        ),
        pytest.param(
            [
                reading(1, "TH-01", "temperature", 2.0, age=5 * M),
                reading(2, "TH-01", "humidity", 80.0, unit="%", age=5 * M),
                reading(3, "TH-02", "temperature", 6.0, age=4 * M),
                reading(4, "TH-02", "humidity", 70.0, unit="%", age=6 * M),
            ],
            {"temperature": (6.0, 4), "humidity": (80.0, 5)},
            {"temperature": (4.0, 2.0, 6.0), "humidity": (75.0, 70.0, 80.0)},
            id="two-devices-same-instant",
        ),
        pytest.param(
            [
                reading(1, "TH-01", "temperature", 2.0, age=90 * M),
                *[
                    reading(10 + i, "TH-01", "humidity", 80.0 + i, unit="%", age=i * M)
                    for i in range(20)
                ],
            ],
            {"temperature": (2.0, 90), "humidity": (80.0, 0)},
            {"temperature": (2.0, 2.0, 2.0), "humidity": (80.0, 80.0, 80.0)},
            id="a-stream-of-one-type-keeps-the-other",
        ),
    ],
)
def test_combined_device_counts_in_each_of_its_types(
    readings: list[SensorReading],
    sensors: dict[str, tuple[float, int]],
    summary: dict[str, tuple[float, float, float]],
) -> None:
    snap = build(readings=readings)
    assert {t: (s.value, (NOW - s.reading_time) // M) for t, s in snap.sensors.items()} == sensors
    assert snap.sensor_summary == {
        f"{t}_{stat}": value
        for t, values in summary.items()
        for stat, value in zip(("avg", "min", "max"), values, strict=True)
    }


def test_latest_per_sensor_type() -> None:
    readings = [
        reading(1, "TH-01", "temperature", age=9 * M),
        reading(2, "TH-01", "humidity", age=1 * M),
        reading(3, "TH-01", "temperature", age=4 * M),
    ]
    latest = latest_per_sensor_type(readings)
    assert {k: v.id for k, v in latest.items()} == {
        ("TH-01", "temperature"): 3,
        ("TH-01", "humidity"): 2,
    }
    assert {k: v.id for k, v in latest_per_sensor(readings).items()} == {"TH-01": 2}


# Half away from zero on the value's shortest decimal text. Most of these decimal ties are not
# ties in binary (2.675 is stored as 2.67499999999999982236431605997495353221893310546875), so
# Python's round() gives 2.67 where the contract, like Postgres' round(numeric), gives 2.68.
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(2.675, 2.68, id="2.675-binary-below-tie"),
        pytest.param(1.005, 1.01, id="1.005"),
        pytest.param(-1.005, -1.01, id="neg-1.005"),
        pytest.param(-2.675, -2.68, id="neg-2.675"),
        pytest.param(0.125, 0.13, id="exact-binary-tie-not-bankers"),
        pytest.param(-0.125, -0.13, id="neg-exact-binary-tie"),
        pytest.param(-0.005, -0.01, id="neg-half-cent"),
        pytest.param(12.3449, 12.34, id="below-half"),
        pytest.param(-12.3451, -12.35, id="neg-above-half"),
        pytest.param(7.0, 7.0, id="integral"),
        pytest.param(1e-7, 0.0, id="tiny"),
    ],
)
def test_sensor_summary_rounds_half_away_from_zero(value: float, expected: float) -> None:
    summary = build(readings=[reading(1, value=value)]).sensor_summary
    assert summary == dict.fromkeys(
        ("temperature_avg", "temperature_min", "temperature_max"), expected
    )


def test_sensor_summary_rounds_a_negative_zero_to_zero() -> None:
    summary = build(readings=[reading(1, value=-0.004)]).sensor_summary
    assert all(v == 0.0 and math.copysign(1.0, v) == 1.0 for v in summary.values())


@pytest.mark.parametrize(
    ("values", "avg"),
    [
        pytest.param((1.0, 2.0, 2.0), 1.67, id="repeating"),
        pytest.param((-1.0, -2.0, -2.0), -1.67, id="neg-repeating"),
        pytest.param((1.01, 1.0), 1.01, id="mean-1.005"),  # float arithmetic: 1.0049999...
        pytest.param((-1.01, -1.0), -1.01, id="neg-mean-1.005"),
        pytest.param((0.1, 0.2), 0.15, id="0.1+0.2"),
        pytest.param((-3.5, 3.5), 0.0, id="cancels"),
    ],
)
def test_sensor_summary_average_is_computed_in_decimal(
    values: tuple[float, ...], avg: float
) -> None:
    readings = [reading(i, f"T-{i:02d}", value=v) for i, v in enumerate(values, 1)]
    assert build(readings=readings).sensor_summary["temperature_avg"] == avg


# --- pest events ---------------------------------------------------------------------------

WEEK = timedelta(days=7)


@pytest.mark.parametrize(
    ("age", "inside"),
    [
        pytest.param(WEEK, True, id="exactly-7-days"),
        pytest.param(WEEK - MICRO, True, id="just-inside"),
        pytest.param(WEEK + MICRO, False, id="just-outside"),
        pytest.param(timedelta(days=30), False, id="old"),
        pytest.param(timedelta(0), True, id="now"),
        pytest.param(-timedelta(minutes=5), True, id="future-clock-skew"),
    ],
)
def test_pest_window_boundary(age: timedelta, inside: bool) -> None:
    snap = build(pests=[pest(1, "high", age=age)])
    assert snap.pest_count == int(inside)
    assert snap.has_pest_alerts is inside


def test_pest_events_newest_first_ties_by_id_descending() -> None:
    pests = [
        pest(1, age=timedelta(days=3), pest_type="a"),
        pest(5, age=timedelta(days=1), pest_type="b"),
        pest(3, age=timedelta(days=1), pest_type="c"),
        pest(4, age=timedelta(days=1), pest_type="d"),
        pest(2, age=timedelta(days=8), pest_type="e"),
    ]
    snap = build(pests=pests)
    assert [e.pest_type for e in snap.pest_events] == ["b", "d", "c", "a"]
    assert snap.pest_count == 4
    assert snap.pest_events[0] == PestEvent(
        pest_type="b", severity="low", confidence=0.9, detected_at=NOW - timedelta(days=1)
    )


@pytest.mark.parametrize(
    ("severities", "alert"),
    [
        pytest.param(("low",), False, id="low"),
        pytest.param(("medium",), True, id="medium"),
        pytest.param(("high",), True, id="high"),
        pytest.param(("critical",), True, id="critical"),
        pytest.param(("low", "low", "critical"), True, id="any"),
        pytest.param(("info",), False, id="unknown-severity"),
    ],
)
def test_pest_alerts_by_severity(severities: tuple[str, ...], alert: bool) -> None:
    snap = build(pests=[pest(i, s) for i, s in enumerate(severities)])
    assert snap.has_pest_alerts is alert
    assert snap.metadata.pest_alert_active is alert
    assert snap.pest_count == len(severities)


def test_pest_alerts_ignore_events_outside_the_window() -> None:
    snap = build(pests=[pest(1, "critical", age=timedelta(days=9)), pest(2, "low")])
    assert (snap.pest_count, snap.has_pest_alerts) == (1, False)


# --- certificates --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "expiry", "effective"),
    [
        pytest.param("valid", date(2027, 6, 30), "valid", id="valid"),
        pytest.param("valid", TODAY, "valid", id="valid-expiring-today"),
        pytest.param("valid", TODAY - timedelta(days=1), "expired", id="stored-valid-but-expired"),
        pytest.param("valid", None, "valid", id="no-expiry"),
        pytest.param("revoked", date(2027, 6, 30), "revoked", id="revoked"),
        pytest.param("revoked", date(2020, 1, 1), "expired", id="revoked-and-expired"),
        pytest.param("pending", None, "pending", id="pending"),
        pytest.param("expired", date(2027, 6, 30), "expired", id="stored-expired"),
    ],
)
def test_certificate_effective_status(stored: str, expiry: date | None, effective: str) -> None:
    snap = build(certificates=[cert(1, status=stored, expiry=expiry)])
    assert [c.status for c in snap.certificates] == [effective]
    assert snap.is_certified is (effective == "valid")
    assert snap.metadata.is_certified is snap.is_certified
    assert snap.certification_types == (["organic"] if effective == "valid" else [])


def test_certificate_view_fields() -> None:
    c = cert(1, "haccp", issuer="FoodSafe", document_url="https://x/1.pdf", score=None)
    assert build(certificates=[c]).certificates == [
        CertificateView(
            id=uid(1),
            type="haccp",
            issuer="FoodSafe",
            status="valid",
            expiry_date=date(2027, 6, 30),
            document_url="https://x/1.pdf",
            score=None,
        )
    ]


def test_certificates_ordered_by_type_then_id_and_types_of_valid_ones() -> None:
    certificates = [
        cert(4, "organic"),
        cert(2, "organic"),
        cert(3, "haccp", "revoked"),
        cert(1, "gap", expiry=None),
        cert(5, "iso22000", expiry=TODAY - timedelta(days=2)),
    ]
    snap = build(certificates=certificates)
    assert [(c.type, c.id.int) for c in snap.certificates] == [
        ("gap", 1),
        ("haccp", 3),
        ("iso22000", 5),
        ("organic", 2),
        ("organic", 4),
    ]
    assert snap.certification_types == ["gap", "organic"]
    assert snap.is_certified is True


def test_expiry_uses_the_utc_date_of_now() -> None:
    c = cert(1, expiry=date(2026, 11, 19))
    # 01:00 on the 20th in UTC+05:00 is still the 19th in UTC: not expired yet.
    local = datetime(2026, 11, 20, 1, 0, tzinfo=timezone(timedelta(hours=5)))
    assert build(certificates=[c], now=local).certificates[0].status == "valid"
    assert build(certificates=[c], now=local + timedelta(hours=5)).certificates[0].status == (
        "expired"
    )


# --- sensor health -------------------------------------------------------------------------

HOUR = timedelta(hours=1)


@pytest.mark.parametrize(
    ("readings", "health"),
    [
        pytest.param([], "unknown", id="unknown-no-readings"),
        pytest.param([reading(1)], "ok", id="ok-one"),
        pytest.param(
            [reading(1, "T-01", age=HOUR - MICRO), reading(2, "H-01", "humidity")],
            "ok",
            id="ok-just-under-an-hour",
        ),
        pytest.param([reading(1, age=HOUR)], "offline", id="offline-exactly-an-hour"),
        pytest.param(
            [reading(1, "T-01"), reading(2, "T-02", age=2 * HOUR)], "degraded", id="degraded-stale"
        ),
        pytest.param(
            [reading(1, "T-01"), reading(2, "T-02", status="inactive")],
            "degraded",
            id="degraded-inactive",
        ),
        pytest.param(
            [reading(1, "T-01", status="fault"), reading(2, "T-02", age=3 * HOUR)],
            "offline",
            id="offline-none-fresh-and-active",
        ),
        pytest.param(
            [reading(1, "T-01", age=3 * HOUR), reading(2, "T-01", age=timedelta(minutes=1))],
            "ok",
            id="ok-only-latest-per-sensor-counts",
        ),
        pytest.param(
            [reading(1, "T-01", age=timedelta(minutes=1)), reading(2, "T-01", age=3 * HOUR)],
            "ok",
            id="ok-older-stale-reading-ignored",
        ),
        pytest.param(
            [reading(1, "T-01"), reading(2, "T-01", age=-timedelta(minutes=1), status="fault")],
            "offline",
            id="offline-latest-is-faulty",
        ),
        pytest.param([reading(1, age=-timedelta(minutes=10))], "ok", id="ok-future-clock-skew"),
        # A combined device is up when its newest report, of any type, is fresh and active.
        pytest.param(
            [
                reading(1, "TH-01", "temperature", age=3 * HOUR),
                reading(2, "TH-01", "humidity", unit="%", age=timedelta(minutes=2)),
            ],
            "ok",
            id="ok-device-newest-report-of-any-type",
        ),
        pytest.param(
            [
                reading(1, "TH-01", "temperature", age=timedelta(minutes=2)),
                reading(2, "TH-01", "humidity", unit="%", age=3 * HOUR),
                reading(3, "T-02", age=2 * HOUR),
            ],
            "degraded",
            id="degraded-device-fresh-other-sensor-stale",
        ),
        pytest.param(
            [
                reading(1, "TH-01", "temperature", age=timedelta(minutes=2)),
                reading(2, "TH-01", "humidity", unit="%", age=timedelta(minutes=1), status="fault"),
            ],
            "offline",
            id="offline-device-newest-report-faulty",
        ),
    ],
)
def test_sensor_health(readings: list[SensorReading], health: str) -> None:
    assert build(readings=readings).metadata.sensor_health == health


# --- status --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("booking_status", "deleted", "status"),
    [
        ("pending", False, "ready_to_publish"),
        ("confirmed", False, "ready_to_publish"),
        ("active", False, "ready_to_publish"),
        ("completed", False, "completed"),
        ("cancelled", False, "withdrawn"),
        ("pending", True, "withdrawn"),
        ("confirmed", True, "withdrawn"),
        ("active", True, "withdrawn"),
        ("completed", True, "withdrawn"),
        ("cancelled", True, "withdrawn"),
    ],
)
def test_status(booking_status: str, deleted: bool, status: str) -> None:
    assert build(booking_row=booking(status=booking_status), deleted=deleted).status == status


# --- duplicates and order ------------------------------------------------------------------


def _full_inputs() -> dict[str, Any]:
    return {
        "readings": [
            reading(1, "T-01", value=4.0, age=timedelta(minutes=10)),
            reading(2, "T-02", value=5.0, age=2 * HOUR),
            reading(3, "H-01", "humidity", 90.0),
        ],
        "pests": [
            pest(1, "medium"),
            pest(2, age=timedelta(days=2)),
            pest(3, age=timedelta(days=1)),
        ],
        "certificates": [cert(1), cert(2, "haccp", "revoked"), cert(3, "gap")],
    }


def test_input_order_and_exact_duplicates_do_not_matter() -> None:
    inputs = _full_inputs()
    base = build(**inputs)
    shuffled = {k: v[::-1] for k, v in inputs.items()}
    doubled = {k: v + v for k, v in inputs.items()}
    assert build(**shuffled) == base
    assert build(**doubled) == base
    assert content_hash(build(**shuffled)) == content_hash(build(**doubled)) == content_hash(base)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(
            reading(1, value=1.0), reading(1, value=2.0, age=timedelta(minutes=1)), id="reading"
        ),
        pytest.param(pest(1, "low"), pest(1, "critical"), id="pest"),
        pytest.param(cert(1, status="valid"), cert(1, status="revoked"), id="certificate"),
    ],
)
def test_conflicting_rows_with_one_id_resolve_independently_of_order(
    first: Any, second: Any
) -> None:
    kind: dict[type, str] = {
        SensorReading: "readings",
        PestDetection: "pests",
        Certificate: "certificates",
    }
    key = kind[type(first)]
    one: dict[str, Any] = {key: [first, second]}
    other: dict[str, Any] = {key: [second, first]}
    assert build(**one) == build(**other)


@pytest.mark.parametrize(
    "rows",
    [
        pytest.param({"readings": [reading(1, value=0.0), reading(1, value=-0.0)]}, id="reading"),
        pytest.param(
            {"pests": [pest(1, confidence=0.0), pest(1, confidence=-0.0)]}, id="pest-confidence"
        ),
    ],
)
def test_a_negative_zero_gives_the_same_hash_as_zero(rows: dict[str, list[Any]]) -> None:
    # double precision columns keep -0.0, which equals 0.0 but renders as "-0.0"
    ((key, pair),) = rows.items()
    one = build(**{key: pair})
    other = build(**{key: pair[::-1]})
    assert one == other
    assert content_hash(one) == content_hash(other)
    assert '"-0.0"' not in one.model_dump_json() and "-0.0" not in one.model_dump_json()


# --- next_deadline -------------------------------------------------------------------------


def test_no_deadline_without_time_dependent_inputs() -> None:
    assert next_deadline(readings=[], pests=[], certificates=[], now=NOW) is None


@pytest.mark.parametrize(
    ("pests", "deadline"),
    [
        pytest.param([pest(1, age=timedelta(days=2))], NOW + timedelta(days=5) + MICRO, id="one"),
        pytest.param(
            [pest(1, age=timedelta(days=2)), pest(2, age=timedelta(days=6))],
            NOW + timedelta(days=1) + MICRO,
            id="oldest-in-window-first",
        ),
        pytest.param([pest(1, age=WEEK)], NOW + MICRO, id="at-the-boundary"),
        pytest.param([pest(1, age=WEEK + MICRO)], None, id="already-out"),
    ],
)
def test_deadline_pest_leaves_the_window(
    pests: list[PestDetection], deadline: datetime | None
) -> None:
    assert next_deadline(readings=[], pests=pests, certificates=[], now=NOW) == deadline


@pytest.mark.parametrize(
    ("readings", "deadline"),
    [
        pytest.param(
            [reading(1, "T-01", age=timedelta(minutes=10)), reading(2, "T-02")],
            NOW + timedelta(minutes=50),
            id="ok-until-first-goes-stale",
        ),
        pytest.param(
            [
                reading(1, "T-01", age=timedelta(minutes=10)),
                reading(2, "T-02"),
                reading(3, "T-03", status="fault"),
            ],
            NOW + timedelta(minutes=55),
            id="degraded-until-last-goes-stale",
        ),
        pytest.param([reading(1, age=2 * HOUR)], None, id="offline-stays-offline"),
        pytest.param([reading(1, status="fault")], None, id="offline-inactive"),
        pytest.param([reading(1, age=HOUR - MICRO)], NOW + MICRO, id="about-to-go-stale"),
    ],
)
def test_deadline_sensor_health_changes(
    readings: list[SensorReading], deadline: datetime | None
) -> None:
    assert next_deadline(readings=readings, pests=[], certificates=[], now=NOW) == deadline


@pytest.mark.parametrize(
    ("certificate", "deadline"),
    [
        pytest.param(cert(1, expiry=TODAY), datetime(2026, 11, 21, tzinfo=UTC), id="today"),
        pytest.param(
            cert(1, "gap", "pending", expiry=date(2027, 1, 31)),
            datetime(2027, 2, 1, tzinfo=UTC),
            id="pending",
        ),
        pytest.param(cert(1, expiry=TODAY - timedelta(days=1)), None, id="already-expired"),
        pytest.param(cert(1, "gap", "expired", expiry=date(2027, 1, 1)), None, id="stored-expired"),
        pytest.param(cert(1, expiry=None), None, id="no-expiry"),
        pytest.param(cert(1, expiry=date.max), None, id="date-max"),
    ],
)
def test_deadline_certificate_expires(certificate: Certificate, deadline: datetime | None) -> None:
    assert next_deadline(readings=[], pests=[], certificates=[certificate], now=NOW) == deadline


def test_deadline_is_the_earliest_and_the_snapshot_changes_there() -> None:
    inputs = _full_inputs()
    deadline = next_deadline(now=NOW, **inputs)
    # Degraded (T-02 is stale) until the last fresh sensor, H-01, goes stale at NOW + 55 min;
    # the pest events leave the window days later.
    assert deadline == NOW + timedelta(minutes=55)
    assert build(now=deadline - MICRO, **inputs) == build(**inputs)
    assert build(now=deadline, **inputs).metadata.sensor_health == "offline"


def test_now_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        build(now=NOW.replace(tzinfo=None))
    with pytest.raises(ValueError, match="timezone-aware"):
        next_deadline(readings=[], pests=[], certificates=[], now=NOW.replace(tzinfo=None))


# --- content hash --------------------------------------------------------------------------


def test_content_hash_is_sha256_hex_of_the_content() -> None:
    snap = build(inspection_row=inspection(), **_full_inputs())
    digest = content_hash(snap)
    assert len(digest) == 64
    assert int(digest, 16) >= 0
    assert content_hash(Snapshot.model_validate_json(snap.model_dump_json())) == digest
    assert content_hash(snap.model_copy(update={"quantity_kg": 1201})) != digest


def test_content_hash_ignores_dict_insertion_order() -> None:
    snap = build(readings=_full_inputs()["readings"])
    flipped = snap.model_copy(
        update={
            "sensors": dict(reversed(snap.sensors.items())),
            "sensor_summary": dict(reversed(snap.sensor_summary.items())),
        }
    )
    assert list(flipped.sensors) != list(snap.sensors)
    assert content_hash(flipped) == content_hash(snap)


def test_content_hash_is_stable_across_processes() -> None:
    # The sinks' "identical snapshot writes nothing" guard compares hashes made by different
    # workers and restarts: another interpreter, with another hash seed, must agree.
    snap = build(inspection_row=inspection(), **_full_inputs())
    code = (
        "import sys; from schemas.snapshot import Snapshot; "
        "from streams.builder import content_hash; "
        "print(content_hash(Snapshot.model_validate_json(sys.stdin.read())))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=snap.model_dump_json(),
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=REPO_ROOT,
    )
    assert done.stdout.strip() == content_hash(snap)
