"""What the watch knows about how the sinks record their writes: the one place to adapt when
the sinks change.

A snapshot row in Postgres and a listing in MongoDB each carry the ``source_version`` they were
written from and a time of the write: the row's ``updated_at`` (Postgres' ``now()`` in the
upsert, which moves only when the content changed) and the listing's ``published_at`` (set on
every write of the document). ``last_synced_at`` on the row is when the listing was last written
(recorded in ``market_listing_sync`` by the MongoDB sink, copied to the row by a trigger).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from streams.sinks.mongo import listing_id

Sink = Literal["postgres", "mongodb"]

ROWS = (
    "SELECT booking_id::text AS booking_id, source_version, updated_at "
    "FROM market_inventory_snapshots WHERE booking_id = ANY(%s::uuid[])"
)
LISTING_PROJECTION = {"source_version": 1, "published_at": 1}
# Rows written and listings written since a time, and the rows there are.
WRITTEN_SINCE = (
    "SELECT count(*) FILTER (WHERE updated_at >= %(since)s) AS rows_written, "
    "count(*) FILTER (WHERE last_synced_at >= %(since)s) AS listings_written, count(*) AS rows "
    "FROM market_inventory_snapshots"
)


@dataclass(frozen=True)
class Arrival:
    """A sink holds the snapshot of a booking written from ``version``, since ``at``."""

    booking_id: str
    version: str
    at: datetime


def listing_filter(booking_id: str) -> dict[str, Any]:
    # Only a filter on the bare _id is served by an index on FerretDB (see streams.sinks.mongo).
    return {"_id": listing_id(UUID(booking_id))}


def arrival(sink: Sink, booking_id: str, record: Mapping[str, Any] | None) -> Arrival | None:
    """The arrival a Postgres row or a MongoDB listing records; None when it records none."""
    if record is None:
        return None
    at = record.get("updated_at") if sink == "postgres" else record.get("published_at")
    version = record.get("source_version")
    if not isinstance(at, datetime) or not isinstance(version, str):
        return None
    return Arrival(booking_id, version, at)
