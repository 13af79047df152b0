"""mis verify's comparison, without a database: normalisation, the time tolerance, the verdicts.

The SQL half is exercised on the real stack (tests/integration/test_verify.py).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from streams.ops.verify import Sources, canonical_listing, compare, expected

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
BOOKING, FARMER, VENDOR, LOCATION = (UUID(int=n) for n in (1, 2, 3, 4))
GRACE = timedelta(seconds=30)
DAY = timedelta(days=1)


def sources(pest_age: timedelta = DAY, status: str = "confirmed") -> Sources:
    src = Sources()
    src.bookings[BOOKING] = {
        "id": BOOKING,
        "farmer_id": FARMER,
        "vendor_id": VENDOR,
        "location_id": LOCATION,
        "crop_type": "tomato",
        "grade": "A",
        "quantity_kg": 1200,
        "start_date": NOW,
        "end_date": NOW + 30 * DAY,
        "duration_days": 30,
        "status": status,
        "updated_at": NOW - DAY,
        "i_id": None,
    }
    src.sensors[LOCATION] = {
        "temperature": {
            "value": 4.5,
            "unit": "C",
            "reading_time": (NOW - timedelta(minutes=3, microseconds=-1234)).isoformat(),
            "status": "active",
        }
    }
    src.summary[LOCATION] = {"temperature_avg": 4.5, "temperature_min": 4.5, "temperature_max": 4.5}
    src.health[LOCATION] = [(NOW - timedelta(minutes=3), "active")]
    src.pests[LOCATION] = [
        {
            "id": UUID(int=9),
            "pest_type": "moth",
            "severity": "high",
            "confidence": 0.9,
            "detected_at": NOW - pest_age,
        }
    ]
    src.certificates[VENDOR] = [
        {
            "id": UUID(int=7),
            "type": "organic",
            "issuer": None,
            "status": "valid",
            "expiry_date": date(2027, 1, 1),
            "document_url": None,
            "score": 90,
        }
    ]
    return src


def row_of(src: Sources, at: datetime, **changes: Any) -> dict[str, Any]:
    """A market_inventory_snapshots row as the sink would have written it at ``at``."""
    snap = expected(src, BOOKING, None, at)
    finished = snap.pop("finished")
    if snap["status"] == "live":
        snap["status"] = "published"
    return {
        **snap,
        "booking_id": BOOKING,
        "finished_at": at if finished else None,
        "market_listing_id": str(snap["id"]),
        "evaluated_at": at,
        **changes,
    }


def listing_of(row: dict[str, Any]) -> dict[str, Any]:
    """The listing as MongoDB returns it: datetimes in milliseconds, dates as datetimes."""

    def ms(text: str) -> datetime:
        at = datetime.fromisoformat(text)
        return at.replace(microsecond=at.microsecond // 1000 * 1000)

    return {
        **{k: v for k, v in row.items() if k not in ("id", "finished_at")},
        "_id": row["id"],
        "snapshot_id": row["id"],
        "booking_id": str(BOOKING),
        "status": "published" if row["status"] == "published" else row["status"],
        "sensors": {
            t: {**s, "reading_time": ms(s["reading_time"])} for t, s in row["sensors"].items()
        },
        "pest_events": [{**p, "detected_at": ms(p["detected_at"])} for p in row["pest_events"]],
        "certificates": [
            {**c, "expiry_date": datetime.fromisoformat(c["expiry_date"]).replace(tzinfo=UTC)}
            for c in row["certificates"]
        ],
        "evaluated_at": ms(row["evaluated_at"].isoformat()),
    }


def run(src: Sources, rows: dict[UUID, Any], listings: dict[UUID, Any], **kw: Any) -> Any:
    return compare(
        src,
        rows,
        listings,
        now=kw.get("now", NOW),
        grace=kw.get("grace", GRACE),
        auto_publish=True,
        retention=timedelta(days=90),
    )


def test_a_faithful_row_and_listing_are_clean() -> None:
    src = sources()
    row = row_of(src, NOW - timedelta(minutes=1))
    report = run(src, {BOOKING: row}, {BOOKING: listing_of(row)})
    assert report.clean, [f.describe() for f in report.findings]
    assert "lost 0, regressed 0, extra 0" in report.summary()


def test_a_listing_in_milliseconds_and_dates_as_datetimes_is_not_a_difference() -> None:
    view = canonical_listing(listing_of(row_of(sources(), NOW)))
    assert view["sensors"]["temperature"]["reading_time"].endswith(".001000+00:00")
    assert view["certificates"][0]["expiry_date"] == "2027-01-01"


@pytest.mark.parametrize(
    ("aged_out_ago", "grace", "clean"),
    [
        pytest.param(timedelta(seconds=10), GRACE, True, id="deadline-inside-grace"),
        pytest.param(timedelta(seconds=10), timedelta(seconds=5), False, id="grace-too-short"),
        pytest.param(timedelta(minutes=5), GRACE, False, id="tick-missed"),
    ],
)
def test_a_time_driven_change_may_wait_for_a_tick(
    aged_out_ago: timedelta, grace: timedelta, clean: bool
) -> None:
    """A pest event left the window ``aged_out_ago``; the row still shows it."""
    src = sources(pest_age=7 * DAY + aged_out_ago)
    evaluated = NOW - timedelta(hours=1)  # before the event left the window
    row = row_of(src, evaluated)
    assert row["pest_count"] == 1
    report = run(src, {BOOKING: row}, {BOOKING: listing_of(row)}, grace=grace)
    assert report.clean is clean
    if not clean:
        assert {(f.sink, f.kind) for f in report.findings} == {
            ("row", "regressed"),
            ("listing", "regressed"),
        }
        assert "pest_count" in report.findings[0].fields


def test_a_row_written_inside_the_grace_is_judged_at_its_own_evaluation() -> None:
    src = sources(pest_age=7 * DAY - timedelta(seconds=5))  # leaves the window at NOW - 5 s
    row = row_of(src, NOW - timedelta(seconds=8))  # written while it was still inside
    assert row["pest_count"] == 1
    assert run(src, {BOOKING: row}, {BOOKING: listing_of(row)}).clean


def test_each_verdict() -> None:
    src = sources()
    row = row_of(src, NOW)
    lost = run(src, {}, {})
    assert [(f.sink, f.kind) for f in lost.findings] == [("row", "lost")]
    unlisted = run(src, {BOOKING: row}, {})
    assert [(f.sink, f.kind) for f in unlisted.findings] == [("listing", "lost")]
    orphan = run(src, {}, {BOOKING: listing_of(row)})
    assert {(f.sink, f.kind) for f in orphan.findings} == {("listing", "extra"), ("row", "lost")}
    wrong = run(src, {BOOKING: {**row, "quantity_kg": 1}}, {BOOKING: listing_of(row)})
    assert [(f.sink, f.kind, set(f.fields)) for f in wrong.findings] == [
        ("row", "regressed", {"quantity_kg"})
    ]
    assert wrong.findings[0].fields["quantity_kg"] == (1, 1200)


def test_a_deleted_booking_is_withdrawn_with_its_own_details() -> None:
    src = sources()
    row = row_of(src, NOW)
    del src.bookings[BOOKING]
    assert not run(src, {BOOKING: row}, {BOOKING: listing_of(row)}).clean  # still published
    withdrawn = {**row, "status": "withdrawn", "finished_at": NOW, "crop_type": "onion"}
    report = run(src, {BOOKING: withdrawn}, {BOOKING: listing_of(withdrawn)})
    assert report.clean, [f.describe() for f in report.findings]


def test_finished_rows_past_the_retention_are_extra_and_old_finished_bookings_not_lost() -> None:
    src = sources(status="cancelled")
    src.bookings[BOOKING]["updated_at"] = NOW - timedelta(days=200)
    assert run(src, {}, {}).clean  # cleaned up, as it should be
    stale = row_of(src, NOW, finished_at=NOW - timedelta(days=120))
    report = run(src, {BOOKING: stale}, {BOOKING: listing_of(stale)})
    assert {(f.sink, f.kind) for f in report.findings} == {("row", "extra"), ("listing", "extra")}
