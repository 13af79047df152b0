"""``mis republish``: rewrite every listing of a wiped or new MongoDB.

From Postgres (the default): every market_inventory_snapshots row that has a listing is written
as the publisher wrote it, with the row's ``last_synced_at`` as the listing's ``published_at``
(the publisher stamps both with the time of its last write), so a restored listing is the one
that was lost. Rows still waiting for an explicit publish have no listing and are left out.

From the snapshot topic (``<app>-snapshots``, compacted, keyed by booking_id): the latest record
of every booking is written, ``published_at`` being now, and a booking whose latest message is a
tombstone (evicted by the cleanup) has its listing deleted. Use it when Postgres is not the
place to read from; it holds what the pipeline emitted, which the Postgres guard may have
refused (see README, Known limits).

Workers may go on meanwhile. A snapshot published while its older version is being rewritten
here could be overwritten by that older version, so each batch is checked again afterwards
and what changed in between is written again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from schemas.snapshot import SnapshotRecord, snapshot_id
from streams import topology
from streams.clock import clock
from streams.config import Settings
from streams.ops.kafka import TP, Kafka
from streams.ops.terminal import Progress, duration, rate, summary
from streams.sinks.mongo import MongoListings, listing_document
from streams.sinks.records import record_from_row

log = logging.getLogger(__name__)

Source = Literal["postgres", "topic"]
TABLE = topology.SNAPSHOT_TABLE
MAX_ROUNDS = 5


def row_listing(row: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    return listing_document(record_from_row(row), row["status"], row["last_synced_at"] or now)


@dataclass
class Counts:
    source: Source
    written: int = 0
    deleted: int = 0
    rewritten: int = 0
    skipped: int = 0
    seconds: float = 0.0

    def rows(self) -> list[tuple[str, str]]:
        rows = [
            ("source", self.source),
            ("listings written", f"{self.written:,}"),
            ("written again", f"{self.rewritten:,} (changed by the pipeline meanwhile)"),
        ]
        if self.source == "postgres":
            rows.append(("not published", f"{self.skipped:,} rows without a listing, left out"))
        else:
            rows.append(("listings deleted", f"{self.deleted:,} (tombstones)"))
        rows.append(("duration", duration(self.seconds)))
        rows.append(("rate", rate(self.written, self.seconds, "listings")))
        return rows


async def _rows(conn: psycopg.AsyncConnection[Any], booking_ids: Sequence[UUID]) -> list[Any]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT * FROM {TABLE} WHERE booking_id = ANY(%s) AND market_listing_id IS NOT NULL",
            (list(booking_ids),),
        )
        return await cur.fetchall()


async def from_postgres(
    settings: Settings, mongo: MongoListings, batch_size: int, progress: Progress
) -> Counts:
    counts = Counts("postgres")
    async with await psycopg.AsyncConnection.connect(settings.pg_dsn, autocommit=True) as check:
        found = await (
            await check.execute(
                f"SELECT count(*) FILTER (WHERE market_listing_id IS NOT NULL), "
                f"count(*) FILTER (WHERE market_listing_id IS NULL) FROM {TABLE}"
            )
        ).fetchone()
        progress.total, counts.skipped = (found[0] or None, found[1]) if found else (None, 0)
        # A server-side cursor: the table is read in batches, not loaded whole.
        conn = await psycopg.AsyncConnection.connect(settings.pg_dsn)
        async with conn, conn.cursor("republish", row_factory=dict_row) as cur:
            await cur.execute(
                f"SELECT * FROM {TABLE} WHERE market_listing_id IS NOT NULL ORDER BY booking_id"
            )
            while rows := await cur.fetchmany(batch_size):
                written = {r["booking_id"]: r["content_hash"] for r in rows}
                await asyncio.to_thread(mongo.replace, [row_listing(r, clock()) for r in rows])
                counts.written += len(rows)
                counts.rewritten += await _settle(check, mongo, written)
                progress.update(counts.written)
    return counts


async def _settle(
    conn: psycopg.AsyncConnection[Any], mongo: MongoListings, written: dict[UUID, str]
) -> int:
    """Write again the rows whose content changed since they were read; return how many."""
    again = 0
    for _ in range(MAX_ROUNDS):
        now = {r["booking_id"]: r for r in await _rows(conn, list(written))}
        changed = [r for b, r in now.items() if r["content_hash"] != written[b]]
        gone = [b for b in written if b not in now]
        if gone:
            # Evicted meanwhile: the pipeline deleted the listing, perhaps before we wrote it.
            await asyncio.to_thread(mongo.delete, [str(snapshot_id(b)) for b in gone])
        if not changed:
            return again
        await asyncio.to_thread(mongo.replace, [row_listing(r, clock()) for r in changed])
        again += len(changed)
        written = {r["booking_id"]: r["content_hash"] for r in changed}
    log.warning("listings still changing after %d rounds count=%d", MAX_ROUNDS, len(written))
    return again


async def _apply(
    latest: Mapping[str, bytes | None], mongo: MongoListings, batch_size: int, counts: Counts
) -> int:
    items = list(latest.items())
    written = 0
    for i in range(0, len(items), batch_size):
        batch = items[i : i + batch_size]
        now = clock()
        docs = [
            listing_document(record, record.snapshot.status, now)
            for record in (SnapshotRecord.model_validate_json(v) for _, v in batch if v)
        ]
        gone = [str(snapshot_id(UUID(k))) for k, v in batch if v is None]
        await asyncio.to_thread(mongo.replace, docs)
        await asyncio.to_thread(mongo.delete, gone)
        written += len(docs)
        counts.deleted += len(gone)
    return written


async def from_topic(
    settings: Settings, mongo: MongoListings, batch_size: int, progress: Progress
) -> Counts:
    counts = Counts("topic")
    kafka = Kafka(settings.kafka_bootstrap)
    topic = topology.snapshot_topic(settings.app_id)
    n = kafka.partitions([topic]).get(topic, 0)
    marks = kafka.watermarks((topic, p) for p in range(n))
    ranges: dict[TP, tuple[int, int]] = dict(marks)
    for round_ in range(MAX_ROUNDS):
        latest: dict[str, bytes | None] = {}
        for msg in kafka.read(ranges):
            if msg.key is not None:
                latest[msg.key.decode()] = msg.value
        if round_ == 0:
            progress.total = len(latest) or None
        written = await _apply(latest, mongo, batch_size, counts)
        if round_ == 0:
            counts.written = written
        else:
            counts.rewritten += written
        progress.update(counts.written)
        # What the pipeline emitted while we wrote: written again, newest last.
        ends = kafka.watermarks(ranges)
        ranges = {tp: (ranges[tp][1], high) for tp, (_, high) in ends.items()}
        if all(start >= end for start, end in ranges.values()):
            break
    return counts


async def main(settings: Settings, source: Source, batch_size: int) -> int:
    mongo = MongoListings(settings.mongo_url, settings.mongo_database, settings.mongo_collection)
    progress = Progress(f"republish from {source}")
    started = time.monotonic()
    try:
        if source == "postgres":
            counts = await from_postgres(settings, mongo, batch_size, progress)
        else:
            counts = await from_topic(settings, mongo, batch_size, progress)
    finally:
        await asyncio.to_thread(mongo.close)
    counts.seconds = time.monotonic() - started
    progress.close(counts.written)
    log.info(
        "republished source=%s written=%d rewritten=%d deleted=%d",
        source,
        counts.written,
        counts.rewritten,
        counts.deleted,
    )
    summary("republish summary", counts.rows())
    return 0
