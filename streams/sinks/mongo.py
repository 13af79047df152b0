"""market_listings in MongoDB (any MongoDB-wire server): replaces and deletes keyed by _id.

Every operation addresses a listing by its ``_id``, the snapshot id, which is derived from the
booking id: the one filter every MongoDB-wire server serves from an index, and an address that
needs no lookup, so a withdrawal or an eviction reaches the listing whoever wrote it.
Which snapshot may replace which is decided before, in Postgres (streams.sinks.listings).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

from pymongo import DeleteOne, MongoClient, ReplaceOne
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    InvalidDocument,
    OperationFailure,
    PyMongoError,
)

from schemas.snapshot import Listing, SnapshotRecord, snapshot_id
from streams.errors import SinkUnavailable

log = logging.getLogger(__name__)

# Statements per command, and commands in flight at once. Stock FerretDB 1.24 holds a backend
# connection per statement until an update command ends (a command of as many statements as its
# pool has connections never returns; the stack's patched build releases each one); beyond a
# few dozen statements the size of a command hardly matters, and concurrent commands roughly
# double the rate of one (measured: `make bench-mongo`, README).
WRITE_CHUNK = 100
WRITERS = 4


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


def listing_id(booking_id: UUID) -> str:
    return str(snapshot_id(booking_id))


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
    doc["_id"] = listing_id(s.booking_id)
    doc["pest_events"] = _bson([e.model_dump(mode="python") for e in s.pest_events])
    doc["certificates"] = _bson([c.model_dump(mode="python") for c in s.certificates])
    doc["published_at"] = published_at
    return doc


# Server errors that say nothing about the document: retried, never dead-lettered. 1 is
# InternalError, which FerretDB answers when its backend fails; the others are MongoDB's
# network, shutdown and primary-change codes.
TRANSIENT_CODES = frozenset(
    {1, 6, 7, 50, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436}
)


def _transient(code: Any) -> bool:
    return code in TRANSIENT_CODES


def _refused(exc: Exception) -> str:
    reason = exc.details.get("errmsg") if isinstance(exc, OperationFailure) and exc.details else exc
    return f"mongodb refused the listing: {type(exc).__name__}: {reason}"


class MongoListings:
    """The collection, written by _id: replaces that report which documents were refused."""

    def __init__(self, url: str, database: str, collection: str, *, writers: int = WRITERS) -> None:
        self._client: MongoClient[dict[str, Any]] = MongoClient(
            url, tz_aware=True, serverSelectionTimeoutMS=5000, connectTimeoutMS=5000
        )
        self._collection = self._client[database][collection]
        self._indexed = False
        self._pool = ThreadPoolExecutor(max_workers=writers, thread_name_prefix="mongo-writer")

    def _ensure_index(self) -> None:
        if not self._indexed:
            self._collection.create_index("booking_id", unique=True)
            self._indexed = True

    def replace(
        self, documents: Sequence[dict[str, Any]], *, upsert: bool = True
    ) -> dict[str, str]:
        """Replace (or insert) each document by its _id; return the refused ones' _id -> reason.

        A document the server refuses for what it holds (a field name it does not take, a size
        over its limit) is reported and the others are written; losing the server raises
        SinkUnavailable, and the caller writes the whole batch again (replaces are idempotent).
        """
        refused: dict[str, str] = {}
        chunks = [
            list(documents[start : start + WRITE_CHUNK])
            for start in range(0, len(documents), WRITE_CHUNK)
        ]
        try:
            self._ensure_index()
            # Each document has an _id of its own (a batch holds one snapshot per booking),
            # so the chunks are independent and go in parallel.
            for result in list(self._pool.map(self._chunk, chunks, [upsert] * len(chunks))):
                refused.update(result)
        except ConnectionFailure as exc:
            raise SinkUnavailable(f"mongodb: {exc}") from exc
        except PyMongoError as exc:
            raise SinkUnavailable(f"mongodb: {type(exc).__name__}: {exc}") from exc
        return refused

    def _chunk(self, docs: list[dict[str, Any]], upsert: bool) -> dict[str, str]:
        refused: dict[str, str] = {}
        pending = docs
        while pending:
            pending = self._bulk(pending, upsert, refused)
        return refused

    def _bulk(
        self, docs: list[dict[str, Any]], upsert: bool, refused: dict[str, str]
    ) -> list[dict[str, Any]]:
        """Write ``docs`` in one ordered command; return those still to be written."""
        try:
            self._collection.bulk_write(
                [ReplaceOne({"_id": d["_id"]}, d, upsert=upsert) for d in docs], ordered=True
            )
            return []
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors") or []
            if not errors:
                raise
            # Ordered: what precedes the first error is written, what follows it is not.
            first = errors[0]
            if _transient(first.get("code")):
                raise SinkUnavailable(f"mongodb: {first.get('errmsg')}") from exc
            index = int(first.get("index", 0))
            refused[str(docs[index]["_id"])] = (
                f"mongodb refused the listing: code {first.get('code')}: {first.get('errmsg')}"
            )
            return docs[index + 1 :]
        except OperationFailure as exc:
            if _transient(exc.code) or exc.has_error_label("RetryableWriteError"):
                raise SinkUnavailable(f"mongodb: {exc}") from exc
            self._one_by_one(docs, upsert, refused)
            return []
        except (InvalidDocument, KeyError):
            # InvalidDocument: refused by pymongo's own checks of a document's keys and size,
            # before the server could say which. KeyError: FerretDB 1.24 answers a bulk with a
            # failed statement without "nModified", which pymongo cannot read.
            self._one_by_one(docs, upsert, refused)
            return []

    def _one_by_one(
        self, docs: list[dict[str, Any]], upsert: bool, refused: dict[str, str]
    ) -> None:
        """Write each document with a command of its own, to learn which are refused."""
        for doc in docs:
            try:
                self._collection.replace_one({"_id": doc["_id"]}, doc, upsert=upsert)
            except OperationFailure as exc:
                if _transient(exc.code):
                    raise SinkUnavailable(f"mongodb: {exc}") from exc
                refused[str(doc["_id"])] = _refused(exc)
            except InvalidDocument as exc:
                refused[str(doc["_id"])] = _refused(exc)

    def replace_existing(self, document: dict[str, Any]) -> bool:
        """Replace the document if one with its _id exists; True if it did."""
        try:
            result = self._collection.replace_one({"_id": document["_id"]}, document)
        except (InvalidDocument, OperationFailure) as exc:
            if isinstance(exc, OperationFailure) and _transient(exc.code):
                raise SinkUnavailable(f"mongodb: {exc}") from exc
            return False
        except PyMongoError as exc:
            raise SinkUnavailable(f"mongodb: {type(exc).__name__}: {exc}") from exc
        return result.matched_count > 0

    def delete(self, listing_ids: Sequence[str]) -> None:
        # One statement per _id: a filter such as {"_id": {"$in": [...]}} reads the whole
        # collection on FerretDB.
        try:
            for start in range(0, len(listing_ids), WRITE_CHUNK):
                chunk = listing_ids[start : start + WRITE_CHUNK]
                self._collection.bulk_write([DeleteOne({"_id": lid}) for lid in chunk])
        except PyMongoError as exc:
            raise SinkUnavailable(f"mongodb: {exc}") from exc

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()
