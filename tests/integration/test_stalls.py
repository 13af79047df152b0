"""A stream partition whose fetched records were dropped (the fetcher past them, nothing read,
nothing acknowledged) is found stalled and read again from its commit (streams.runtime.stalls).

The fault is the worker's own (MIS_FAULT_DROP_FETCHED): once armed with a topic, the next
fetch with records of that topic drops them, as Faust drops records it does not deliver. No
later record reveals the hole, so nothing but the stall check reads them again.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from streams.config import Settings
from tests.integration.workers import (
    Worker,
    booking_at_temperature_1,
    insert_temperature,
    synced_temperature,
    wait_for,
)


def test_records_dropped_after_the_fetch_are_read_again(
    stack: Any, pg: Any, tmp_path: Path
) -> None:
    app_id = f"mis-its-{uuid.uuid4().hex[:8]}"
    arm = tmp_path / "drop-fetched"
    # The readings' topic read by the worker's Faust consumer itself, not by the gatherer's.
    env = {
        "MIS_FAULT_DROP_FETCHED": str(arm),
        "MIS_STALL_AFTER_S": "4",
        "MIS_GATHER_READINGS": "false",
    }
    worker = Worker("s1", app_id, tmp_path, env).start()
    try:
        worker.wait_ready()
        location, booking = booking_at_temperature_1(pg)

        arm.write_text(Settings().cdc_topic("sensor_readings"))
        insert_temperature(pg, location, 2.0)
        wait_for("the reading to be fetched and dropped", lambda: not arm.exists(), timeout=60)
        assert "fetched records of" in worker.tail(40)
        wait_for(
            "the dropped reading in the snapshot",
            lambda: synced_temperature(pg, booking) == 2.0,
            timeout=60,
        )
        log = worker.tail(200)
        assert "stalled for 4 s" in log and "reading it again from offset" in log, log
    finally:
        worker.stop()
