"""What a worker does once it has started."""

from __future__ import annotations

import asyncio
import logging
import time

from streams import metrics
from streams.runtime import Runtime

log = logging.getLogger(__name__)


def register(rt: Runtime) -> None:
    @rt.app.task
    async def declare_topics() -> None:
        # Nothing consumes the dead-letter topic inside the pipeline, so Faust would not create
        # it: declare it at start-up with the pipeline's partition count and retention.
        await rt.topics.dead_letters.maybe_declare()

    @rt.app.task
    async def restore_log_level() -> None:
        # At --loglevel warn and above Faust shows a start-up spinner and lowers the root logger
        # to DEBUG to feed it, so every debug call on the hot path builds a log record: about a
        # tenth of a busy worker's time. The spinner is done once tasks run.
        level = rt.settings.log_level.upper().replace("WARNING", "WARN")
        logging.getLogger().setLevel(logging.WARNING if level == "WARN" else level)
        # aiokafka logs every fetch and send at debug level and its records were still built
        # under a quieter root logger; below WARNING it only matters when debugging the client.
        if level != "DEBUG":
            logging.getLogger("aiokafka").setLevel(logging.WARNING)

    @rt.app.task
    async def watch_the_loop() -> None:
        await loop_held(LOOP_PROBE_S, LOOP_HELD_WARN_S)


# The event loop runs the agents, the timers and the HTTP API: a callback that holds it delays
# every one of them, and a request waits past its MIS_API_TIMEOUT_S without having run.
LOOP_PROBE_S = 0.25
LOOP_HELD_WARN_S = 2.0


async def loop_held(probe_s: float, warn_s: float) -> None:
    """Measure how late the loop wakes a sleep of ``probe_s``; log each time it is late by
    ``warn_s`` or more."""
    while True:
        asked = time.monotonic()
        await asyncio.sleep(probe_s)
        held = max(0.0, time.monotonic() - asked - probe_s)
        metrics.LOOP_HELD.observe(held)
        if held >= warn_s:
            log.warning("event loop held for %.1fs: agents, timers and requests waited", held)
