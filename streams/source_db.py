"""Writes to Storage Guard's source tables, as any application would make them.

The pipeline never calls this: it sees these writes only through Debezium. The demo, the HTTP
API's booking endpoint and the tests use it.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from uuid import UUID, uuid4

import psycopg
from pydantic import BaseModel

from schemas.entities import Booking, Certificate, Inspection, PestDetection, SensorReading

# The columns an application writes: each entity's fields but those the database fills in
# (the timestamps, and sensor_readings' serial id).
ENTITIES: dict[str, type[BaseModel]] = {
    "storage_bookings": Booking,
    "crop_inspections": Inspection,
    "sensor_readings": SensorReading,
    "pest_detections": PestDetection,
    "certificates": Certificate,
}
COLUMNS = {
    table: tuple(
        f
        for f in model.model_fields
        if f not in ("created_at", "updated_at") and (f, table) != ("id", "sensor_readings")
    )
    for table, model in ENTITIES.items()
}


def insert(conn: psycopg.Connection[Any], table: str, **values: Any) -> Any:
    """Insert one row and return its id (generated for uuid tables when not given)."""
    if table != "sensor_readings":
        values.setdefault("id", uuid4())
    cols = [c for c in COLUMNS[table] if c in values]
    unknown = set(values) - set(cols)
    if unknown:
        raise ValueError(f"{table} has no column(s) {sorted(unknown)}")
    marks = ", ".join(["%s"] * len(cols))
    sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks}) RETURNING id"
    row = conn.execute(sql, [values[c] for c in cols]).fetchone()
    assert row is not None
    return row[0]


def update(conn: psycopg.Connection[Any], table: str, row_id: Any, **values: Any) -> None:
    sets = ", ".join(f"{c} = %s" for c in values)
    extra = ", updated_at = now()" if table in ("storage_bookings", "crop_inspections") else ""
    conn.execute(f"UPDATE {table} SET {sets}{extra} WHERE id = %s", [*values.values(), row_id])


def delete(conn: psycopg.Connection[Any], table: str, row_id: Any) -> None:
    conn.execute(f"DELETE FROM {table} WHERE id = %s", [row_id])


def booking_values(
    *,
    farmer_id: UUID,
    vendor_id: UUID,
    location_id: UUID,
    crop_type: str,
    quantity_kg: int,
    ai_inspection_id: UUID | None = None,
    grade: str | None = None,
    status: str = "pending",
    start_date: datetime | None = None,
    end_date: datetime | None = None,
    duration_days: int | None = None,
) -> dict[str, Any]:
    return {k: v for k, v in locals().items() if v is not None}


def certificate_values(
    *,
    vendor_id: UUID,
    type: str,
    status: str = "valid",
    expiry_date: date | None = None,
    issuer: str | None = None,
    score: int | None = None,
) -> dict[str, Any]:
    return {k: v for k, v in locals().items() if v is not None}
