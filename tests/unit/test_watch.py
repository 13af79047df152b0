"""The watch's pure parts: reading change events and snapshot records, following a change to the
sinks, the delays, and the text the view shows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from rich.console import Console

from schemas.entities import Row
from schemas.envelope import ChangeEvent, make_version
from schemas.snapshot import snapshot_id
from streams.config import Settings
from streams.watch import arrivals
from streams.watch.arrivals import Arrival
from streams.watch.model import (
    GIVE_UP_S,
    Change,
    Rate,
    SnapshotSeen,
    Tracker,
    delay_text,
    describe,
    parse_change,
    parse_snapshot,
)
from streams.watch.view import lag_text, line, render, touch_command

DATA = Path(__file__).resolve().parents[1] / "data"
T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
LOCATION = "c3e5a7b9-1d2f-4e6a-8b0c-2d4f6a8b0c11"
BOOKING_A = "0b6f1f64-0000-4000-8000-00000000000a"
BOOKING_B = "0b6f1f64-0000-4000-8000-00000000000b"


def records(table: str) -> list[dict[str, Any]]:
    return json.loads((DATA / f"{table}.json").read_text())


def ms(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def reading_change(version: str, committed: datetime = T0, seen: datetime | None = None) -> Change:
    return Change(
        position=("sg.public.sensor_readings", 0, 1),
        table="sensor_readings",
        op="c",
        summary="temperature 4.20 C",
        committed_at=committed,
        version=version,
        concern=("location_id", LOCATION),
        seen_at=seen or committed + ms(0.01),
    )


def seen(booking: str, version: str, at: datetime, location: str = LOCATION) -> SnapshotSeen:
    return SnapshotSeen(booking, (("booking_id", booking), ("location_id", location)), version, at)


V1, V2, V3 = make_version(100, 110), make_version(200, 210), make_version(300, 310)


@pytest.mark.parametrize(
    "table", ["storage_bookings", "crop_inspections", "sensor_readings", "pest_detections"]
)
def test_every_change_event_of_the_fixtures_is_read_with_its_commit_time_and_version(
    table: str,
) -> None:
    for rec in records(table):
        raw = json.dumps(rec["value"]).encode() if rec["value"] is not None else None
        change = parse_change(rec["topic"], rec["partition"], rec["offset"], raw, T0)
        if rec["value"] is None:
            assert change is None  # the tombstone after a delete
            continue
        assert change is not None
        value = rec["value"]
        row = value["before"] if value["op"] == "d" else value["after"]
        assert change.table == table and change.op == value["op"]
        assert change.committed_at == datetime.fromtimestamp(value["source"]["ts_ms"] / 1000, UTC)
        assert change.version == ChangeEvent[Row].model_validate(value).version
        field, column = {
            "storage_bookings": ("booking_id", "id"),
            "crop_inspections": ("inspection_id", "id"),
            "sensor_readings": ("location_id", "location_id"),
            "pest_detections": ("location_id", "location_id"),
        }[table]
        assert change.concern == (field, str(row[column]))


def test_what_is_not_a_change_event_is_skipped() -> None:
    for raw in (b"not json", b"{}", b'{"op": "c", "source": {}}', None):
        assert parse_change("sg.public.sensor_readings", 0, 0, raw, T0) is None
    event = records("certificates")[0]["value"]
    assert parse_change("sg.public.elsewhere", 0, 0, json.dumps(event).encode(), T0) is None


def test_a_snapshot_record_names_its_booking_keys_version_and_time() -> None:
    value = {
        "snapshot": {
            "booking_id": BOOKING_A,
            "location_id": LOCATION,
            "vendor_id": "v",
            "inspection_id": None,
        },
        "source_version": V2,
        "evaluated_at": "2026-11-20T12:00:00Z",
        "content_hash": "x" * 64,
    }
    got = parse_snapshot(json.dumps(value).encode(), 1_795_000_000_123)
    assert got == SnapshotSeen(
        BOOKING_A,
        (("booking_id", BOOKING_A), ("location_id", LOCATION), ("vendor_id", "v")),
        V2,
        datetime.fromtimestamp(1_795_000_000.123, UTC),
    )
    assert parse_snapshot(None, 0) is None  # a tombstone
    assert parse_snapshot(b"{}", 0) is None


def test_a_change_is_followed_to_each_booking_it_reaches_and_then_to_both_sinks() -> None:
    tracker = Tracker(T0)
    change = reading_change(V2)
    tracker.on_change(change)
    assert change.delay("snapshot") == (None, "waiting")
    tracker.on_snapshot(seen(BOOKING_A, V1, T0 + ms(0.05)), T0)  # older: not this change yet
    tracker.on_snapshot(seen(BOOKING_B, V3, T0 + ms(0.2), location="elsewhere"), T0)
    assert change.reached == {}
    tracker.on_snapshot(seen(BOOKING_A, V2, T0 + ms(0.1)), T0)
    tracker.on_snapshot(seen(BOOKING_B, V3, T0 + ms(0.3)), T0)
    assert set(change.reached) == {BOOKING_A, BOOKING_B}
    assert change.delay("snapshot") == (pytest.approx(0.3), "done")
    assert tracker.wanted("postgres", T0) == {BOOKING_A, BOOKING_B}

    # A row still holding an older version does not count; the newer one does.
    tracker.on_arrivals("postgres", [Arrival(BOOKING_A, V1, T0 + ms(0.01))])
    assert change.delay("postgres") == (None, "waiting")
    tracker.on_arrivals("postgres", [Arrival(BOOKING_A, V2, T0 + ms(0.15))])
    assert change.delay("postgres") == (pytest.approx(0.15), "partial")
    tracker.on_arrivals("postgres", [Arrival(BOOKING_B, V3, T0 + ms(0.4))])
    assert change.delay("postgres") == (pytest.approx(0.4), "done")
    assert tracker.wanted("postgres", T0) == set()
    tracker.on_arrivals(
        "mongodb", [Arrival(BOOKING_A, V2, T0 + ms(0.2)), Arrival(BOOKING_B, V3, T0 + ms(0.5))]
    )
    assert change.delay("mongodb") == (pytest.approx(0.5), "done")

    [row] = tracker.figures(T0 + ms(1)).recent
    assert row.bookings == 2 and row.op == "insert"
    assert [delay_text(*row.delays[s]) for s in ("snapshot", "postgres", "mongodb")] == [
        "300 ms",
        "400 ms",
        "500 ms",
    ]


def test_a_snapshot_read_before_its_change_still_counts() -> None:
    tracker = Tracker(T0)
    tracker.on_snapshot(seen(BOOKING_A, V2, T0 + ms(0.08)), T0)
    later = reading_change(V2)
    earlier_version = reading_change(V3)
    tracker.on_change(later)
    tracker.on_change(earlier_version)
    assert later.reached[BOOKING_A].snapshot == T0 + ms(0.08)
    assert earlier_version.reached == {}


def test_a_change_that_reaches_nothing_is_given_up_on() -> None:
    tracker = Tracker(T0)
    tracker.on_change(reading_change(V1))
    [row] = tracker.figures(T0 + ms(1)).recent
    assert {s: d[1] for s, d in row.delays.items()} == dict.fromkeys(row.delays, "waiting")
    [row] = tracker.figures(T0 + ms(GIVE_UP_S + 1)).recent
    assert {s: delay_text(*d) for s, d in row.delays.items()} == dict.fromkeys(row.delays, "-")
    assert tracker.wanted("postgres", T0 + ms(GIVE_UP_S + 1)) == set()


def test_counts_rates_lag_and_dead_letters_reach_the_figures() -> None:
    tracker = Tracker(T0)
    tracker.on_dead_letters(7)
    tracker.on_dead_letters(9)
    tracker.on_lag({"market-snapshots": 3})
    tracker.on_counts(4, 3, 20)
    for i in range(5):
        tracker.on_change(reading_change(V1, committed=T0 + ms(i), seen=T0 + ms(i)))
    f = tracker.figures(T0 + ms(5))
    assert (f.changes, f.dead_letters, f.dead_letters_new) == (5, 9, 2)
    assert (f.rows_written, f.listings_written, f.rows, f.consumer_lag) == (
        4,
        3,
        20,
        {"market-snapshots": 3},
    )
    assert f.changes_per_s == pytest.approx(0.5)
    assert [r.committed_at for r in f.recent] == [T0 + ms(i) for i in range(4, -1, -1)]


def test_a_rate_counts_only_its_window() -> None:
    rate = Rate(window=10)
    rate.add(T0, 30)
    rate.add(T0 + ms(9), 10)
    assert rate.per_s(T0 + ms(9)) == 4.0
    assert rate.per_s(T0 + ms(10.5)) == 1.0
    assert rate.total == 40


@pytest.mark.parametrize(
    ("delay", "state", "text"),
    [
        (0.0854, "done", "85 ms"),
        (0.0854, "partial", "85 ms+"),
        (12.34, "done", "12.3 s"),
        (-0.001, "done", "0 ms"),
        (None, "waiting", "…"),
        (None, "none", "-"),
    ],
)
def test_delay_text(delay: float | None, state: Any, text: str) -> None:
    assert delay_text(delay, state) == text


def test_rows_are_described_by_what_changed() -> None:
    assert describe(
        "sensor_readings",
        {
            "sensor_type": "temperature",
            "value": 4.216,
            "unit": "C",
            "sensor_id": "t-1",
            "location_id": LOCATION,
        },
    ) == ("temperature 4.22 C (t-1) at location c3e5a7b9")
    assert describe(
        "storage_bookings",
        {"id": BOOKING_A, "crop_type": "onion", "quantity_kg": 120, "status": "confirmed"},
    ) == ("booking 0b6f1f64 onion 120 kg confirmed")
    assert describe("certificates", {"type": "organic", "status": "valid", "vendor_id": "abc"}) == (
        "organic valid of vendor abc"
    )


def test_the_sinks_arrivals_are_read_from_the_rows_and_listings_time_fields() -> None:
    row = {"booking_id": BOOKING_A, "source_version": V2, "updated_at": T0}
    assert arrivals.arrival("postgres", BOOKING_A, row) == Arrival(BOOKING_A, V2, T0)
    doc = {"_id": "x", "source_version": V2, "published_at": T0 + ms(1)}
    assert arrivals.arrival("mongodb", BOOKING_A, doc) == Arrival(BOOKING_A, V2, T0 + ms(1))
    assert arrivals.arrival("mongodb", BOOKING_A, None) is None
    assert arrivals.arrival("mongodb", BOOKING_A, {"source_version": V2}) is None
    assert arrivals.listing_filter(BOOKING_A) == {"_id": str(snapshot_id(UUID(BOOKING_A)))}


def test_the_view_shows_the_figures_the_changes_and_the_hint() -> None:
    tracker = Tracker(T0)
    change = reading_change(V2)
    tracker.on_change(change)
    tracker.on_snapshot(seen(BOOKING_A, V2, T0 + ms(0.1)), T0)
    tracker.on_arrivals("postgres", [Arrival(BOOKING_A, V2, T0 + ms(0.2))])
    tracker.on_lag({"market-snapshots": 0})
    tracker.on_dead_letters(2)
    figures = tracker.figures(T0 + ms(0.5))
    console = Console(width=160, record=True, color_system=None)
    console.print(render(figures, Settings(), {"mongodb": "unreachable"}, "mis demo --touch"))
    text = console.export_text()
    assert "temperature 4.20 C" in text
    assert "100 ms" in text and "200 ms" in text and "…" in text
    assert "0 messages" in text and "mongodb: unreachable" in text
    assert "mis demo --touch" in text
    assert line(figures, {}, "market-snapshots").startswith("watch: changes 1, snapshots 1,")


def test_the_lag_is_summed_over_the_groups_and_shown_per_group() -> None:
    assert lag_text(None, "app") == "-"
    assert lag_text({"app": 3}, "app") == "3 messages"
    lag = {"app": 0, "app-sink-mongodb": 1200, "app-sink-postgres": 2}
    assert (
        lag_text(lag, "app") == "1,202 messages (pipeline 0, sink-mongodb 1,200, sink-postgres 2)"
    )


def test_the_hint_names_the_port_only_when_it_is_not_the_default() -> None:
    assert touch_command(Settings()).endswith("mis demo --touch")
    assert "MIS_PG_PORT" not in touch_command(Settings(pg_port=55432))
    assert touch_command(Settings(pg_port=55532)).startswith("MIS_PG_PORT=55532 ")
