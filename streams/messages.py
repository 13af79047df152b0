"""Messages on the pipeline's internal, re-keyed topics.

There is one topic per key space, and each carries every kind of message for its key in one
order: the data changes, the subscriptions of bookings, and (for bookings) the parts answered by
the other key spaces and the ticks of the clock. One ordered stream per key is what lets a
subscriber see the state as of its subscription and then every later change.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from schemas.entities import (
    Booking,
    Certificate,
    Inspection,
    PestDetection,
    SensorReading,
    UtcDatetime,
)


class _Msg(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RowChange(_Msg):
    """A source row changed. ``deleted`` rows carry their last state."""

    deleted: bool
    version: str


class BookingChanged(RowChange):
    kind: Literal["booking"] = "booking"
    row: Booking
    committed_at: UtcDatetime | None = None  # Debezium's source.ts_ms


class InspectionChanged(RowChange):
    kind: Literal["inspection"] = "inspection"
    row: Inspection


class ReadingChanged(RowChange):
    kind: Literal["reading"] = "reading"
    row: SensorReading


class PestChanged(RowChange):
    kind: Literal["pest"] = "pest"
    row: PestDetection


class CertificateChanged(RowChange):
    kind: Literal["certificate"] = "certificate"
    row: Certificate


class Subscribe(_Msg):
    """A booking asks a key space for its part, now and on every later change."""

    kind: Literal["subscribe"] = "subscribe"
    booking_id: str


class Unsubscribe(_Msg):
    kind: Literal["unsubscribe"] = "unsubscribe"
    booking_id: str


class LocationPart(_Msg):
    kind: Literal["location_part"] = "location_part"
    fk: str
    version: str
    # the subscribers it answers, all in the partition it is sent to (empty: the message key)
    bookings: list[str] = []
    readings: list[SensorReading]  # the latest reading of each (sensor_id, sensor_type)
    pests: list[PestDetection]


class VendorPart(_Msg):
    kind: Literal["vendor_part"] = "vendor_part"
    fk: str
    version: str
    # the subscribers it answers, all in the partition it is sent to (empty: the message key)
    bookings: list[str] = []
    certificates: list[Certificate]


class InspectionPart(_Msg):
    kind: Literal["inspection_part"] = "inspection_part"
    fk: str
    version: str
    # the subscribers it answers, all in the partition it is sent to (empty: the message key)
    bookings: list[str] = []
    inspection: Inspection | None


class Truncated(_Msg):
    """A source table was truncated: its rows with an older version are gone.

    A TRUNCATE names no row, so this goes to every partition of the key space the table's rows
    live in, and each key forgets the table's rows older than ``version`` (streams.state).
    """

    kind: Literal["truncated"] = "truncated"
    table: str
    version: str
    committed_at: UtcDatetime | None = None  # Debezium's source.ts_ms


class Evict(_Msg):
    """Forget a finished booking: unsubscribe, drop its state, tombstone its snapshot."""

    kind: Literal["evict"] = "evict"


class VersionFloor(_Msg):
    """Snapshots of this partition carry at least ``version`` from now on.

    ``mis replay --rebuild-tables`` sends it to every booking partition ahead of the history it
    re-keys, with the greatest version the sinks hold: a booking rebuilt from nothing has seen
    only its final parts, so the greatest version it saw can be lower than the one it once
    wrote, and the sinks would refuse its snapshot as older (after a fix to the builder, or
    evaluated at a later time). Later changes have greater versions still.
    """

    kind: Literal["version_floor"] = "version_floor"
    version: str


class Tick(_Msg):
    """Time passed: flush the keys of this partition whose conflation window is over, and
    re-evaluate the bookings whose deadline is due."""

    kind: Literal["tick"] = "tick"


class Gathered(_Msg):
    """Changes of one location's rows read together from Debezium's topic (streams.gather),
    in the order they were read; each is applied as if it had come on its own."""

    kind: Literal["gathered"] = "gathered"
    changes: list[Annotated[ReadingChanged | PestChanged, Field(discriminator="kind")]]


LocationMsg = Annotated[
    ReadingChanged | PestChanged | Gathered | Subscribe | Unsubscribe | Truncated | Tick,
    Field(discriminator="kind"),
]
VendorMsg = Annotated[
    CertificateChanged | Subscribe | Unsubscribe | Truncated | Tick, Field(discriminator="kind")
]
InspectionMsg = Annotated[
    InspectionChanged | Subscribe | Unsubscribe | Truncated | Tick, Field(discriminator="kind")
]
BookingMsg = Annotated[
    BookingChanged
    | LocationPart
    | VendorPart
    | InspectionPart
    | Evict
    | Tick
    | Truncated
    | VersionFloor,
    Field(discriminator="kind"),
]

LOCATION_MSG: TypeAdapter[LocationMsg] = TypeAdapter(LocationMsg)
VENDOR_MSG: TypeAdapter[VendorMsg] = TypeAdapter(VendorMsg)
INSPECTION_MSG: TypeAdapter[InspectionMsg] = TypeAdapter(InspectionMsg)
BOOKING_MSG: TypeAdapter[BookingMsg] = TypeAdapter(BookingMsg)


def encode(msg: BaseModel) -> bytes:
    return msg.model_dump_json().encode()
