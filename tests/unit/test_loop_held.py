"""The worker's event-loop watch: a callback that holds the loop is logged and counted."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from streams import metrics
from streams.agents.lifecycle import loop_held


def _held_count() -> float:
    return sum(
        s.value for m in metrics.LOOP_HELD.collect() for s in m.samples if s.name.endswith("_count")
    )


def test_a_held_loop_is_logged_and_a_free_one_is_not(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        watch = asyncio.create_task(loop_held(0.02, 1.0))
        try:
            # Free: the watch wakes on time, over and over.
            before = _held_count()
            deadline = time.monotonic() + 10
            while _held_count() < before + 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert _held_count() >= before + 3
            assert not [r for r in caplog.records if "event loop held" in r.message]
            # Held: a blocking call keeps every task from running for 1.5 s.
            time.sleep(1.5)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not any(
                "event loop held" in r.message for r in caplog.records
            ):
                await asyncio.sleep(0.02)
        finally:
            watch.cancel()

    with caplog.at_level(logging.WARNING, logger="streams.agents.lifecycle"):
        asyncio.run(scenario())
    (held,) = [r for r in caplog.records if "event loop held" in r.message]
    assert float(held.message.split("for ")[1].split("s")[0]) >= 1.4
