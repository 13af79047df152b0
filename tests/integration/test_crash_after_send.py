"""A worker SIGKILLed right after it stored a key's state with the key's message still in the
producer's buffer: the restarted worker sends the message (streams.agents.batch).

The fault is the worker's own (MIS_FAULT_KILL_AFTER_SEND): once armed, the first key whose
state is stored after it handed a message to a topic of the given suffix kills the process
before the producer could deliver it. The restarted worker reads the same data directory, so
its store holds the state as the killed worker wrote it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from streams import source_db
from tests.integration.workers import Worker, snapshot_row, wait_for


def _reading(pg: Any, location: UUID, value: float) -> None:
    source_db.insert(
        pg,
        "sensor_readings",
        location_id=location,
        sensor_id="t-1",
        sensor_type="temperature",
        value=value,
        unit="C",
        reading_time=datetime.now(UTC) + timedelta(seconds=value),
    )


def _temperature(pg: Any, booking: UUID) -> float | None:
    row = snapshot_row(pg, booking)
    if row is None or row["synced_hash"] != row["content_hash"] or not row["sensors"]:
        return None
    return float(row["sensors"]["temperature"]["value"])


# The snapshot the booking emits, and the part its location answers with.
@pytest.mark.parametrize("topic", ["-snapshots", "-by-booking"])
def test_a_message_lost_in_the_producer_is_sent_after_the_restart(
    topic: str, stack: Any, pg: Any, tmp_path: Path
) -> None:
    app_id = f"mis-itk-{uuid.uuid4().hex[:8]}"
    arm = tmp_path / "kill-after-send"
    env = {"MIS_FAULT_KILL_AFTER_SEND": str(arm)}
    location, booking = uuid4(), uuid4()
    worker = Worker("k1", app_id, tmp_path, env).start()
    try:
        worker.wait_ready()
        _reading(pg, location, 1.0)
        source_db.insert(
            pg,
            "storage_bookings",
            **source_db.booking_values(
                farmer_id=uuid4(),
                vendor_id=uuid4(),
                location_id=location,
                crop_type="rice",
                quantity_kg=10,
                status="active",
            ),
            id=booking,
        )
        wait_for("the first snapshot", lambda: _temperature(pg, booking) == 1.0, timeout=60)

        arm.write_text(topic)
        _reading(pg, location, 2.0)
        assert worker.proc is not None
        wait_for("the worker to kill itself", lambda: worker.proc.poll() is not None, timeout=60)
        assert worker.proc.returncode == -9, worker.tail()
        assert not arm.exists()
        assert "fault: SIGKILL after a send" in worker.tail(5)

        worker = Worker("k2", app_id, tmp_path, env)
        worker.env["MIS_DATA_DIR"] = str(tmp_path / "k1-data")  # the killed worker's store
        worker.start().wait_ready()
        wait_for(
            "the message the killed worker had not delivered",
            lambda: _temperature(pg, booking) == 2.0,
            timeout=60,
        )
    finally:
        worker.stop()
