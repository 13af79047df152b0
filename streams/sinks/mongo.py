"""market_listings in MongoDB (any MongoDB-wire server): idempotent replaces keyed by _id."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

from pymongo import AsyncMongoClient, ReplaceOne
from pymongo.errors import PyMongoError

from schemas.snapshot import Listing, SnapshotRecord
from streams.errors import SinkUnavailable

log = logging.getLogger(__name__)

# FerretDB 1.24 holds one SQLite connection per matched statement until an update command ends,
# from a pool of 100: a bulk write of 100 or more replaces never returns. Keep commands small.
WRITE_CHUNK = 50


def _bson(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _bson(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_bson(v) for v in value]
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime.combine(value, time(0), tzinfo=UTC)
    return value


def listing_id(record: SnapshotRecord) -> str:
    return str(record.snapshot.id)


def listing_document(record: SnapshotRecord, status: str, published_at: datetime) -> dict[str, Any]:
    s = record.snapshot
    listing = Listing(
        booking_id=str(s.booking_id),
        snapshot_id=str(s.id),
        status="published" if status == "ready_to_publish" else status,  # type: ignore[arg-type]
        crop_type=s.crop_type,
        grade=s.grade,
        quantity_kg=s.quantity_kg,
        farmer_id=str(s.farmer_id),
        vendor_id=str(s.vendor_id),
        location_id=str(s.location_id),
        quality_score=s.quality_score,
        freshness=s.freshness,
        shelf_life_days=s.shelf_life_days,
        sensors=s.sensors,
        sensor_summary=s.sensor_summary,
        pest_count=s.pest_count,
        has_pest_alerts=s.has_pest_alerts,
        is_certified=s.is_certified,
        certification_types=s.certification_types,
        metadata=s.metadata,
        source_version=record.source_version,
        evaluated_at=record.evaluated_at,
        content_hash=record.content_hash,
    )
    doc = _bson(listing.model_dump(mode="python"))
    doc["_id"] = listing_id(record)
    doc["pest_events"] = _bson([e.model_dump(mode="python") for e in s.pest_events])
    doc["certificates"] = _bson([c.model_dump(mode="python") for c in s.certificates])
    doc["published_at"] = published_at
    return doc


class MongoSink:
    def __init__(self, url: str, database: str, collection: str) -> None:
        self._client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            url, tz_aware=True, serverSelectionTimeoutMS=5000
        )
        self._collection = self._client[database][collection]
        self._indexed = False

    async def _ensure_index(self) -> None:
        if not self._indexed:
            await self._collection.create_index("booking_id", unique=True)
            await self._collection.create_index("status")
            self._indexed = True

    async def replace(self, documents: Sequence[dict[str, Any]]) -> None:
        if not documents:
            return
        try:
            await self._ensure_index()
            # Only a filter on the bare _id is served by an index on FerretDB, and a guarded
            # filter that fails breaks the rest of its command there: replace by _id alone;
            # the Postgres guard has already decided what is newer.
            for start in range(0, len(documents), WRITE_CHUNK):
                chunk = documents[start : start + WRITE_CHUNK]
                await self._collection.bulk_write(
                    [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in chunk], ordered=True
                )
        except PyMongoError as exc:
            raise SinkUnavailable(f"mongodb: {exc}") from exc

    async def delete(self, listing_ids: Sequence[str]) -> None:
        if not listing_ids:
            return
        try:
            await self._collection.delete_many({"_id": {"$in": list(listing_ids)}})
        except PyMongoError as exc:
            raise SinkUnavailable(f"mongodb: {exc}") from exc

    async def close(self) -> None:
        await self._client.close()
