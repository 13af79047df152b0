"""Debezium signals that re-read one booking's rows. Pure: builds the signal, sends nothing.

An ``execute-snapshot`` signal (streams.debezium_signal) makes Debezium re-read rows of the
listed tables while streaming goes on. ``additional-conditions`` narrows each table to the rows
that make up one booking's snapshot: the booking, its inspection, the readings and pest
detections at its location and its vendor's certificates. The re-read rows arrive as ``op: "r"``
events on the ordinary CDC topics and flow through the pipeline like any change, so a snapshot
that missed a change converges on what the source tables hold now.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from streams.api.models import AdditionalCondition
from streams.debezium_signal import execute_snapshot_data

SCHEMA = "public"
SIGNAL_ID_MAX = 64  # debezium_signal.id is varchar(64)


@dataclass(frozen=True)
class BookingKeys:
    """The keys that tie a booking to the rows its snapshot is made of."""

    booking_id: UUID
    location_id: UUID
    vendor_id: UUID
    inspection_id: UUID | None


def _condition(table: str, column: str, value: UUID) -> AdditionalCondition:
    # The value is a parsed UUID, so its text is safe inside the SQL literal Debezium appends.
    return AdditionalCondition(data_collection=f"{SCHEMA}.{table}", filter=f"{column} = '{value}'")


def reconcile_conditions(keys: BookingKeys) -> list[AdditionalCondition]:
    conditions = [_condition("storage_bookings", "id", keys.booking_id)]
    if keys.inspection_id is not None:
        conditions.append(_condition("crop_inspections", "id", keys.inspection_id))
    conditions += [
        _condition("sensor_readings", "location_id", keys.location_id),
        _condition("pest_detections", "location_id", keys.location_id),
        _condition("certificates", "vendor_id", keys.vendor_id),
    ]
    return conditions


def signal_id(booking_id: UUID, nonce: str) -> str:
    return f"reconcile-{booking_id}-{nonce}"[:SIGNAL_ID_MAX]


def signal_data(conditions: list[AdditionalCondition]) -> str:
    """The ``data`` column of the signal row: each table read only where its condition holds."""
    return execute_snapshot_data(
        [c.data_collection for c in conditions], [(c.data_collection, c.filter) for c in conditions]
    )
