"""Time as input: ticks for the key-space partitions, and the daily cleanup."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta

from streams.clock import clock
from streams.messages import Evict, Tick, encode
from streams.retry import retrying
from streams.runtime import Runtime, stalls
from streams.sinks.postgres import expired_terminal, prune_history

log = logging.getLogger(__name__)
_TICK = encode(Tick())
_EVICT = encode(Evict())


@dataclass(frozen=True)
class Cleaned:
    evicted: int
    #: history versions deleted; None when MIS_HISTORY_KEEP_DAYS=0 keeps them all
    pruned: int | None


async def cleanup(rt: Runtime) -> Cleaned:
    """Evict completed and withdrawn bookings finished longer ago than the retention period, and
    prune the history older than its own.

    Each eviction goes through the booking's own partition: it unsubscribes the booking, drops
    its state and tombstones its snapshot, upon which the sink deletes the row and the listing.
    """
    settings, now = rt.settings, clock()
    cutoff = now - timedelta(days=settings.cleanup_after_days)
    rows = await retrying(
        "postgres",
        lambda: expired_terminal(settings.pg_dsn, cutoff),
        max_delay=settings.sink_retry_max_s,
    )
    for booking_id in rows:
        await rt.topics.bookings.send(key=str(booking_id).encode(), value=_EVICT)
    log.info("cleanup evicting=%d cutoff=%s", len(rows), cutoff.isoformat())
    pruned = None
    if settings.history_keep_days:
        kept_from = now - timedelta(days=settings.history_keep_days)
        pruned = await retrying(
            "postgres",
            lambda: prune_history(settings.pg_dsn, kept_from),
            max_delay=settings.sink_retry_max_s,
        )
        log.info("cleanup history pruned=%d cutoff=%s", pruned, kept_from.isoformat())
    return Cleaned(len(rows), pruned)


def register(rt: Runtime) -> None:
    if rt.settings.stall_after_s:
        progress = stalls.Progress(rt.settings.stall_after_s)

        @rt.app.timer(interval=min(rt.settings.stall_after_s / 4, 5.0))
        async def find_stalls() -> None:
            try:
                await stalls.check(rt.app, progress, time.monotonic())
            except Exception as exc:  # a rebalance moved the partitions meanwhile: next time
                log.warning("stall check skipped: %s: %s", type(exc).__name__, exc)
                progress.restart()

    @rt.app.timer(interval=rt.settings.tick_interval_s, on_leader=True)
    async def tick() -> None:
        # The key spaces are ticked too: the first tick of a partition on a worker finds what a
        # crash or a rebalance left pending there (streams.conflate), which is then sent.
        for topic in rt.topics.key_spaces.values():
            for partition in range(rt.settings.partitions):
                await topic.send(key=None, value=_TICK, partition=partition)

    @rt.app.crontab("17 3 * * *", on_leader=True)
    async def daily_cleanup() -> None:
        await cleanup(rt)
