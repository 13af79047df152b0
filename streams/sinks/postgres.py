"""market_inventory_snapshots: guarded, batched upserts with psycopg 3."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from schemas.snapshot import SnapshotRecord
from streams.errors import SinkRejected, SinkUnavailable

log = logging.getLogger(__name__)

CONTENT_COLUMNS = (
    "farmer_id",
    "vendor_id",
    "location_id",
    "crop_type",
    "grade",
    "quantity_kg",
    "start_date",
    "end_date",
    "duration_days",
    "inspection_id",
    "inspection_status",
    "quality_score",
    "freshness",
    "visual_defects",
    "shelf_life_days",
    "sensors",
    "sensor_summary",
    "pest_events",
    "has_pest_alerts",
    "pest_count",
    "certificates",
    "is_certified",
    "certification_types",
    "metadata",
    "finished_at",
)
JSON_COLUMNS = {"sensors", "sensor_summary", "pest_events", "certificates", "metadata"}
GUARD_COLUMNS = ("source_version", "evaluated_at", "content_hash")
ALL_COLUMNS = ("id", "booking_id", *CONTENT_COLUMNS, "status", *GUARD_COLUMNS)

T = "market_inventory_snapshots"

# The guard: a snapshot replaces the stored one only when it is newer (by source version, then
# by evaluation time) and different. An older or identical snapshot writes nothing, so
# updated_at keeps the time of the last real change. A published snapshot stays published
# while its new content is being re-published.
UPSERT = f"""
INSERT INTO {T} ({", ".join(ALL_COLUMNS)})
VALUES ({", ".join(f"%({c})s" for c in ALL_COLUMNS)})
ON CONFLICT (booking_id) DO UPDATE SET
    {", ".join(f"{c} = EXCLUDED.{c}" for c in (*CONTENT_COLUMNS, *GUARD_COLUMNS))},
    status = CASE WHEN EXCLUDED.status = 'ready_to_publish' AND {T}.status = 'published'
                  THEN 'published' ELSE EXCLUDED.status END,
    updated_at = now()
WHERE {T}.content_hash <> EXCLUDED.content_hash
  AND ({T}.source_version, {T}.evaluated_at) < (EXCLUDED.source_version, EXCLUDED.evaluated_at)
RETURNING booking_id
"""

SYNC_STATE = f"""
SELECT booking_id, status, content_hash, synced_hash, market_listing_id
FROM {T} WHERE booking_id = ANY(%s)
"""

MARK_SYNCED = f"""
UPDATE {T} SET
    status = CASE WHEN status = 'ready_to_publish' THEN 'published' ELSE status END,
    market_listing_id = %(listing_id)s,
    published_at = COALESCE(published_at, %(now)s),
    last_synced_at = %(now)s,
    synced_hash = %(content_hash)s
WHERE booking_id = %(booking_id)s AND content_hash = %(content_hash)s
"""


def row_params(record: SnapshotRecord) -> dict[str, Any]:
    snap = record.snapshot.model_dump(mode="python")
    params: dict[str, Any] = {c: snap[c] for c in ("id", "booking_id", *CONTENT_COLUMNS, "status")}
    for c in JSON_COLUMNS:
        params[c] = Jsonb(record.snapshot.model_dump(mode="json")[c])
    params.update(
        source_version=record.source_version,
        evaluated_at=record.evaluated_at,
        content_hash=record.content_hash,
    )
    return params


class PostgresSink:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=False)
            except psycopg.Error as exc:
                raise SinkUnavailable(f"postgres: {exc}") from exc
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _run(self, fn: Any) -> Any:
        conn = await self._connection()
        try:
            async with conn.transaction():
                return await fn(conn)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            await self.close()
            raise SinkUnavailable(f"postgres: {exc}") from exc
        except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
            raise SinkRejected(f"postgres rejected the snapshot: {exc}") from exc
        except psycopg.Error as exc:
            # A missing table or column, a privilege: the operator can fix it, and the batch
            # waits for that rather than being skipped.
            raise SinkUnavailable(f"postgres: {type(exc).__name__}: {exc}") from exc

    async def upsert(self, records: Sequence[SnapshotRecord]) -> set[UUID]:
        """Write the records that pass the guard; return the booking ids that changed."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> set[UUID]:
            changed: set[UUID] = set()
            async with conn.cursor() as cur:
                await cur.executemany(UPSERT, [row_params(r) for r in records], returning=True)
                while True:
                    row = await cur.fetchone()
                    if row is not None:
                        changed.add(row[0])
                    if not cur.nextset():
                        break
            return changed

        result: set[UUID] = await self._run(work)
        return result

    async def sync_state(self, booking_ids: Sequence[UUID]) -> dict[UUID, dict[str, Any]]:
        async def work(conn: psycopg.AsyncConnection[Any]) -> dict[UUID, dict[str, Any]]:
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(SYNC_STATE, (list(booking_ids),))
                return {row["booking_id"]: row for row in await cur.fetchall()}

        result: dict[UUID, dict[str, Any]] = await self._run(work)
        return result

    async def mark_synced(
        self, synced: Sequence[tuple[SnapshotRecord, str]], now: datetime
    ) -> None:
        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            async with conn.cursor() as cur:
                await cur.executemany(
                    MARK_SYNCED,
                    [
                        {
                            "listing_id": listing_id,
                            "now": now,
                            "content_hash": r.content_hash,
                            "booking_id": r.snapshot.booking_id,
                        }
                        for r, listing_id in synced
                    ],
                )

        await self._run(work)

    async def delete(self, booking_ids: Sequence[UUID]) -> None:
        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(f"DELETE FROM {T} WHERE booking_id = ANY(%s)", (list(booking_ids),))

        await self._run(work)

    async def expired_terminal(self, older_than: datetime) -> list[tuple[UUID, str | None]]:
        """Completed and withdrawn snapshots finished before ``older_than``."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> list[tuple[UUID, str | None]]:
            cur = await conn.execute(
                f"SELECT booking_id, market_listing_id FROM {T} "
                "WHERE status IN ('completed', 'withdrawn') AND finished_at < %s",
                (older_than,),
            )
            return [(r[0], r[1]) for r in await cur.fetchall()]

        result: list[tuple[UUID, str | None]] = await self._run(work)
        return result
