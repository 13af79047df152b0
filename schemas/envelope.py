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
    # "t": a TRUNCATE of the table (with skipped.operations=none): no row, no key.
    op: Literal["c", "u", "d", "r", "t"]
    ts_ms: int | None = None

    @model_validator(mode="after")
    def _row_present(self) -> ChangeEvent[RowT]:
        if self.op == "t":
            return self
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
    def is_truncate(self) -> bool:
        return self.op == "t"

    @property
    def is_initial_snapshot(self) -> bool:
        """A row read by the connector's initial snapshot (not an incremental one)."""
        marker = self.source.snapshot
        return self.op == "r" and marker not in (None, False, "false", "incremental")

    @property
    def version(self) -> str:
        """The event's place in the order of the stream, as fixed-width hex text.

        Debezium's ``source.sequence`` is ``[last commit LSN, LSN]``: the LSN of the last
        transaction committed before this event, then the event's own. Streaming delivers whole
        transactions in commit order, so the pair increases along the stream where the LSN of a
        change alone does not (concurrent transactions interleave in the WAL).

        The last-commit LSN is null twice: in the rows of the initial snapshot, and in the
        changes of the first transaction streamed after it, before any commit was seen. Snapshot
        rows are the state at the snapshot's consistent point and keep ``(0, that LSN)``. A
        streamed change with no last commit takes its own LSN in both places: every streamed
        transaction commits after the consistent point, and ordering its changes by their own
        LSN keeps them above every snapshot row even when the transaction was open across the
        snapshot (its changes then precede the consistent point in the WAL). The next
        transaction's last-commit LSN is the end of that first transaction's commit record,
        beyond all of its changes, so the order holds across the switch.
        """
        commit_lsn: int | None = None
        lsn = self.source.lsn or 0
        if self.source.sequence:
            try:
                seq = json.loads(self.source.sequence)
                commit_lsn = int(seq[0]) if seq and seq[0] is not None else None
                lsn = int(seq[1]) if len(seq) > 1 and seq[1] is not None else lsn
            except (ValueError, TypeError, IndexError) as exc:
                raise ValueError(f"unreadable source.sequence {self.source.sequence!r}") from exc
        if commit_lsn is None:
            commit_lsn = 0 if self.is_initial_snapshot else lsn
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
