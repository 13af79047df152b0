"""The API's reads and writes in Postgres: snapshots, source bookings and Debezium signals."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from streams.api.errors import Conflict, Invalid, Unavailable
from streams.api.models import BookingRequest
from streams.api.signals import BookingKeys
from streams.debezium_signal import insert_execute_snapshot

log = logging.getLogger(__name__)

SNAPSHOTS = "market_inventory_snapshots"
HISTORY = "market_inventory_snapshot_history"
# The bucket is 'hour' or 'day' (checked by the handler); date_trunc in UTC.
TRENDS = f"""
WITH h AS (
    SELECT date_trunc(%(bucket)s, evaluated_at, 'UTC') AS bucket_start, booking_id,
           quality_score, sensor_summary
    FROM {HISTORY} WHERE location_id = %(location)s AND evaluated_at >= %(since)s
), sensors AS (
    SELECT bucket_start, jsonb_object_agg(key, value) AS sensors FROM (
        SELECT bucket_start, s.key, round(avg(s.value::float)::numeric, 2)::float AS value
        FROM h CROSS JOIN LATERAL jsonb_each_text(h.sensor_summary) AS s
        GROUP BY bucket_start, s.key
    ) per_key GROUP BY bucket_start
)
SELECT h.bucket_start, count(*) AS snapshots, count(DISTINCT h.booking_id) AS bookings,
       round(avg(h.quality_score), 2)::float AS quality_score,
       coalesce(sensors.sensors, '{{}}'::jsonb) AS sensors
FROM h LEFT JOIN sensors USING (bucket_start)
GROUP BY h.bucket_start, sensors.sensors
ORDER BY h.bucket_start
"""
BOOKING_COLUMNS = (
    "id, farmer_id, vendor_id, location_id, crop_type, grade, quantity_kg, start_date, "
    "end_date, duration_days, ai_inspection_id, status, created_at"
)
INSERT_BOOKING = f"""
INSERT INTO storage_bookings (id, farmer_id, vendor_id, location_id, crop_type, grade,
                              quantity_kg, start_date, end_date, duration_days,
                              ai_inspection_id, status)
VALUES (%(id)s, %(farmer_id)s, %(vendor_id)s, %(location_id)s, %(crop_type)s, %(grade)s,
        %(quantity_kg)s, %(start_date)s, %(end_date)s, %(duration_days)s,
        %(ai_inspection_id)s, 'pending')
ON CONFLICT (id) DO NOTHING
RETURNING {BOOKING_COLUMNS}
"""


class Store:
    def __init__(self, dsn: str, timeout_s: float, signal_table: str) -> None:
        self._signal_table = signal_table
        self._pool = AsyncConnectionPool(
            dsn,
            min_size=1,
            max_size=4,
            open=False,
            timeout=timeout_s,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(timeout_s))},
            # A connection that died with a Postgres restart is replaced, not handed out.
            check=AsyncConnectionPool.check_connection,
            name="api",
        )
        self._opened = False

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        try:
            if not self._opened:
                await self._pool.open(wait=False)
                self._opened = True
            async with self._pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise Unavailable(f"postgres: no connection within the timeout ({exc})") from exc
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise Unavailable(f"postgres: {exc}") from exc

    async def close(self) -> None:
        if self._opened:
            await self._pool.close()
            self._opened = False

    async def ping(self) -> None:
        async with self.connection() as conn:
            await conn.execute("SELECT 1")

    async def _one(self, sql: str, params: tuple[Any, ...]) -> dict[str, Any] | None:
        async with self.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(sql, params)
            return await cur.fetchone()

    async def snapshot(self, booking_id: UUID) -> dict[str, Any] | None:
        return await self._one(f"SELECT * FROM {SNAPSHOTS} WHERE booking_id = %s", (booking_id,))

    async def ready_to_publish(self, after: UUID | None, limit: int) -> list[dict[str, Any]]:
        """One page of the snapshots waiting for publication, in booking_id order."""
        async with self.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                f"SELECT * FROM {SNAPSHOTS} WHERE status = 'ready_to_publish' "
                "AND (%s::uuid IS NULL OR booking_id > %s::uuid) ORDER BY booking_id LIMIT %s",
                (after, after, limit),
            )
            return await cur.fetchall()

    async def booking_keys(self, booking_id: UUID) -> BookingKeys | None:
        row = await self._one(
            "SELECT location_id, vendor_id, ai_inspection_id FROM storage_bookings WHERE id = %s",
            (booking_id,),
        )
        if row is None:
            return None
        return BookingKeys(
            booking_id=booking_id,
            location_id=row["location_id"],
            vendor_id=row["vendor_id"],
            inspection_id=row["ai_inspection_id"],
        )

    async def create_booking(
        self, farmer_id: UUID, request: BookingRequest, booking_id: UUID, now: datetime
    ) -> dict[str, Any]:
        """Insert a pending booking; its inspection must exist and belong to the farmer."""
        start = request.start_date or now
        params = {
            "id": booking_id,
            "farmer_id": farmer_id,
            "vendor_id": request.vendor_id,
            "location_id": request.location_id,
            "crop_type": request.crop_type,
            "grade": request.grade,
            "quantity_kg": request.quantity_kg,
            "start_date": start,
            "end_date": start + timedelta(days=request.duration_days),
            "duration_days": request.duration_days,
            "ai_inspection_id": request.ai_inspection_id,
        }
        async with (
            self.connection() as conn,
            conn.transaction(),
            conn.cursor(row_factory=dict_row) as cur,
        ):
            if request.ai_inspection_id is not None:
                # KEY SHARE keeps the inspection from being deleted before the booking commits.
                await cur.execute(
                    "SELECT farmer_id FROM crop_inspections WHERE id = %s FOR KEY SHARE",
                    (request.ai_inspection_id,),
                )
                inspection = await cur.fetchone()
                if inspection is None:
                    raise Invalid(
                        f"ai_inspection_id {request.ai_inspection_id} names no crop inspection",
                        [{"loc": ["ai_inspection_id"], "msg": "unknown crop inspection"}],
                    )
                owner = inspection["farmer_id"]
                if owner is not None and owner != farmer_id:
                    raise Invalid(
                        f"crop inspection {request.ai_inspection_id} belongs to another farmer",
                        [{"loc": ["ai_inspection_id"], "msg": "inspection of another farmer"}],
                    )
            await cur.execute(INSERT_BOOKING, params)
            row = await cur.fetchone()
        if row is None:
            raise Conflict(f"booking {booking_id} already exists")
        log.info(
            "booking created booking_id=%s farmer_id=%s location_id=%s vendor_id=%s",
            booking_id,
            farmer_id,
            request.location_id,
            request.vendor_id,
        )
        return row

    async def execute_snapshot(self, signal_id: str, data: str) -> None:
        """Insert an execute-snapshot signal (``debezium_signal.execute_snapshot_data``)."""
        async with self.connection() as conn:
            await conn.execute(insert_execute_snapshot(self._signal_table), (signal_id, data))

    async def history(
        self, booking_id: UUID, before: tuple[str, datetime] | None, limit: int
    ) -> list[dict[str, Any]]:
        """A page of a booking's snapshot history, newest first, older than ``before``."""
        sv, at = before if before is not None else (None, None)
        async with self.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                f"SELECT * FROM {HISTORY} WHERE booking_id = %s "
                "AND (%s::text IS NULL OR (source_version, evaluated_at) < (%s::text, %s))"
                " ORDER BY source_version DESC, evaluated_at DESC LIMIT %s",
                (booking_id, sv, sv, at, limit),
            )
            return await cur.fetchall()

    async def trends(self, location_id: UUID, bucket: str, since: datetime) -> list[dict[str, Any]]:
        """Per time bucket of evaluated_at: quality and sensor averages over the versions."""
        async with self.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(TRENDS, {"location": location_id, "bucket": bucket, "since": since})
            return await cur.fetchall()
