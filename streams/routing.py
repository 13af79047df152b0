"""Debezium change events -> messages for the key spaces. Pure: no Faust, no I/O.

A row whose foreign key changed leaves one key and joins another: the old key gets a delete of
the old row and the new key an upsert, both at the change's version.

A TRUNCATE names no row: it becomes one ``Truncated`` message with the key ``BROADCAST``, which
the sender delivers to every partition of the key space.
"""

from __future__ import annotations

from pydantic import BaseModel, ValidationError

from schemas.envelope import EVENT_TYPES, ChangeEvent
from streams.errors import BadEvent
from streams.messages import (
    BookingChanged,
    CertificateChanged,
    InspectionChanged,
    PestChanged,
    ReadingChanged,
    Truncated,
)

Routed = tuple[str, str, BaseModel]  # (key space, key, message)
# The key of a message meant for every partition of its key space.
BROADCAST = ""
SPACE_OF_TABLE = {
    "storage_bookings": "booking",
    "crop_inspections": "inspection",
    "sensor_readings": "location",
    "pest_detections": "location",
    "certificates": "vendor",
}


def table_of(topic: str) -> str:
    return topic.rsplit(".", 1)[-1]


def route(table: str, value: bytes) -> list[Routed]:
    """Decode one change event of ``table`` and say where it goes; BadEvent if it can't be read."""
    event_type = EVENT_TYPES.get(table)
    if event_type is None:
        raise BadEvent(f"no route for table {table!r}")
    try:
        event: ChangeEvent = event_type.model_validate_json(value)  # type: ignore[type-arg]
        version = event.version
    except (ValidationError, ValueError) as exc:
        raise BadEvent(f"{table}: {_describe(exc)}") from exc

    committed = event.source.ts_ms
    if event.is_truncate:
        truncated = Truncated(
            table=table,
            version=version,
            committed_at=None if committed is None else committed * 1000,
        )
        return [(SPACE_OF_TABLE[table], BROADCAST, truncated)]
    deleted, row = event.is_delete, event.row
    if table == "storage_bookings":
        return [
            (
                "booking",
                str(row.id),
                BookingChanged(
                    deleted=deleted,
                    version=version,
                    row=row,
                    committed_at=None if committed is None else committed * 1000,
                ),
            )
        ]
    if table == "crop_inspections":
        return [
            (
                "inspection",
                str(row.id),
                InspectionChanged(deleted=deleted, version=version, row=row),
            )
        ]

    space, fk_field, message_type = {
        "sensor_readings": ("location", "location_id", ReadingChanged),
        "pest_detections": ("location", "location_id", PestChanged),
        "certificates": ("vendor", "vendor_id", CertificateChanged),
    }[table]
    routed: list[Routed] = []
    before = event.before
    if not deleted and before is not None and getattr(before, fk_field) != getattr(row, fk_field):
        routed.append(
            (
                space,
                str(getattr(before, fk_field)),
                message_type(deleted=True, version=version, row=before),
            )
        )
    routed.append(
        (
            space,
            str(getattr(row, fk_field)),
            message_type(deleted=deleted, version=version, row=row),
        )
    )
    return routed


def _describe(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<value>'}: {err['msg']}"
            for err in exc.errors()[:5]
        )
    return str(exc)
