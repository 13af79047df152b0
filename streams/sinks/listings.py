"""The MongoDB sink: listings written newest-wins, and what MongoDB holds recorded in Postgres.

Several writers may write one booking's listing: the sink of this worker, the sink of another
worker that has not yet noticed a rebalance took its partitions, ``POST .../publish``,
``mis republish``. MongoDB (and FerretDB) offer no conditional replace that a bulk write can
rely on, so the decision is taken in Postgres:

1. in one transaction, take a transaction-scoped advisory lock per booking of the batch (in
   booking order, so two writers never wait on each other crosswise) and read
   ``market_listing_sync``, what MongoDB holds of each: version, evaluation time, content hash;
2. keep the records that are newer than what MongoDB holds and differ from it;
3. replace those listings by ``_id``;
4. record what was written in ``market_listing_sync``, whose trigger marks the snapshot row
   published (under the row locks the Postgres sink takes too, see streams.sinks.postgres);
   commit, releasing the locks.

A writer holding an older snapshot therefore waits for the lock, then finds that MongoDB holds
something newer and writes nothing. Should MongoDB fail half way through, the transaction rolls
back and the batch is written again (replaces are idempotent).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from schemas.snapshot import SnapshotRecord
from streams import topology
from streams.clock import clock
from streams.config import Settings
from streams.sinks.base import Item, Refusal
from streams.sinks.mongo import MongoListings, listing_document, listing_id
from streams.sinks.postgres import (
    LOCKS_PER_TRANSACTION,
    SinkConnection,
    lock_bookings,
    run_guarded,
)

log = logging.getLogger(__name__)

SYNC = topology.SYNC_TABLE
READ = (
    f"SELECT booking_id, source_version, evaluated_at, content_hash FROM {SYNC} "
    "WHERE booking_id = ANY(%s)"
)
RECORD = f"""
INSERT INTO {SYNC} (booking_id, listing_id, source_version, evaluated_at, content_hash, status,
                    first_synced_at, synced_at)
VALUES (%(booking_id)s, %(listing_id)s, %(source_version)s, %(evaluated_at)s, %(content_hash)s,
        %(status)s, %(now)s, %(now)s)
ON CONFLICT (booking_id) DO UPDATE SET
    listing_id = EXCLUDED.listing_id, source_version = EXCLUDED.source_version,
    evaluated_at = EXCLUDED.evaluated_at, content_hash = EXCLUDED.content_hash,
    status = EXCLUDED.status, synced_at = EXCLUDED.synced_at
"""
FORGET = f"DELETE FROM {SYNC} WHERE booking_id = ANY(%s)"


@dataclass(frozen=True)
class Held:
    """What MongoDB holds of one booking, as recorded in market_listing_sync."""

    source_version: str
    evaluated_at: datetime
    content_hash: str


def decide(
    record: SnapshotRecord, held: Held | None, *, auto_publish: bool, force: bool
) -> str | None:
    """How to write ``record``: "upsert", "existing" (only over a listing already there), or
    None (MongoDB holds it or something newer). Pure.

    ``force`` is an explicit publish: it writes a listing that waits for one, and writes again a
    listing MongoDB holds already; it never replaces a newer one.
    """
    if held is not None:
        if (held.source_version, held.evaluated_at) > (record.source_version, record.evaluated_at):
            return None
        if held.content_hash == record.content_hash and not force:
            return None
        return "upsert"
    if auto_publish or force:
        return "upsert"
    # Not published yet and waiting for an explicit publish: a listing left by a publish whose
    # record was lost (a timeout before the commit) still gets this content, a withdrawal above
    # all; no listing is created.
    return "existing"


class ListingSink:
    """market_listings as a SnapshotSink, and the publication path of the API."""

    name = "mongodb"

    def __init__(self, settings: Settings, *, auto_publish: bool | None = None) -> None:
        self._auto_publish = settings.auto_publish if auto_publish is None else auto_publish
        self._mongo = MongoListings(
            settings.mongo_url, settings.mongo_database, settings.mongo_collection
        )
        self._conn = SinkConnection(settings.pg_dsn, self.name)

    def close(self) -> None:
        self._conn.close()
        self._mongo.close()

    def write(self, items: Sequence[Item]) -> list[Refusal]:
        records = {i.booking_id: i.record for i in items if i.record is not None}
        gone = [i.booking_id for i in items if i.record is None]
        refused = self.publish(list(records.values()), gone=gone)
        by_listing = {listing_id(i.booking_id): i for i in items}
        return [(by_listing[lid], reason) for lid, reason in refused.items()]

    def publish(
        self,
        records: Sequence[SnapshotRecord],
        *,
        gone: Sequence[UUID] = (),
        force: bool = False,
    ) -> dict[str, str]:
        """Write the listings of ``records`` and delete those of ``gone``, newest-wins.

        Returns the refused listings (_id -> reason). Raises SinkUnavailable when Postgres or
        MongoDB cannot be reached; nothing is recorded then, and the call can be repeated.
        """
        refused: dict[str, str] = {}
        ordered = sorted({r.snapshot.booking_id for r in records} | set(gone))
        by_booking = {r.snapshot.booking_id: r for r in records}
        gone_set = set(gone)
        for start in range(0, len(ordered), LOCKS_PER_TRANSACTION):
            keys = ordered[start : start + LOCKS_PER_TRANSACTION]
            refused |= self._publish(
                [by_booking[k] for k in keys if k in by_booking],
                [k for k in keys if k in gone_set],
                keys,
                force,
            )
        return refused

    def _publish(
        self,
        records: Sequence[SnapshotRecord],
        gone: Sequence[UUID],
        keys: list[UUID],
        force: bool,
    ) -> dict[str, str]:
        refused: dict[str, str] = {}

        def work(conn: psycopg.Connection[Any]) -> None:
            lock_bookings(conn, keys, "listing")
            with conn.cursor(row_factory=dict_row) as cur:
                cur.execute(READ, (keys,))
                held = {
                    row["booking_id"]: Held(
                        row["source_version"], row["evaluated_at"], row["content_hash"]
                    )
                    for row in cur.fetchall()
                }
            now = clock()
            upserts: list[SnapshotRecord] = []
            existing: list[SnapshotRecord] = []
            for r in records:
                how = decide(
                    r, held.get(r.snapshot.booking_id), auto_publish=self._auto_publish, force=force
                )
                if how == "upsert":
                    upserts.append(r)
                elif how == "existing":
                    existing.append(r)
            docs = [listing_document(r, r.snapshot.status, now) for r in upserts]
            refused.update(self._mongo.replace(docs))
            written = [r for r in upserts if listing_id(r.snapshot.booking_id) not in refused]
            for r in existing:
                if self._mongo.replace_existing(listing_document(r, r.snapshot.status, now)):
                    written.append(r)
            if gone:
                self._mongo.delete([listing_id(b) for b in gone])
            if written or gone:
                lock_bookings(conn, [r.snapshot.booking_id for r in written] + list(gone))
            if gone:
                conn.execute(FORGET, (list(gone),))
            if written:
                with conn.cursor() as cur:
                    cur.executemany(RECORD, [_sync_params(r, now) for r in written])

        run_guarded(self._conn.get(), work)
        return refused


def _sync_params(record: SnapshotRecord, now: datetime) -> dict[str, Any]:
    return {
        "booking_id": record.snapshot.booking_id,
        "listing_id": listing_id(record.snapshot.booking_id),
        "source_version": record.source_version,
        "evaluated_at": record.evaluated_at,
        "content_hash": record.content_hash,
        "status": "published"
        if record.snapshot.status == "ready_to_publish"
        else record.snapshot.status,
        "now": now,
    }
