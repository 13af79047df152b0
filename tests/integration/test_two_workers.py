"""Two workers in one group share the partitions; killing one hands its partitions over."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import pytest

from streams import source_db
from streams.config import Settings
from streams.topology import partition_of
from tests.integration.workers import (
    Worker,
    insert_booking,
    insert_temperature,
    snapshot_row,
    synced_temperature,
    wait_for,
)

SESSION = {"MIS_SESSION_TIMEOUT_S": "8"}


@pytest.fixture
def pair(stack: Any, tmp_path: Any) -> Iterator[tuple[Worker, Worker]]:
    app_id = f"mis-it2-{uuid.uuid4().hex[:8]}"
    workers = (
        Worker("a", app_id, tmp_path, SESSION).start(),
        Worker("b", app_id, tmp_path, SESSION).start(),
    )
    try:
        for w in workers:
            w.wait_ready()
        yield workers
    finally:
        for w in workers:
            w.stop()


def _bookings_on_every_partition(settings: Settings) -> list[UUID]:
    """Booking ids chosen so that every partition of the booking topic holds some."""
    ids: list[UUID] = []
    seen: dict[int, int] = {}
    while len(ids) < 2 * settings.partitions:
        candidate = uuid4()
        p = partition_of(str(candidate), settings.partitions)
        if seen.get(p, 0) < 2:
            seen[p] = seen.get(p, 0) + 1
            ids.append(candidate)
    return ids


def test_sigkill_of_one_worker_loses_no_change(
    pair: tuple[Worker, Worker], pg: Any, mongo_db: Any, settings: Settings
) -> None:
    a, b = pair
    vendor = uuid4()
    bookings = _bookings_on_every_partition(settings)
    locations = {bk: uuid4() for bk in bookings}
    for bk in bookings:
        insert_temperature(pg, locations[bk], 1.0)
        insert_booking(pg, bk, locations[bk], vendor)
    wait_for(
        "every booking's first snapshot",
        lambda: all(synced_temperature(pg, bk) == 1.0 for bk in bookings),
        timeout=60,
    )
    assert "partitions" in a.tail(400).lower() and "partitions" in b.tail(400).lower()

    b.kill()  # SIGKILL: no goodbye to the group, uncommitted offsets and all
    for bk in bookings:
        insert_temperature(pg, locations[bk], 2.0)
    cancelled = bookings[: settings.partitions // 2 or 1]
    for bk in cancelled:
        source_db.update(pg, "storage_bookings", bk, status="cancelled")

    wait_for(
        "every change made after the kill",
        lambda: all(synced_temperature(pg, bk) == 2.0 for bk in bookings),
        timeout=90,
    )
    wait_for(
        "the cancellations",
        lambda: all(snapshot_row(pg, bk)["status"] == "withdrawn" for bk in cancelled),
        timeout=30,
    )
    docs = {
        d["booking_id"]: d
        for d in mongo_db["market_listings"].find(
            {"booking_id": {"$in": [str(bk) for bk in bookings]}}
        )
    }
    assert len(docs) == len(bookings)
    assert all(docs[str(bk)]["sensors"]["temperature"]["value"] == 2.0 for bk in bookings)
    assert {docs[str(bk)]["status"] for bk in cancelled} == {"withdrawn"}
    assert a.proc is not None and a.proc.poll() is None
