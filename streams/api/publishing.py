"""Publishing stored snapshots on request: one booking, or every one waiting in ready_to_publish.

Publication goes through the MongoDB sink's own writer (streams.sinks.listings) with
``force=True``: per booking it is serialised with the sink and never replaces a listing newer than
the row it publishes, so a publication racing the sink can neither write stale content nor lose
the newer one. The writer is blocking code; it runs in a thread, one call at a time.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from streams.api.errors import Conflict, NotFound, Unavailable
from streams.api.models import PublishResponse
from streams.api.store import Store
from streams.config import Settings
from streams.errors import SinkUnavailable
from streams.sinks.listings import ListingSink
from streams.sinks.mongo import listing_id
from streams.sinks.records import record_from_row

log = logging.getLogger(__name__)

PAGE = 200
ATTEMPTS = 3
FINISHED = frozenset({"withdrawn", "completed"})
CHANGED = "the snapshot changed while being published; retry"


class Publishing:
    def __init__(self, settings: Settings, store: Store) -> None:
        self._settings, self._store = settings, store
        self._writer: ListingSink | None = None
        self._lock = threading.Lock()

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.to_thread(self._writer.close)

    def _publish(self, records: list[Any]) -> dict[str, str]:
        with self._lock:
            if self._writer is None:
                self._writer = ListingSink(self._settings)
            return self._writer.publish(records, force=True)

    async def publish_rows(self, rows: Sequence[Mapping[str, Any]]) -> dict[UUID, str]:
        """Publish these stored snapshots; return the listing id of each one MongoDB now holds
        (this content or a newer one); a listing MongoDB refused is left out."""
        if not rows:
            return {}
        records = [record_from_row(row) for row in rows]
        try:
            async with asyncio.timeout(self._settings.api_timeout_s):
                refused = await asyncio.to_thread(self._publish, records)
        except TimeoutError:
            raise Unavailable(
                f"postgres or mongodb did not answer within {self._settings.api_timeout_s:.0f}s"
            ) from None
        except SinkUnavailable as exc:
            raise Unavailable(str(exc)) from None
        # Not refused: MongoDB holds this content, or a newer one.
        return {
            r.snapshot.booking_id: listing_id(r.snapshot.booking_id)
            for r in records
            if listing_id(r.snapshot.booking_id) not in refused
        }

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
