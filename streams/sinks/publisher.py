"""One batch of snapshots -> Postgres, then MongoDB, then the publication status in Postgres.

The order matters: Postgres decides (with its guard) what changed; MongoDB is written from the
record whose content Postgres holds; only then is the row marked published. Should the process
die between the steps, the row's synced_hash still differs from its content_hash, and the
redelivered batch finishes the job.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from uuid import UUID

from schemas.snapshot import SnapshotRecord
from streams import metrics
from streams.clock import clock
from streams.errors import SinkUnavailable
from streams.sinks.mongo import MongoSink, listing_document, listing_id
from streams.sinks.postgres import PostgresSink

log = logging.getLogger(__name__)
T = TypeVar("T")


async def retrying(
    what: str, fn: Callable[[], Awaitable[T]], *, max_delay: float, first_delay: float = 0.2
) -> T:
    """Call ``fn`` until it succeeds, backing off exponentially up to ``max_delay`` seconds.

    The caller's offsets are not committed meanwhile, so no snapshot is skipped.
    """
    delay = first_delay
    while True:
        try:
            return await fn()
        except SinkUnavailable as exc:
            metrics.SINK_RETRIES.labels(sink=what).inc()
            log.warning("sink unavailable sink=%s retry_in=%.1fs error=%s", what, delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)


class Publisher:
    def __init__(
        self, postgres: PostgresSink, mongo: MongoSink, *, auto_publish: bool, max_delay: float
    ) -> None:
        self.postgres, self.mongo = postgres, mongo
        self.auto_publish, self.max_delay = auto_publish, max_delay

    async def write(self, batch: Sequence[tuple[str, SnapshotRecord | None]]) -> None:
        """Write a batch of (booking_id, record or tombstone) in order; retried until done."""
        latest: dict[str, SnapshotRecord | None] = {}
        for key, record in batch:
            latest[key] = record  # per booking only the last of the batch matters
        records = [r for r in latest.values() if r is not None]
        gone = [UUID(k) for k, r in latest.items() if r is None]
        if records:
            started = time.perf_counter()
            changed = await retrying(
                "postgres", lambda: self.postgres.upsert(records), max_delay=self.max_delay
            )
            metrics.SINK_WRITES.labels(sink="postgres").inc(len(changed))
            metrics.SINK_LATENCY.labels(sink="postgres").observe(time.perf_counter() - started)
            await self.publish(records)
            newest = max(r.evaluated_at for r in records)
            metrics.SNAPSHOT_FRESHNESS.set((clock() - newest).total_seconds())
        if gone:
            await self.remove(gone)

    async def publish(self, records: Sequence[SnapshotRecord], *, force: bool = False) -> list[str]:
        """Write to MongoDB the records whose content Postgres holds but MongoDB does not yet."""
        state = await retrying(
            "postgres",
            lambda: self.postgres.sync_state([r.snapshot.booking_id for r in records]),
            max_delay=self.max_delay,
        )
        due: list[tuple[SnapshotRecord, dict[str, Any]]] = []
        for r in records:
            row = state.get(r.snapshot.booking_id)
            if row is None or row["content_hash"] != r.content_hash:
                continue  # Postgres holds another (newer) snapshot: that one gets published
            if row["synced_hash"] == r.content_hash and not force:
                continue
            if not (self.auto_publish or force or row["market_listing_id"] is not None):
                continue  # waits in ready_to_publish for an explicit publish
            due.append((r, row))
        if not due:
            return []
        now = clock()
        docs = [listing_document(r, row["status"], now) for r, row in due]
        started = time.perf_counter()
        await retrying("mongodb", lambda: self.mongo.replace(docs), max_delay=self.max_delay)
        metrics.SINK_WRITES.labels(sink="mongodb").inc(len(docs))
        metrics.SINK_LATENCY.labels(sink="mongodb").observe(time.perf_counter() - started)
        synced = [(r, listing_id(r)) for r, _ in due]
        await retrying(
            "postgres", lambda: self.postgres.mark_synced(synced, now), max_delay=self.max_delay
        )
        return [lid for _, lid in synced]

    async def remove(self, booking_ids: Sequence[UUID]) -> None:
        state = await retrying(
            "postgres", lambda: self.postgres.sync_state(booking_ids), max_delay=self.max_delay
        )
        listings = [
            str(row["market_listing_id"]) for row in state.values() if row["market_listing_id"]
        ]
        await retrying("mongodb", lambda: self.mongo.delete(listings), max_delay=self.max_delay)
        await retrying(
            "postgres", lambda: self.postgres.delete(booking_ids), max_delay=self.max_delay
        )
