"""The bookings a benchmark writes to storage_bookings before it measures their snapshots."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg

from streams import source_db


def insert_bookings(
    pg: psycopg.Connection[Any], crop_type: str, locations: Iterable[UUID]
) -> list[UUID]:
    """A confirmed five-day 1 kg booking at each of ``locations``, its farmer and vendor its own."""
    now = datetime.now(UTC)
    return [
        source_db.insert(
            pg,
            "storage_bookings",
            **source_db.booking_values(
                farmer_id=uuid4(),
                vendor_id=uuid4(),
                location_id=location,
                crop_type=crop_type,
                quantity_kg=1,
                ai_inspection_id=None,
                grade=None,
                status="confirmed",
                duration_days=5,
                start_date=now,
                end_date=now + timedelta(days=5),
            ),
        )
        for location in locations
    ]
