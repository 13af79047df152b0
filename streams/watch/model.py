"""The watch's model, pure: source changes, the snapshots and sink writes that reflect them, and
the figures the view shows. No Kafka, Postgres or MongoDB here; ``streams.watch.source`` feeds it.

How a change is followed, from its commit to MongoDB:

- **Commit.** A Debezium change event (a value on ``sg.public.<table>``; keys are not read) gives
  the commit time, ``source.ts_ms``, and the change's version, computed from ``source.sequence``
  exactly as the pipeline does (``schemas.envelope``).
- **Snapshot.** The change *concerns* the snapshots whose booking, inspection, location or vendor
  is the changed row's (a booking by its id, an inspection by its id, readings and pest events by
  ``location_id``, certificates by ``vendor_id``). A snapshot record on ``<app>-snapshots`` that
  concerns the change and carries a ``source_version`` at least the change's reflects it: a
  snapshot's version is the greatest version that reached its booking, and versions grow with
  commit order. The time is the record's Kafka timestamp (set by the worker that produced it).
- **Postgres, MongoDB.** For each booking so reached, the row and the listing reflect the change
  once their ``source_version`` is at least the change's; their times are what the sinks record
  (``streams.watch.arrivals``).

Every time compared with the commit comes from the same machine's clock in the local stack.
Delays are to the *last* booking reached so far (a reading reaches every booking at its
location). Two approximations, both fine while changes come one at a time as in the demo:
a booking that got a newer change of its own before an older change's part reached it has a
version that already passes (the delay is then understated); and a row or listing written again
between two looks shows the later write (overstated). A change whose snapshots do not change (a
location without bookings, an older reading) reaches no snapshot: after ``GIVE_UP_S`` it shows
as such.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from schemas.entities import Row
from schemas.envelope import ChangeEvent
from streams.watch.arrivals import Arrival

# The snapshot field that names what a table's rows are joined on, and the row's column.
CONCERNS: dict[str, tuple[str, str]] = {
    "storage_bookings": ("booking_id", "id"),
    "crop_inspections": ("inspection_id", "id"),
    "sensor_readings": ("location_id", "location_id"),
    "pest_detections": ("location_id", "location_id"),
    "certificates": ("vendor_id", "vendor_id"),
}
SNAPSHOT_FIELDS = ("booking_id", "inspection_id", "location_id", "vendor_id")
OPS = {"c": "insert", "u": "update", "d": "delete", "r": "read"}

GIVE_UP_S = 30.0  # a change not through every sink by then stops being looked up
KEEP = 500  # changes kept for correlation
SHOW = 12  # changes shown
BOOKINGS_KEPT = 20_000  # latest snapshot per booking, for changes read after their snapshots
RATE_WINDOW_S = 10.0

Stage = Literal["snapshot", "postgres", "mongodb"]
STAGES: tuple[Stage, ...] = ("snapshot", "postgres", "mongodb")
State = Literal["done", "partial", "waiting", "none"]

_Envelope = ChangeEvent[Row]


def cdc_table(topic: str) -> str:
    return topic.rsplit(".", 1)[-1]


def describe(table: str, row: Mapping[str, Any]) -> str:
    """A short text naming a source row, for the list of changes."""

    def short(key: str) -> str:
        return str(row.get(key) or "?")[:8]

    if table == "storage_bookings":
        return (
            f"booking {short('id')} {row.get('crop_type')} {row.get('quantity_kg')} kg "
            f"{row.get('status')}"
        )
    if table == "crop_inspections":
        return f"inspection {short('id')} {row.get('status')} quality {row.get('quality_score')}"
    if table == "sensor_readings":
        value = row.get("value")
        shown = f"{value:.2f}" if isinstance(value, int | float) else str(value)
        return (
            f"{row.get('sensor_type')} {shown} {row.get('unit')} "
            f"({row.get('sensor_id')}) at location {short('location_id')}"
        )
    if table == "pest_detections":
        return f"{row.get('pest_type')} ({row.get('severity')}) at location {short('location_id')}"
    if table == "certificates":
        return f"{row.get('type')} {row.get('status')} of vendor {short('vendor_id')}"
    return table


@dataclass
class Reached:
    """One booking a change reached, and when each stage showed it."""

    snapshot: datetime
    postgres: datetime | None = None
    mongodb: datetime | None = None


@dataclass(eq=False)  # compared by identity
class Change:
    """A source change the watch follows through the pipeline."""

    position: tuple[str, int, int]  # topic, partition, offset
    table: str
    op: str
    summary: str
    committed_at: datetime
    version: str
    concern: tuple[str, str]  # snapshot field, value
    seen_at: datetime
    reached: dict[str, Reached] = field(default_factory=dict)

    def delay(self, stage: Stage) -> tuple[float | None, State]:
        """Seconds from the commit to the last booking reached at ``stage``, and how complete."""
        times = [getattr(r, stage) for r in self.reached.values()]
        got = [t for t in times if t is not None]
        if not got:
            return None, "waiting"
        seconds = (max(got) - self.committed_at).total_seconds()
        return seconds, ("done" if len(got) == len(times) else "partial")

    def pending(self, stage: Stage) -> list[str]:
        return [b for b, r in self.reached.items() if getattr(r, stage) is None]


def parse_change(
    topic: str, partition: int, offset: int, value: bytes | None, seen_at: datetime
) -> Change | None:
    """A change from a CDC message's value; None for tombstones and what is not a change."""
    if value is None:
        return None
    table = cdc_table(topic)
    if table not in CONCERNS:
        return None
    try:
        raw = json.loads(value)
        event = _Envelope.model_validate(raw)
        version = event.version
    except ValueError:
        return None  # the pipeline dead-letters it; the count shows there
    row = raw.get("before") if event.op == "d" else raw.get("after")
    field_name, column = CONCERNS[table]
    if not isinstance(row, dict) or row.get(column) is None:
        return None
    ts_ms = event.source.ts_ms or event.ts_ms or int(seen_at.timestamp() * 1000)
    return Change(
        position=(topic, partition, offset),
        table=table,
        op=event.op,
        summary=describe(table, row),
        committed_at=datetime.fromtimestamp(ts_ms / 1000, tz=UTC),
        version=version,
        concern=(field_name, str(row[column])),
        seen_at=seen_at,
    )


@dataclass(frozen=True)
class SnapshotSeen:
    booking_id: str
    concerns: tuple[tuple[str, str], ...]
    version: str
    at: datetime


def parse_snapshot(value: bytes | None, timestamp_ms: int) -> SnapshotSeen | None:
    """What a snapshot record says about the changes it reflects; None for a tombstone."""
    if value is None:
        return None
    try:
        record = json.loads(value)
        snapshot = record["snapshot"]
        version = str(record["source_version"])
        booking = str(snapshot["booking_id"])
    except (ValueError, KeyError, TypeError):
        return None
    concerns = tuple((f, str(snapshot[f])) for f in SNAPSHOT_FIELDS if snapshot.get(f))
    return SnapshotSeen(
        booking, concerns, version, datetime.fromtimestamp(timestamp_ms / 1000, UTC)
    )


class Rate:
    """A running count and its rate over the last ``window`` seconds."""

    def __init__(self, window: float = RATE_WINDOW_S) -> None:
        self.window = window
        self.total = 0
        self._events: deque[tuple[datetime, int]] = deque()

    def add(self, at: datetime, n: int = 1) -> None:
        self.total += n
        self._events.append((at, n))

    def per_s(self, now: datetime) -> float:
        horizon = now - timedelta(seconds=self.window)
        while self._events and self._events[0][0] < horizon:
            self._events.popleft()
        return sum(n for _, n in self._events) / self.window


@dataclass(frozen=True)
class ChangeRow:
    """One line of the list of changes, as the view shows it."""

    committed_at: datetime
    table: str
    op: str
    summary: str
    bookings: int
    delays: dict[Stage, tuple[float | None, State]]


@dataclass(frozen=True)
class Figures:
    now: datetime
    started_at: datetime
    changes: int
    changes_per_s: float
    snapshots: int
    snapshots_per_s: float
    rows_written: int | None
    listings_written: int | None
    rows: int | None
    consumer_lag: dict[str, int] | None
    dead_letters: int | None
    dead_letters_new: int | None
    recent: list[ChangeRow]


class Tracker:
    """Follows changes through snapshots to the sinks; fed by the data source, read by the view."""

    def __init__(self, started_at: datetime) -> None:
        self.started_at = started_at
        self.changes_rate, self.snapshots_rate = Rate(), Rate()
        self.changes: deque[Change] = deque(maxlen=KEEP)
        self._by_concern: dict[tuple[str, str], list[Change]] = {}
        self._latest: dict[str, SnapshotSeen] = {}
        self._latest_by_concern: dict[tuple[str, str], set[str]] = {}
        self.rows_written: int | None = None
        self.listings_written: int | None = None
        self.rows: int | None = None
        self.consumer_lag: dict[str, int] | None = None
        self.dead_letters: int | None = None
        self._dead_letters_at_start: int | None = None

    # --- input
    def on_change(self, change: Change) -> None:
        self.changes_rate.add(change.seen_at)
        if len(self.changes) == self.changes.maxlen:
            old = self.changes[0]
            followers = self._by_concern.get(old.concern, [])
            if old in followers:
                followers.remove(old)
            if not followers:
                self._by_concern.pop(old.concern, None)
        self.changes.append(change)
        self._by_concern.setdefault(change.concern, []).append(change)
        # Its snapshots may have been read before it: partitions are read in no common order.
        for booking in self._latest_by_concern.get(change.concern, ()):
            seen = self._latest[booking]
            if seen.version >= change.version:
                change.reached.setdefault(booking, Reached(seen.at))

    def on_snapshot(self, seen: SnapshotSeen | None, at: datetime) -> None:
        self.snapshots_rate.add(at)
        if seen is None:
            return
        self._forget(seen.booking_id)
        self._latest[seen.booking_id] = seen
        for concern in seen.concerns:
            self._latest_by_concern.setdefault(concern, set()).add(seen.booking_id)
        if len(self._latest) > BOOKINGS_KEPT:
            self._forget(next(iter(self._latest)))
        for concern in seen.concerns:
            for change in self._by_concern.get(concern, ()):
                if seen.version >= change.version and seen.booking_id not in change.reached:
                    change.reached[seen.booking_id] = Reached(seen.at)

    def _forget(self, booking: str) -> None:
        old = self._latest.pop(booking, None)
        for concern in old.concerns if old else ():
            bookings = self._latest_by_concern.get(concern)
            if bookings is not None:
                bookings.discard(booking)
                if not bookings:
                    del self._latest_by_concern[concern]

    def wanted(self, stage: Stage, now: datetime) -> set[str]:
        """Bookings whose row (``postgres``) or listing (``mongodb``) a shown change waits for."""
        horizon = now - timedelta(seconds=GIVE_UP_S)
        shown = list(self.changes)[-SHOW:]
        return {b for c in shown if c.seen_at >= horizon for b in c.pending(stage)}

    def on_arrivals(self, stage: Stage, arrivals: Iterable[Arrival]) -> None:
        by_booking = {a.booking_id: a for a in arrivals}
        for change in self.changes:
            for booking, reached in change.reached.items():
                found = by_booking.get(booking)
                if found is None or getattr(reached, stage) is not None:
                    continue
                if found.version >= change.version:
                    setattr(reached, stage, found.at)

    def on_counts(self, rows_written: int, listings_written: int, rows: int) -> None:
        self.rows_written, self.listings_written, self.rows = rows_written, listings_written, rows

    def on_lag(self, lag: dict[str, int] | None) -> None:
        self.consumer_lag = lag

    def on_dead_letters(self, total: int) -> None:
        if self._dead_letters_at_start is None:
            self._dead_letters_at_start = total
        self.dead_letters = total

    # --- output
    def figures(self, now: datetime) -> Figures:
        horizon = now - timedelta(seconds=GIVE_UP_S)
        recent = []
        for c in list(self.changes)[-SHOW:][::-1]:
            delays = {s: c.delay(s) for s in STAGES}
            if c.seen_at < horizon:  # given up: what is still missing will not come
                delays = {
                    s: (d, "none" if state == "waiting" else state)
                    for s, (d, state) in delays.items()
                }
            recent.append(
                ChangeRow(
                    c.committed_at, c.table, OPS.get(c.op, c.op), c.summary, len(c.reached), delays
                )
            )
        new = None
        if self.dead_letters is not None and self._dead_letters_at_start is not None:
            new = self.dead_letters - self._dead_letters_at_start
        return Figures(
            now=now,
            started_at=self.started_at,
            changes=self.changes_rate.total,
            changes_per_s=self.changes_rate.per_s(now),
            snapshots=self.snapshots_rate.total,
            snapshots_per_s=self.snapshots_rate.per_s(now),
            rows_written=self.rows_written,
            listings_written=self.listings_written,
            rows=self.rows,
            consumer_lag=self.consumer_lag,
            dead_letters=self.dead_letters,
            dead_letters_new=new,
            recent=recent,
        )


# --- text
def delay_text(delay: float | None, state: State) -> str:
    """``85 ms``, ``1.2 s``; ``…`` while waiting, ``+`` after a figure while more is to come,
    ``-`` when nothing came."""
    if delay is None:
        return "…" if state == "waiting" else "-"
    ms = max(delay, 0.0) * 1000
    text = f"{ms:.0f} ms" if ms < 10_000 else f"{ms / 1000:.1f} s"
    return text + ("+" if state == "partial" else "")


def count_text(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def rate_text(per_s: float) -> str:
    return f"{per_s:,.1f}/s" if per_s < 100 else f"{per_s:,.0f}/s"
