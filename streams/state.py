"""The state each key space keeps, and how a message changes it. Pure: no Faust, no I/O.

Delivery is at least once (a worker killed mid-batch replays its uncommitted messages on top of
the state it had already written to the changelog), so every transition here is idempotent: a
row change carries its Debezium version, and a change no newer than what the state already holds
for that row (or for its tombstone) is ignored.

A TRUNCATE of a source table at version V reaches every key of its key space (and keys first
seen later learn it from their partition's marks, ``TruncationMarks``): the key drops the
table's rows older than V and from then on ignores the table's changes no newer than V, which
may still arrive late (the route agent reads the CDC topics' partitions in no set order).
"""

from __future__ import annotations

import bisect
import json
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Generic, Literal, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from schemas.entities import Booking, Certificate, Inspection, PestDetection, Row, SensorReading
from schemas.envelope import ZERO_VERSION
from schemas.snapshot import SnapshotRecord
from streams import builder
from streams.conflate import Outbox
from streams.messages import (
    BookingChanged,
    CertificateChanged,
    InspectionChanged,
    InspectionPart,
    LocationPart,
    PestChanged,
    ReadingChanged,
    Subscribe,
    Truncated,
    Unsubscribe,
    VendorPart,
)

R = TypeVar("R", bound=Row)

# How many deleted row ids a key keeps to recognise a late duplicate of an older change.
TOMBSTONES_KEPT = 512
# Pest detections older than the snapshot window (plus a day of slack for clock skew) can never
# appear in a snapshot again; the location forgets them to keep its state small.
PEST_RETENTION = timedelta(days=8)

# A key's subscribers are kept in its state until there are more than SHARD_AT of them; then
# in SHARDS entries of their own beside it (``<key>#<shard>``), so that a subscription rewrites
# one of those, not the whole list: a vendor can have tens of thousands of bookings.
SHARD_AT = 512
SHARDS = 64
SHARD_MARK = "#"

Space = Literal["location", "vendor", "inspection"]
#: the foreign key spaces a booking links to, in the order its links are kept
SPACES: tuple[Space, ...] = ("location", "vendor", "inspection")


class _State(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Versioned(BaseModel, Generic[R]):
    model_config = ConfigDict(frozen=True)
    version: str
    row: R


class TruncationMarks(_State):
    """The version of the last TRUNCATE of each source table, kept per key-space partition."""

    versions: dict[str, str] = {}

    def merge(self, table: str, version: str) -> bool:
        if version <= self.versions.get(table, ZERO_VERSION):
            return False
        self.versions[table] = version
        return True


class PartitionFloor(_State):
    """The version floor of a booking partition (streams.messages.VersionFloor)."""

    version: str = ZERO_VERSION

    def raise_to(self, version: str) -> bool:
        if version <= self.version:
            return False
        self.version = version
        return True


def shard_of(booking_id: str) -> int:
    """The shard of a key's subscribers that holds ``booking_id``."""
    return zlib.crc32(booking_id.encode()) % SHARDS


def shard_key(key: str, shard: int) -> str:
    """The table key of shard ``shard`` of ``key``'s subscribers."""
    return f"{key}{SHARD_MARK}{shard}"


def is_shard_key(key: str) -> bool:
    return SHARD_MARK in key


#: reads one shard of a key's subscribers from where the key is stored (a list of its own)
ShardLoader = Callable[[int], list[str]]


class _Reader:
    """A state's shard loader, shared by its copies: a deep copy of the state (a key's retry,
    streams.processors.keyspace) must not copy the runtime's table behind it."""

    __slots__ = ("load",)

    def __init__(self, load: ShardLoader) -> None:
        self.load = load

    def __deepcopy__(self, memo: dict[int, Any]) -> _Reader:
        return self

    def __copy__(self) -> _Reader:
        return self


class _Memo:
    """What a key's state keeps in memory beside its fields, never stored: the subscriber
    shards read or changed, those changed since written, their reader, and a location's index
    of its readings. Created when first needed: pydantic initialises every private attribute
    of every state it parses, and one with a default factory costs about 30 us each time
    (pydantic 2.13 inspects the factory's signature), more than parsing a small state.

    It is no part of the state's value: two states with the same fields are equal whatever
    their memos hold. A deep copy copies it, except the reader, which the copies share."""

    __slots__ = ("dirty_shards", "indexed", "load_shard", "series_of", "shards")

    def __init__(self) -> None:
        self.shards: dict[int, list[str]] = {}
        self.dirty_shards: set[int] = set()
        self.load_shard: _Reader | None = None
        # reading id -> the series holding it, for the ``series`` dict it was built from
        self.series_of: dict[int, list[str]] = {}
        self.indexed: Any = None

    def __eq__(self, other: object) -> bool:
        return other is None or isinstance(other, _Memo)

    __hash__ = None  # type: ignore[assignment]


class KeyState(_State):
    """What every foreign key space keeps besides its rows: who listens, and how new it is.

    The subscribers are a sorted list in the state itself, or, past SHARD_AT of them
    (``sharded``), sorted lists in SHARDS entries beside it, which the runtime reads on demand
    through ``attach``'s loader and writes from ``shard_writes``."""

    subscribers: list[str] = []
    sharded: bool = False
    version: str = ZERO_VERSION
    tombstones: dict[str, str] = {}
    # the answers owed to the subscribers (see streams.conflate)
    outbox: Outbox = Outbox()
    # source table -> version of its last TRUNCATE that this key has applied
    truncated: dict[str, str] = {}
    _memo: _Memo | None = PrivateAttr(default=None)

    def _local(self) -> _Memo:
        memo = self._memo
        if memo is None:
            memo = self._memo = _Memo()
        return memo

    def truncate(self, table: str, version: str) -> bool:
        """Forget the rows of ``table`` older than ``version``; True when a row went."""
        if version <= self.truncated.get(table, ZERO_VERSION):
            return False
        self.truncated[table] = version
        if not self._drop_older(table, version):
            return False
        self._advance(version)
        return True

    def _drop_older(self, table: str, version: str) -> bool:
        raise NotImplementedError

    def _before_truncate(self, table: str, version: str) -> bool:
        """A change of ``table`` made before its last TRUNCATE, arriving late."""
        return version <= self.truncated.get(table, ZERO_VERSION)

    def attach(self, loader: ShardLoader) -> None:
        """Where this state's subscriber shards are read from (the runtime's table)."""
        self._local().load_shard = _Reader(loader)

    def _shard(self, shard: int) -> list[str]:
        memo = self._local()
        ids = memo.shards.get(shard)
        if ids is None:
            if memo.load_shard is None:
                raise RuntimeError("a sharded key's subscribers read with no loader attached")
            ids = memo.shards[shard] = memo.load_shard.load(shard)
        return ids

    def _ids_of(self, booking_id: str) -> tuple[list[str], int | None]:
        if not self.sharded:
            return self.subscribers, None
        shard = shard_of(booking_id)
        return self._shard(shard), shard

    def subscribe(self, msg: Subscribe | Unsubscribe) -> bool:
        # Each list stays sorted: found and changed by bisection, not re-sorted per subscriber
        # (a vendor can have tens of thousands).
        ids, shard = self._ids_of(msg.booking_id)
        at = bisect.bisect_left(ids, msg.booking_id)
        present = at < len(ids) and ids[at] == msg.booking_id
        if isinstance(msg, Subscribe) and not present:
            ids.insert(at, msg.booking_id)
        elif isinstance(msg, Unsubscribe) and present:
            del ids[at]
        else:
            shard = None  # unchanged
        if shard is not None:
            self._local().dirty_shards.add(shard)
        if not self.sharded and len(self.subscribers) > SHARD_AT:
            self._split()
        # A subscribe is answered even when it is a duplicate: the subscriber may have reset.
        return isinstance(msg, Subscribe)

    def _split(self) -> None:
        """Move the subscribers out of the state into its shards (each stays sorted)."""
        memo = self._local()
        for shard in range(SHARDS):
            memo.shards[shard] = []
        for booking_id in self.subscribers:
            memo.shards[shard_of(booking_id)].append(booking_id)
        memo.dirty_shards.update(range(SHARDS))
        self.subscribers, self.sharded = [], True

    def listeners(self) -> list[str]:
        """Every subscriber of the key."""
        if not self.sharded:
            return list(self.subscribers)
        return [b for shard in range(SHARDS) for b in self._shard(shard)]

    def listens(self, booking_id: str) -> bool:
        ids, _ = self._ids_of(booking_id)
        at = bisect.bisect_left(ids, booking_id)
        return at < len(ids) and ids[at] == booking_id

    def shard_writes(self, key: str) -> list[tuple[str, bytes]]:
        """The shards changed since the last call, as table entries to write (and then
        forgotten as changed)."""
        memo = self._memo
        if memo is None:
            return []
        writes = [
            (shard_key(key, shard), json.dumps(memo.shards[shard]).encode())
            for shard in sorted(memo.dirty_shards)
        ]
        memo.dirty_shards.clear()
        return writes

    def _bury(self, row_id: str, version: str) -> None:
        self.tombstones[row_id] = version
        if len(self.tombstones) > TOMBSTONES_KEPT:
            newest = sorted(self.tombstones.items(), key=lambda kv: kv[1])[-TOMBSTONES_KEPT:]
            self.tombstones = dict(newest)

    def _seen(self, row_id: str, current: str | None, version: str) -> bool:
        known = max(filter(None, (current, self.tombstones.get(row_id))), default=None)
        return known is not None and version <= known

    def _advance(self, version: str) -> None:
        self.version = max(self.version, version)


def series_key(sensor_id: str, sensor_type: str) -> str:
    """The key of one sensor's readings of one type: a combined device has one per type."""
    return json.dumps([sensor_id, sensor_type], separators=(",", ":"))


#: One reading as a location keeps it: (version, id, value, unit, reading time in microseconds
#: since the epoch, status, location_id). The series' key holds its sensor_id and sensor_type.
#: Plain values, not models: a location's state is parsed and written for every batch that
#: changes it, and tuples of them cost a twentieth of models holding UUIDs and datetimes.
Packed = tuple[str, int, float, str, int, str, str]
_V: Final = 0
_ID: Final = 1
_VALUE: Final = 2
_UNIT: Final = 3
_TIME: Final = 4
_STATUS: Final = 5
_LOCATION: Final = 6
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def pack(version: str, row: SensorReading) -> Packed:
    since = row.reading_time - _EPOCH
    micros = (since.days * 86_400 + since.seconds) * 1_000_000 + since.microseconds
    return (version, row.id, row.value, row.unit, micros, row.status, str(row.location_id))


def unpack(key: str, packed: Packed) -> SensorReading:
    """The reading ``packed`` of series ``key`` (series_key)."""
    sensor_id, sensor_type = json.loads(key)
    return SensorReading(
        id=packed[_ID],
        location_id=UUID(packed[_LOCATION]),
        sensor_id=sensor_id,
        sensor_type=sensor_type,
        value=packed[_VALUE],
        unit=packed[_UNIT],
        reading_time=_EPOCH + timedelta(microseconds=packed[_TIME]),
        status=packed[_STATUS],
    )


def _order(packed: Packed) -> tuple[int, int]:
    """Newest first: reading time, then id."""
    return packed[_TIME], packed[_ID]


_VersionedReading = Versioned[SensorReading]


def _legacy_series(value: dict[str, list[Any]]) -> dict[str, list[Packed]]:
    """``readings`` as states stored before the packed series held them: Versioned readings,
    per series_key or (older still) per sensor_id alone, each list newest first."""
    grouped: dict[str, list[Packed]] = {}
    for items in value.values():
        for item in items:
            v = (
                item
                if isinstance(item, Versioned)
                else Versioned[SensorReading].model_validate(item)
            )
            grouped.setdefault(series_key(v.row.sensor_id, v.row.sensor_type), []).append(
                pack(v.version, v.row)
            )
    for rows in grouped.values():
        rows.sort(key=_order, reverse=True)
    return grouped


class LocationState(KeyState):
    # series_key(sensor_id, sensor_type) -> its readings (Packed), newest first, at most
    # `history`. Kept per type so that a combined device's readings of one type never push its
    # latest of another out of the history.
    series: dict[str, list[Packed]] = {}
    # what states stored before ``series`` held their readings in; moved into it on loading
    readings: dict[str, list[Any]] = Field(default={}, exclude=True)
    pests: dict[str, Versioned[PestDetection]] = {}

    @model_validator(mode="after")
    def _from_legacy(self) -> LocationState:
        if self.readings:
            for key, rows in _legacy_series(self.readings).items():
                merged = {r[_ID]: r for r in [*self.series.get(key, ()), *rows]}
                self.series[key] = sorted(merged.values(), key=_order, reverse=True)
            self.readings = {}
        return self

    def history(self) -> dict[str, list[Versioned[SensorReading]]]:
        """Every series' readings as rows, newest first (for inspection and tests)."""
        return {
            key: [Versioned(version=p[_V], row=unpack(key, p)) for p in rows]
            for key, rows in self.series.items()
        }

    def _drop_older(self, table: str, version: str) -> bool:
        if table == "sensor_readings":
            kept = {k: [p for p in rows if p[_V] >= version] for k, rows in self.series.items()}
            kept = {k: rows for k, rows in kept.items() if rows}
            changed = kept != self.series
            self.series = kept
            return changed
        if table == "pest_detections":
            pests = {k: v for k, v in self.pests.items() if v.version >= version}
            changed = len(pests) != len(self.pests)
            self.pests = pests
            return changed
        return False

    def apply_reading(self, msg: ReadingChanged, *, history: int) -> bool:
        if self._before_truncate("sensor_readings", msg.version):
            return False
        row_id, rid = msg.row.id, f"r:{msg.row.id}"
        index = self._index()
        found = [
            (key, p)
            for key in index.get(row_id, ())
            for p in self.series.get(key, ())
            if p[_ID] == row_id
        ]
        current = found[0][1][_V] if found else None
        if self._seen(rid, current, msg.version):
            return False
        index.pop(row_id, None)
        for key, old in found:
            self.series[key] = [p for p in self.series[key] if p is not old]
            if not self.series[key]:
                del self.series[key]
        if msg.deleted:
            self._bury(rid, msg.version)
        else:
            key = series_key(msg.row.sensor_id, msg.row.sensor_type)
            rows = list(self.series.get(key, ()))
            # Newest first (reading time, then id): a storm's reading is the newest of its
            # series, and goes in front after one comparison.
            packed = pack(msg.version, msg.row)
            new = _order(packed)
            at = 0
            while at < len(rows) and _order(rows[at]) > new:
                at += 1
            rows.insert(at, packed)
            self.series[key] = rows[:history]
            index[row_id] = [key]
            for dropped in rows[history:]:
                index.pop(dropped[_ID], None)
            self.tombstones.pop(rid, None)
        self._advance(msg.version)
        return True

    def _index(self) -> dict[int, list[str]]:
        """Reading id -> its series, rebuilt when ``series`` was replaced since (a reading is
        looked up by id on every change; the history holds tens of rows)."""
        memo = self._local()
        if memo.indexed is not self.series:
            index: dict[int, list[str]] = {}
            for key, rows in self.series.items():
                for p in rows:
                    index.setdefault(p[_ID], []).append(key)
            memo.series_of, memo.indexed = index, self.series
        return memo.series_of

    def apply_pest(self, msg: PestChanged, *, now: datetime) -> bool:
        if self._before_truncate("pest_detections", msg.version):
            return False
        pid = str(msg.row.id)
        current = self.pests.get(pid)
        if self._seen(f"p:{pid}", current.version if current else None, msg.version):
            return False
        if msg.deleted:
            self.pests.pop(pid, None)
            self._bury(f"p:{pid}", msg.version)
        else:
            self.pests[pid] = Versioned(version=msg.version, row=msg.row)
        horizon = now - PEST_RETENTION
        self.pests = {k: v for k, v in self.pests.items() if v.row.detected_at >= horizon}
        self._advance(msg.version)
        return True

    def part(self, fk: str) -> LocationPart:
        latest = [unpack(key, rows[0]) for key, rows in sorted(self.series.items()) if rows]
        pests = [v.row for _, v in sorted(self.pests.items())]
        return LocationPart(fk=fk, version=self.version, readings=latest, pests=pests)


class VendorState(KeyState):
    certificates: dict[str, Versioned[Certificate]] = {}

    def _drop_older(self, table: str, version: str) -> bool:
        if table != "certificates":
            return False
        kept = {k: v for k, v in self.certificates.items() if v.version >= version}
        changed = len(kept) != len(self.certificates)
        self.certificates = kept
        return changed

    def apply_certificate(self, msg: CertificateChanged) -> bool:
        if self._before_truncate("certificates", msg.version):
            return False
        cid = str(msg.row.id)
        current = self.certificates.get(cid)
        if self._seen(cid, current.version if current else None, msg.version):
            return False
        if msg.deleted:
            self.certificates.pop(cid, None)
            self._bury(cid, msg.version)
        else:
            self.certificates[cid] = Versioned(version=msg.version, row=msg.row)
        self._advance(msg.version)
        return True

    def part(self, fk: str) -> VendorPart:
        certs = [v.row for _, v in sorted(self.certificates.items())]
        return VendorPart(fk=fk, version=self.version, certificates=certs)


class InspectionState(KeyState):
    inspection: Versioned[Inspection] | None = None

    def _drop_older(self, table: str, version: str) -> bool:
        if table != "crop_inspections" or self.inspection is None:
            return False
        if self.inspection.version >= version:
            return False
        self.inspection = None
        return True

    def apply_inspection(self, msg: InspectionChanged) -> bool:
        if self._before_truncate("crop_inspections", msg.version):
            return False
        iid = str(msg.row.id)
        current = self.inspection.version if self.inspection else None
        if self._seen(iid, current, msg.version):
            return False
        if msg.deleted:
            self.inspection = None
            self._bury(iid, msg.version)
        else:
            self.inspection = Versioned(version=msg.version, row=msg.row)
        self._advance(msg.version)
        return True

    def part(self, fk: str) -> InspectionPart:
        row = self.inspection.row if self.inspection else None
        return InspectionPart(fk=fk, version=self.version, inspection=row)


# --------------------------------------------------------------------------- bookings


class Slot(_State):
    """A booking's link to one foreign key; ``version`` None means asked for, not answered.

    The part itself is kept once per booking partition (``Shelf``), not in every booking.
    """

    # States written before the parts moved to the shelf carried a copy of the part here; it
    # is ignored when read, and such a booking asks for its parts again (see ``missing``).
    model_config = ConfigDict(extra="ignore")

    fk: str
    version: str | None = None
    # when the booking (last) subscribed to the key, while it waits for the answer
    asked_at: datetime | None = None

    @property
    def ready(self) -> bool:
        return self.version is not None


Part = LocationPart | VendorPart | InspectionPart
PartOf = Callable[[Space, str], Part | None]
PART_SPACE: dict[type, Space] = {
    LocationPart: "location",
    VendorPart: "vendor",
    InspectionPart: "inspection",
}


class Shelf:
    """The parts of one booking partition: one per (key space, key), shared by every booking
    of the partition that listens to that key. Parts of a key arrive in order (one key, one
    partition) and a part is as new as the greatest version it reflects, so the shelf keeps
    the part with the greatest version, the later of two equal ones (a pest leaving the window
    changes a part's content, not its version)."""

    def __init__(self) -> None:
        self.parts: dict[tuple[Space, str], Part] = {}

    def offer(self, part: Part) -> bool:
        """Keep ``part`` unless the shelf holds a newer one of its key; True when kept."""
        key = (PART_SPACE[type(part)], part.fk)
        held = self.parts.get(key)
        if held is not None and part.version < held.version:
            return False
        self.parts[key] = part.model_copy(update={"bookings": []})
        return True

    def get(self, space: Space, fk: str) -> Part | None:
        return self.parts.get((space, fk))


Command = tuple[Space, str, Subscribe | Unsubscribe]
TERMINAL = frozenset({"cancelled", "completed"})


class BookingState(_State):
    booking: Booking | None = None
    booking_version: str | None = None
    deleted: bool = False
    finished_at: datetime | None = None
    location: Slot | None = None
    vendor: Slot | None = None
    inspection: Slot | None = None
    # The greatest version of every change that reached this booking. It never goes back, so
    # a sink can refuse a snapshot that is older than the one it holds.
    watermark: str = ZERO_VERSION
    last_hash: str | None = None
    deadline: datetime | None = None
    # the snapshot owed downstream (see streams.conflate)
    outbox: Outbox = Outbox()
    # The version of the last TRUNCATE of storage_bookings this booking has applied.
    truncated_at: str | None = None

    @property
    def terminal(self) -> bool:
        return self.deleted or (self.booking is not None and self.booking.status in TERMINAL)

    def subscriptions(self) -> dict[Space, str]:
        """The foreign keys this booking's snapshot is made of, and listens to.

        A finished (cancelled, completed or deleted) booking keeps listening until it is
        evicted: its snapshot stays a function of the source tables alone, so that a replay
        in any interleaving converges to the same content.
        """
        b = self.booking
        if b is None:
            return {}
        fks: dict[Space, str] = {"location": str(b.location_id), "vendor": str(b.vendor_id)}
        if b.ai_inspection_id is not None:
            fks["inspection"] = str(b.ai_inspection_id)
        return fks

    def truncate(self, msg: Truncated) -> bool:
        """storage_bookings was truncated: a booking row older than that is gone (withdrawn).

        The booking keeps listening to its parts, as after a delete, until it is evicted.
        True when the booking changed.
        """
        if msg.table != "storage_bookings":
            return False
        if self.truncated_at is not None and msg.version <= self.truncated_at:
            return False
        self.truncated_at = msg.version
        if self.booking is None or self.deleted:
            return False
        if self.booking_version is not None and self.booking_version >= msg.version:
            return False
        was_terminal = self.terminal
        self.deleted, self.booking_version = True, msg.version
        self.watermark = max(self.watermark, msg.version)
        if not was_terminal or self.finished_at is None:
            self.finished_at = msg.committed_at
        return True

    def apply_booking(self, msg: BookingChanged, now: datetime | None = None) -> list[Command]:
        """Apply a change of the booking row; the subscriptions to send, asked at ``now``."""
        if self.booking_version is not None and msg.version <= self.booking_version:
            return []
        if self.truncated_at is not None and msg.version <= self.truncated_at:
            return []  # made before the table was truncated, arriving late
        booking_id = str(msg.row.id)
        was_terminal, before = self.terminal, self.subscriptions()
        self.booking, self.booking_version, self.deleted = msg.row, msg.version, msg.deleted
        self.watermark = max(self.watermark, msg.version)
        after = self.subscriptions()
        if not self.terminal:
            self.finished_at = None
        elif not was_terminal or self.finished_at is None:
            self.finished_at = msg.committed_at

        commands: list[Command] = []
        for space in SPACES:
            old, new = before.get(space), after.get(space)
            if old == new:
                continue
            if old is not None:
                commands.append((space, old, Unsubscribe(booking_id=booking_id)))
            if new is not None:
                commands.append((space, new, Subscribe(booking_id=booking_id)))
            setattr(self, space, None if new is None else Slot(fk=new, asked_at=now))
        return commands

    def evict(self, booking_id: str) -> list[Command]:
        """Unsubscribe a finished booking (its state is dropped by the caller)."""
        if not self.terminal:
            return []
        return [
            (space, fk, Unsubscribe(booking_id=booking_id))
            for space, fk in self.subscriptions().items()
        ]

    def apply_part(self, space: Space, part: Part) -> bool:
        """An answer of ``space`` reached this booking; True when it counts (the booking listens
        to that key, and the part is not older than one it was answered with before). The
        part's content is read from the partition's shelf when the booking is evaluated."""
        slot: Slot | None = getattr(self, space)
        if slot is None or slot.fk != part.fk:
            return False  # an answer for a key this booking no longer listens to
        if slot.version is not None and part.version < slot.version:
            return False
        slot.version = part.version
        self.watermark = max(self.watermark, part.version)
        return True

    def missing(self, parts: PartOf) -> list[Space]:
        """The answered slots whose part the shelf does not hold, or holds older than the one
        the booking was answered with (a state written before the parts were shelved, a shelf
        or a write of it lost with a worker): the booking must ask for them again."""
        found = []
        for space in SPACES:
            slot: Slot | None = getattr(self, space)
            if slot is None or slot.version is None:
                continue
            part = parts(space, slot.fk)
            if part is None or part.version < slot.version:
                found.append(space)
        return found

    def unanswered(self, now: datetime, after: timedelta) -> list[Space]:
        """The slots asked for longer than ``after`` ago and still not answered: the
        subscription (or its answer) may have been lost with a worker, so it is sent again."""
        return [
            space
            for space in SPACES
            if (slot := getattr(self, space)) is not None
            and not slot.ready
            and (slot.asked_at is None or slot.asked_at + after <= now)
        ]

    def ask_again(
        self, booking_id: str, spaces: list[Space], now: datetime | None = None
    ) -> list[Command]:
        """Forget the answers of ``spaces`` and subscribe to them anew, at ``now``."""
        commands: list[Command] = []
        for space in spaces:
            slot: Slot = getattr(self, space)
            slot.version, slot.asked_at = None, now
            commands.append((space, slot.fk, Subscribe(booking_id=booking_id)))
        return commands

    def expires_at(self, retention: timedelta) -> datetime | None:
        """When the booking is evicted: ``retention`` after the commit that finished it."""
        if not self.terminal or self.finished_at is None:
            return None
        return self.finished_at + retention

    def expired(self, now: datetime, retention: timedelta) -> bool:
        """Finished longer ago than ``retention``: evicted, not evaluated. So a replay or a
        rebuild that reads an evicted booking's history evicts it again instead of bringing
        its snapshot back."""
        at = self.expires_at(retention)
        return at is not None and at <= now

    def wake_at(
        self, retention: timedelta, ask_again_after: timedelta | None = None
    ) -> datetime | None:
        """The first instant time alone changes this booking: its snapshot's deadline, its
        eviction, or (with ``ask_again_after``) the time to ask again for an unanswered part."""
        times = [t for t in (self.deadline, self.expires_at(retention)) if t is not None]
        if ask_again_after is not None:
            for space in SPACES:
                slot: Slot | None = getattr(self, space)
                if slot is not None and not slot.ready and slot.asked_at is not None:
                    times.append(slot.asked_at + ask_again_after)
        return min(times, default=None)

    def floor(self, version: str) -> None:
        """Carry at least ``version`` (a rebuild's VersionFloor), whatever reached the booking."""
        self.watermark = max(self.watermark, version)

    def evaluate(
        self, now: datetime, parts: PartOf, views: builder.SharedViews | None = None
    ) -> SnapshotRecord | None:
        """Build the snapshot as of ``now`` from the parts ``parts`` gives (the partition's
        shelf); return it only if its content changed. ``views``: the parts' views shared with
        the other bookings evaluated at ``now``."""
        b = self.booking
        if b is None:
            return None
        held: dict[Space, Part] = {}
        for space in SPACES:
            slot: Slot | None = getattr(self, space)
            if slot is None:
                continue
            part = parts(space, slot.fk) if slot.ready else None
            if part is None:
                return None  # wait for every part, so that a move does not flicker empty
            held[space] = part
            self.watermark = max(self.watermark, part.version)
        location, vendor, inspection_part = (
            held.get("location"),
            held.get("vendor"),
            held.get("inspection"),
        )
        views = views or builder.SharedViews()
        readings = location.readings if isinstance(location, LocationPart) else []
        pests = location.pests if isinstance(location, LocationPart) else []
        certs = vendor.certificates if isinstance(vendor, VendorPart) else []
        inspection = (
            inspection_part.inspection if isinstance(inspection_part, InspectionPart) else None
        )
        at_location = views.location(location, readings, pests, now)
        at_vendor = views.vendor(vendor, certs, now)
        snap = builder.assemble(
            b, inspection=inspection, location=at_location, vendor=at_vendor, deleted=self.deleted
        ).model_copy(update={"finished_at": self.finished_at})
        self.deadline = builder.earliest(at_location.deadline, at_vendor.deadline)
        digest = builder.content_hash(snap)
        if digest == self.last_hash:
            return None
        self.last_hash = digest
        return SnapshotRecord(
            snapshot=snap, source_version=self.watermark, evaluated_at=now, content_hash=digest
        )
