"""Publishing stored snapshots on request: one booking, or every one waiting in ready_to_publish.

Publication goes through the sink's own Publisher with ``force=True``: it writes the listing only
when Postgres still holds the very snapshot that was read, then marks the row published, so a
publication racing the sink can neither write stale content nor lose the newer one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from streams.api.errors import Conflict, NotFound, Unavailable
from streams.api.models import PublishResponse, SyncAllResponse, SyncResult
from streams.api.store import Store
from streams.config import Settings
from streams.sinks.mongo import MongoSink
from streams.sinks.postgres import PostgresSink
from streams.sinks.publisher import Publisher
from streams.sinks.records import record_from_row

log = logging.getLogger(__name__)

PAGE = 200
ATTEMPTS = 3
FINISHED = frozenset({"withdrawn", "completed"})
CHANGED = "the snapshot changed while being published; retry"


class Publishing:
    def __init__(self, settings: Settings, store: Store) -> None:
        self._settings, self._store = settings, store
        self._mongo = MongoSink(
            settings.mongo_url, settings.mongo_database, settings.mongo_collection
        )

    async def close(self) -> None:
        await self._mongo.close()

    async def publish_rows(self, rows: Sequence[Mapping[str, Any]]) -> dict[UUID, str]:
        """Publish these stored snapshots; return the listing id of each one published.

        A row whose content changed since it was read is left out (the caller may re-read it).
        """
        if not rows:
            return {}
        records = [record_from_row(row) for row in rows]
        # Its own Postgres connection: the sink's one must not interleave with a request's.
        postgres = PostgresSink(self._settings.pg_dsn)
        publisher = Publisher(
            postgres,
            self._mongo,
            auto_publish=self._settings.auto_publish,
            max_delay=min(2.0, self._settings.api_timeout_s),
        )
        try:
            async with asyncio.timeout(self._settings.api_timeout_s):
                listing_ids = await publisher.publish(records, force=True)
        except TimeoutError:
            raise Unavailable(
                f"postgres or mongodb did not answer within {self._settings.api_timeout_s:.0f}s"
            ) from None
        finally:
            await postgres.close()
        booking_of = {str(r.snapshot.id): r.snapshot.booking_id for r in records}
        return {booking_of[lid]: lid for lid in listing_ids}

    async def publish(self, booking_id: UUID) -> PublishResponse:
        for _ in range(ATTEMPTS):
            row = await self._store.snapshot(booking_id)
            if row is None:
                raise NotFound(f"no snapshot for booking {booking_id}")
            if row["status"] in FINISHED:
                raise Conflict(
                    f"the snapshot of booking {booking_id} is {row['status']}; "
                    "only live bookings are published"
                )
            published = await self.publish_rows([row])
            if booking_id in published:
                fresh = await self._store.snapshot(booking_id) or row
                log.info("published booking_id=%s listing_id=%s", booking_id, published[booking_id])
                return PublishResponse(
                    booking_id=booking_id,
                    listing_id=published[booking_id],
                    status=fresh["status"],
                    published_at=fresh["published_at"],
                )
        raise Conflict(f"the snapshot of booking {booking_id} kept changing; retry")

    async def sync_all(self) -> SyncAllResponse:
        results: list[SyncResult] = []
        after: UUID | None = None
        while True:
            rows = await self._store.ready_to_publish(after, PAGE)
            if not rows:
                break
            after = rows[-1]["booking_id"]
            published = await self.publish_rows(rows)
            retry = [r for r in rows if r["booking_id"] not in published]
            if retry:
                # Changed under us: publish what Postgres holds now, if it still waits.
                fresh = [await self._store.snapshot(r["booking_id"]) for r in retry]
                published |= await self.publish_rows(
                    [f for f in fresh if f is not None and f["status"] == "ready_to_publish"]
                )
            results += [
                SyncResult(
                    booking_id=r["booking_id"],
                    success=r["booking_id"] in published,
                    listing_id=published.get(r["booking_id"]),
                    error=None if r["booking_id"] in published else CHANGED,
                )
                for r in rows
            ]
            if len(rows) < PAGE:
                break
        done = sum(1 for r in results if r.success)
        log.info("sync-all total=%d published=%d", len(results), done)
        return SyncAllResponse(total=len(results), published=done, results=results)
