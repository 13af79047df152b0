"""Time as input: ticks for the booking partitions, and the daily cleanup."""

from __future__ import annotations

import logging
from datetime import timedelta

from streams import topics
from streams.app import app, settings
from streams.clock import clock
from streams.messages import Evict, Tick, encode
from streams.retry import retrying
from streams.sinks.postgres import expired_terminal

log = logging.getLogger(__name__)
_TICK = encode(Tick())
_EVICT = encode(Evict())


@app.timer(interval=settings.tick_interval_s, on_leader=True)
async def tick() -> None:
    # The key spaces are ticked too: the first tick of a partition on a worker finds what a
    # crash or a rebalance left pending there (streams.conflate), which is then sent.
    for topic in (topics.bookings, topics.locations, topics.vendors, topics.inspections):
        for partition in range(settings.partitions):
            await topic.send(key=None, value=_TICK, partition=partition)


async def cleanup() -> int:
    """Evict completed and withdrawn bookings finished longer ago than the retention period.

    Each eviction goes through the booking's own partition: it unsubscribes the booking, drops
    its state and tombstones its snapshot, upon which the sink deletes the row and the listing.
    """
    cutoff = clock() - timedelta(days=settings.cleanup_after_days)
    rows = await retrying(
        "postgres",
        lambda: expired_terminal(settings.pg_dsn, cutoff),
        max_delay=settings.sink_retry_max_s,
    )
    for booking_id in rows:
        await topics.bookings.send(key=str(booking_id).encode(), value=_EVICT)
    log.info("cleanup evicting=%d cutoff=%s", len(rows), cutoff.isoformat())
    return len(rows)


@app.crontab("17 3 * * *", on_leader=True)
async def daily_cleanup() -> None:
    await cleanup()
