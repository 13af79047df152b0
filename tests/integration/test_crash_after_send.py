"""A worker SIGKILLed right after it stored a key's state with the key's message still in the
producer's buffer: the restarted worker sends the message (streams.agents.batch).

The fault is the worker's own (MIS_FAULT_KILL_AFTER_SEND): once armed, the first key whose
state is stored after it handed a message to a topic of the given suffix kills the process
before the producer could deliver it. The restarted worker reads the same data directory, so
its store holds the state as the killed worker wrote it.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.workers import (
    Worker,
    booking_at_temperature_1,
    insert_temperature,
    synced_temperature,
    wait_for,
)


# The snapshot the booking emits, and the part its location answers with.
@pytest.mark.parametrize("topic", ["-snapshots", "-by-booking"])
def test_a_message_lost_in_the_producer_is_sent_after_the_restart(
    topic: str, stack: Any, pg: Any, tmp_path: Path
) -> None:
    app_id = f"mis-itk-{uuid.uuid4().hex[:8]}"
    arm = tmp_path / "kill-after-send"
    env = {"MIS_FAULT_KILL_AFTER_SEND": str(arm)}
    worker = Worker("k1", app_id, tmp_path, env).start()
    try:
        worker.wait_ready()
        location, booking = booking_at_temperature_1(pg)

        arm.write_text(topic)
        insert_temperature(pg, location, 2.0)
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
            lambda: synced_temperature(pg, booking) == 2.0,
            timeout=60,
        )
    finally:
        worker.stop()
