"""The pure parts of ``mis replay | backfill | republish`` (streams.ops), without a broker."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from schemas.snapshot import SnapshotRecord
from streams.ops import backfill, follow, rebuild, replay, republish, terminal
from streams.ops.errors import OpsError
from streams.ops.replay import ReplayRequest
from streams.samples import full_record
from streams.sinks.mongo import listing_document
from streams.sinks.records import record_from_row

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
CDC = [("sg.public.storage_bookings", 0), ("sg.public.storage_bookings", 1)]
MARKS = {CDC[0]: (0, 40), CDC[1]: (5, 9), ("app-by-booking", 0): (0, 70)}


# --- replay: arguments and plan -------------------------------------------------------------


def test_a_position_is_topic_partition_offset() -> None:
    assert replay.parse_position("sg.public.certificates:3:120") == (
        ("sg.public.certificates", 3),
        120,
    )
    for bad in ("sg.public.certificates:3", "t:x:1", "t:1:-1", ":1:1"):
        with pytest.raises(OpsError, match="topic:partition:offset"):
            replay.parse_position(bad)


def test_a_time_without_zone_is_utc() -> None:
    assert replay.parse_time("2026-05-01T12:00:00") == datetime(2026, 5, 1, 12, tzinfo=UTC)
    assert replay.parse_time("2026-05-01T12:00:00Z") == datetime(2026, 5, 1, 12, tzinfo=UTC)
    with pytest.raises(OpsError, match="ISO 8601"):
        replay.parse_time("yesterday")


@pytest.mark.parametrize("mode", ["datetime", "offsets"])
def test_a_table_rebuild_needs_the_whole_history(mode: Any) -> None:
    request = ReplayRequest(mode=mode, at=NOW, positions={CDC[0]: 1}, rebuild=True)
    with pytest.raises(OpsError, match="--to-earliest"):
        replay.check(request)
    replay.check(ReplayRequest(mode="earliest", rebuild=True))


def test_targets_earliest_and_time() -> None:
    assert replay.targets(ReplayRequest(mode="earliest"), CDC, MARKS, {}) == {CDC[0]: 0, CDC[1]: 5}
    at = ReplayRequest(mode="datetime", at=NOW)
    assert replay.targets(at, CDC, MARKS, {CDC[0]: 17, CDC[1]: 9}) == {CDC[0]: 17, CDC[1]: 9}


def test_explicit_positions_must_exist_and_be_in_range() -> None:
    inside = ReplayRequest(mode="offsets", positions={("app-by-booking", 0): 70, CDC[1]: 5})
    assert replay.targets(inside, CDC, MARKS, {}) == {("app-by-booking", 0): 70, CDC[1]: 5}
    with pytest.raises(OpsError, match=r"holds offsets 5\.\.9"):
        replay.targets(ReplayRequest(mode="offsets", positions={CDC[1]: 4}), CDC, MARKS, {})
    with pytest.raises(OpsError, match="not a partition"):
        replay.targets(ReplayRequest(mode="offsets", positions={("x", 0): 0}), CDC, MARKS, {})


# --- follow: reading the group's progress ---------------------------------------------------


def test_progress_counts_committed_offsets_between_start_and_target() -> None:
    sources = {CDC[0]: (0, 40), CDC[1]: (5, 9)}
    assert follow.progress_of({}, sources) == 0
    assert follow.progress_of({CDC[0]: 10, CDC[1]: 100}, sources) == 14
    assert follow.progress_of({CDC[0]: 40, CDC[1]: 9}, sources) == 44


def test_a_partition_never_committed_counts_from_its_floor() -> None:
    targets = {CDC[0]: 0, CDC[1]: 5}
    assert not follow.reached({}, targets, {})
    assert follow.reached({}, targets, {CDC[1]: 5})
    assert follow.reached({CDC[1]: 6}, targets, {})


# --- rebuild: clearing tables and re-keying -------------------------------------------------


def test_only_keys_whose_last_changelog_entry_is_a_value_get_a_tombstone() -> None:
    entries = [(0, b"a", True), (1, b"a", True), (0, b"a", False), (0, b"b", True), (1, b"a", True)]
    assert rebuild.live_keys(entries) == {(0, b"a"): False, (1, b"a"): True, (0, b"b"): True}


# --- backfill: the tables and the notifications ---------------------------------------------


def test_tables_are_source_tables_in_the_public_schema() -> None:
    assert backfill.qualified("storage_bookings") == "public.storage_bookings"
    assert backfill.qualified("public.certificates") == "public.certificates"
    with pytest.raises(OpsError, match="not a source table"):
        backfill.qualified("market_inventory_snapshots")


def test_include_list_entries_are_regular_expressions() -> None:
    include = "public.storage_bookings, public\\.cert.*"
    assert backfill.captured(include, "public.storage_bookings")
    assert backfill.captured(include, "public.certificates")
    assert not backfill.captured(include, "public.sensor_readings")


def test_notifications_as_debezium_sends_them() -> None:
    raw = (
        b'{"id":"backfill-1","type":"TABLE_SCAN_COMPLETED","aggregate_type":"Incremental '
        b'Snapshot","additional_data":{"scanned_collection":"public.storage_bookings",'
        b'"connector_name":"sg","total_rows_scanned":"5","status":"SUCCEEDED"},'
        b'"timestamp":1795864076741}'
    )
    note = backfill.parse_notification(raw)
    assert note is not None
    assert (note.id, note.type, note.aggregate_type) == (
        "backfill-1",
        "TABLE_SCAN_COMPLETED",
        "Incremental Snapshot",
    )
    assert note.data["total_rows_scanned"] == "5" and note.timestamp_ms == 1795864076741
    assert backfill.parse_notification(None) is None
    assert backfill.parse_notification(b"{not json") is None
    assert backfill.parse_notification(b'{"id": "x"}') is None


# --- republish: a row read back is the record it was written from ---------------------------


def _row(record: SnapshotRecord, status: str, synced: datetime) -> dict[str, Any]:
    """The row as psycopg returns it: uuids, datetimes, Decimal, jsonb as Python values."""
    snap = record.snapshot
    row: dict[str, Any] = dict(snap)
    for column in ("sensors", "sensor_summary", "pest_events", "certificates", "metadata"):
        row[column] = snap.model_dump(mode="json")[column]
    row["quality_score"] = Decimal(str(snap.quality_score))
    row["certification_types"] = list(snap.certification_types)
    row.update(
        status=status,
        source_version=record.source_version,
        evaluated_at=record.evaluated_at,
        content_hash=record.content_hash,
        last_synced_at=synced,
        published_at=NOW,
        market_listing_id=str(snap.id),
    )
    return row


def test_a_row_read_back_gives_the_listing_the_publisher_wrote() -> None:
    record = full_record()
    synced = NOW + timedelta(seconds=3)
    row = _row(record, "published", synced)
    published = record.model_copy(
        update={"snapshot": record.snapshot.model_copy(update={"status": "published"})}
    )
    assert record_from_row(row) == published
    # The publisher stamps the listing's published_at and the row's last_synced_at alike.
    assert republish.row_listing(row, NOW + timedelta(days=1)) == listing_document(
        record, "ready_to_publish", synced
    )


# --- terminal -------------------------------------------------------------------------------


def test_rates_durations_and_the_summary() -> None:
    assert terminal.rate(300, 1.5, "events") == "200 events/s"
    assert terminal.rate(3, 0.0) == "-"
    assert terminal.duration(4.25) == "4.2 s" and terminal.duration(125) == "2 min 05 s"
    out = io.StringIO()
    terminal.summary("replay summary", [("events", "12"), ("duration", "3.0 s")], out)
    assert out.getvalue() == "replay summary\n  events    12\n  duration  3.0 s\n"


def test_progress_off_a_terminal_is_one_line_per_update() -> None:
    out = io.StringIO()
    progress = terminal.Progress("replay", 10, stream=out)
    progress.update(3, "replaying", force=True)
    progress.say("workers joined")
    progress.close(10, "caught up")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("replay  3/10 (30%)") and lines[0].endswith("replaying")
    assert lines[1] == "workers joined"
    assert lines[2].startswith("replay  10/10 (100%)") and lines[2].endswith("caught up")
