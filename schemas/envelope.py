"""Debezium's change-event envelope, generic over the row type.

With the JSON converter and ``schemas.enable=false`` the value of a change event is
``{"before", "after", "source", "op", "ts_ms", ...}``. Deletes carry the old row in ``before``
(the source tables use REPLICA IDENTITY FULL) and are followed by a tombstone (a null value).
"""

from __future__ import annotations

import json
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, model_validator

from schemas.entities import Booking, Certificate, Inspection, PestDetection, Row, SensorReading

RowT = TypeVar("RowT", bound=Row)

# Versions are hex strings of fixed width so that text order is numeric order, in Python,
# in Postgres (COLLATE "C") and in MongoDB alike.
ZERO_VERSION = "0" * 32


def make_version(commit_lsn: int, lsn: int) -> str:
    return f"{commit_lsn:016x}{lsn:016x}"


class Source(BaseModel):
    model_config = ConfigDict(extra="ignore")

    lsn: int | None = None
    # '["<last commit LSN>","<LSN>"]': increases along the stream, unlike the LSN of a change
    # alone, which interleaves between concurrent transactions.
    sequence: str | None = None
    table: str | None = None
    ts_ms: int | None = None
    snapshot: str | bool | None = None


class ChangeEvent(BaseModel, Generic[RowT]):
    model_config = ConfigDict(extra="ignore")

    before: RowT | None = None
    after: RowT | None = None
    source: Source
    op: Literal["c", "u", "d", "r"]
    ts_ms: int | None = None

    @model_validator(mode="after")
    def _row_present(self) -> ChangeEvent[RowT]:
        if self.op == "d" and self.before is None:
            raise ValueError("delete event without 'before' (is REPLICA IDENTITY FULL set?)")
        if self.op != "d" and self.after is None:
            raise ValueError(f"'{self.op}' event without 'after'")
        return self

    @property
    def row(self) -> RowT:
        row = self.before if self.op == "d" else self.after
        assert row is not None  # guaranteed by _row_present
        return row

    @property
    def is_delete(self) -> bool:
        return self.op == "d"

    @property
    def version(self) -> str:
        commit_lsn, lsn = 0, self.source.lsn or 0
        if self.source.sequence:
            try:
                seq = json.loads(self.source.sequence)
                commit_lsn = int(seq[0]) if seq and seq[0] is not None else 0
                lsn = int(seq[1]) if len(seq) > 1 and seq[1] is not None else lsn
            except (ValueError, TypeError, IndexError) as exc:
                raise ValueError(f"unreadable source.sequence {self.source.sequence!r}") from exc
        return make_version(commit_lsn, lsn)


BookingEvent = ChangeEvent[Booking]
InspectionEvent = ChangeEvent[Inspection]
SensorReadingEvent = ChangeEvent[SensorReading]
PestDetectionEvent = ChangeEvent[PestDetection]
CertificateEvent = ChangeEvent[Certificate]

EVENT_TYPES: dict[str, type[ChangeEvent]] = {  # type: ignore[type-arg]
    "storage_bookings": BookingEvent,
    "crop_inspections": InspectionEvent,
    "sensor_readings": SensorReadingEvent,
    "pest_detections": PestDetectionEvent,
    "certificates": CertificateEvent,
}
