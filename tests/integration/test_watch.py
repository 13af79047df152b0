"""Issue 9: `mis watch` shows a write arriving, with its measured delay to Postgres and MongoDB.

Drives the view's data source (streams.watch.source), not its drawing, against a worker of its
own: one change written to a source table must show up in the figures with the bookings it
reached and a positive delay from its commit to the snapshot topic, the row and the listing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import pytest

from streams import demo, source_db
from streams.config import Settings
from streams.watch.model import STAGES, ChangeRow, Figures
from streams.watch.source import WatchSource
from tests.integration.workers import Worker, pipeline_drained, snapshot_row, wait_for

SETTLE = 60.0  # a fresh group first reads the whole CDC history of the session


@pytest.fixture(scope="module")
def app_id() -> str:
    return f"mis-it-watch-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def worker(stack: Any, app_id: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    with Worker("watch", app_id, tmp_path_factory.mktemp("workers")).running() as w:
        yield w


def test_a_write_shows_up_in_the_watch_with_its_delay_to_postgres_and_mongodb(
    worker: Worker, pg: Any, settings: Settings, app_id: str
) -> None:
    location, vendor = uuid4(), uuid4()
    bookings = [
        source_db.insert(
            pg,
            "storage_bookings",
            **source_db.booking_values(
                farmer_id=uuid4(),
                vendor_id=vendor,
                location_id=location,
                crop_type="onion",
                quantity_kg=300 + i,
                status="confirmed",
            ),
        )
        for i in range(2)
    ]

    def published() -> bool:
        rows = [snapshot_row(pg, b) for b in bookings]
        return all(r is not None and r["synced_hash"] == r["content_hash"] for r in rows)

    wait_for("the bookings' listings", published, timeout=SETTLE)
    # A fresh app id's worker first works off the whole history of the run (its gatherer reads
    # the reading topic from the start, with a window as wide as its backlog), and the watch
    # stops looking for a change's rows GIVE_UP_S after it: the reading is written once the
    # worker has caught up.
    pipeline_drained(app_id, timeout=4 * SETTLE)

    source = WatchSource(settings.model_copy(update={"app_id": app_id}))
    try:
        source.poll(0.0)  # assigned at the topics' ends: what follows is new
        _, _, reading = demo.touch(pg, location)
        wanted = f"at location {str(location)[:8]}"

        def arrived() -> tuple[ChangeRow, Figures] | None:
            figures = source.poll()
            for row in figures.recent:
                if row.table == "sensor_readings" and wanted in row.summary:
                    done = all(row.delays[s][1] == "done" for s in STAGES)
                    # The lag is refreshed every few seconds, once the worker has committed.
                    if done and row.bookings == 2 and app_id in (figures.consumer_lag or {}):
                        return row, figures
            return None

        row, figures = wait_for(
            f"reading {reading} through every stage of the watch", arrived, timeout=SETTLE
        )
    finally:
        source.close()
    snapshot, postgres, mongodb = (row.delays[s][0] for s in STAGES)
    assert snapshot is not None and postgres is not None and mongodb is not None
    # Both sinks write what the snapshot topic carries: after it, whatever their order.
    assert 0 < snapshot <= postgres
    assert snapshot <= mongodb
    assert row.op == "insert" and row.summary.startswith("temperature ")
    assert figures.changes >= 1 and figures.snapshots >= 2
    assert source.problems == {}
    assert figures.dead_letters is not None and figures.dead_letters >= 0
