"""The booking key space: where the parts meet and the snapshot is built.

Ticks arrive on every partition of this topic: from the leader's clock, and from this worker when
a conflation window ends (streams.agents.waker). A tick re-evaluates the bookings of its partition
whose deadline (a pest event leaving the window, a certificate expiring, a sensor going stale) has
passed, and emits those whose window is over. Table writes therefore stay inside stream
processing, as Faust requires.

A booking emits its snapshot conflated (streams.conflate): at most one per
``MIS_CONFLATE_WINDOW_S``, evaluated when it leaves, so under a storm the snapshot rate is
bounded by bookings / window. A part arrives as one message per booking partition naming the
bookings it answers.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from streams import conflate, metrics, tables, topics
from streams.agents.batch import KeyedBatch
from streams.agents.changes import decode
from streams.agents.common import guarded, key_of, load, parse, save
from streams.agents.truncation import Truncations
from streams.agents.waker import Waker
from streams.app import app, settings
from streams.clock import clock
from streams.conflate import DueIndex
from streams.deadletter import dead_letter
from streams.deadlines import DeadlineIndex
from streams.messages import (
    BOOKING_MSG,
    BookingChanged,
    Evict,
    InspectionPart,
    LocationPart,
    Tick,
    Truncated,
    VendorPart,
    VersionFloor,
    encode,
)
from streams.state import PART_SPACE, BookingState, Part, PartitionFloor, PartOf, Shelf, Space
from streams.topology import space_partition

log = logging.getLogger(__name__)

PART_CLASSES: dict[Space, type[Part]] = {space: cls for cls, space in PART_SPACE.items()}

WINDOW = timedelta(seconds=settings.conflate_window_s)
RETENTION = timedelta(days=settings.cleanup_after_days)
# A part asked for and not answered within this long is asked for again (a subscription lost
# with a worker that died before its producer delivered it).
ASK_AGAIN_AFTER = timedelta(seconds=settings.ask_again_after_s)
deadlines = DeadlineIndex()
pending = DueIndex()
waker = Waker(topics.bookings, encode(Tick()))


def _load_index(partition: int) -> None:
    if deadlines.loaded(partition):
        return
    entries, owed = [], []
    for raw_key, raw in tables.booking_state.items():
        key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
        if space_partition("booking", key, settings.partitions) == partition:
            state = parse(BookingState, raw)
            entries.append((key, state.wake_at(RETENTION, ASK_AGAIN_AFTER)))
            owed.append((key, state.outbox.owed_at))
    deadlines.load(partition, entries)
    pending.load(partition, owed)


class _Shelves:
    """The shelves of the partitions a batch goes through (streams.state.Shelf), read from the
    parts table as keys are first asked for and written as parts arrive."""

    def __init__(self, keys: KeyedBatch[BookingState]) -> None:
        self.keys = keys
        self._shelves: dict[int, Shelf] = {}
        self._looked_up: set[tuple[int, Space, str]] = set()

    @staticmethod
    def _key(space: Space, fk: str, partition: int) -> bytes:
        return f"{space}:{fk}@{partition}".encode()

    def get(self, space: Space, fk: str, event: Any) -> Part | None:
        partition = int(event.message.partition)
        shelf = self._shelves.setdefault(partition, Shelf())
        if (partition, space, fk) not in self._looked_up:
            self._looked_up.add((partition, space, fk))
            self.keys.make_current(event)
            raw = tables.booking_parts.get(self._key(space, fk, partition))
            if raw is not None:
                shelf.offer(PART_CLASSES[space].model_validate_json(raw))
        return shelf.get(space, fk)

    def offer(self, part: Part, event: Any) -> None:
        space, partition = PART_SPACE[type(part)], int(event.message.partition)
        self.get(space, part.fk, event)  # what the partition holds, first
        if self._shelves[partition].offer(part):
            held = self._shelves[partition].get(space, part.fk)
            assert held is not None
            self.keys.make_current(event)
            tables.booking_parts[self._key(space, part.fk, partition)] = encode(held)

    def of(self, event: Any) -> PartOf:
        """The parts as the partition of ``event`` holds them."""
        return lambda space, fk: self.get(space, fk, event)


class BookingBatch:
    """One batch of the booking topic: every booking it touches is evaluated once, at the end."""

    def __init__(self) -> None:
        self.keys: KeyedBatch[BookingState] = KeyedBatch(
            tables.booking_state, BookingState, 2 * settings.max_part_bytes
        )
        self.truncations = Truncations("booking", self.keys, "booking")
        self.shelves = _Shelves(self.keys)
        self._floors: dict[int, PartitionFloor] = {}

    def _floor(self, event: Any) -> PartitionFloor:
        # Kept beside the TRUNCATE marks: per partition, in the partition's own store.
        partition = int(event.message.partition)
        if partition not in self._floors:
            self.keys.make_current(event)
            self._floors[partition] = load(tables.truncations, f"floor:{partition}", PartitionFloor)
        return self._floors[partition]

    def _changed(self, key: str, state: BookingState) -> None:
        conflate.mark(state.outbox, clock(), WINDOW)
        self.keys.touch(key)

    async def handle(self, event: Any) -> None:
        metrics.EVENTS_IN.labels(topic=event.message.topic).inc()
        self.keys.seen(event)
        changes = await decode(event, "booking")
        if changes is not None:
            for key, change in changes:
                assert isinstance(change, BookingChanged)
                await self._booking(event, key, change)
            return
        try:
            msg = BOOKING_MSG.validate_json(event.value)
        except ValidationError as exc:
            await dead_letter(event, f"unreadable message: {exc.errors()[0]['msg']}")
            return
        if isinstance(msg, Tick):
            partition = event.message.partition
            _load_index(partition)
            for due in deadlines.due(partition, clock()):
                if self.keys.stored(due, event):
                    self._changed(due, self.keys.state(due, event, own=False))
            return
        if isinstance(msg, VersionFloor):
            floor = self._floor(event)
            if floor.raise_to(msg.version):
                self.keys.make_current(event)
                save(tables.truncations, f"floor:{event.message.partition}", floor)
            return
        if isinstance(msg, Truncated):
            for key in self.truncations.record(
                msg, event, tables.booking_state, lambda _, state: state.truncate(msg)
            ):
                self._changed(key, self.keys.state(key, event))
            return
        if isinstance(msg, LocationPart | VendorPart | InspectionPart):
            space = PART_SPACE[type(msg)]
            self.shelves.offer(msg, event)
            for booking_id in msg.bookings or [key_of(event)]:
                state = self._load(booking_id, event)
                if state.apply_part(space, msg):
                    self._changed(booking_id, state)
            return
        key = key_of(event)
        if isinstance(msg, Evict):
            await self._evict(key, self._load(key, event), event.message.partition)
        else:
            await self._booking(event, key, msg)

    def _load(self, key: str, event: Any) -> BookingState:
        """The booking's state, with the TRUNCATEs of its partition it has not applied yet."""
        state = self.keys.state(key, event)
        if self.truncations.absorb(
            event, lambda table, version: state.truncate(Truncated(table=table, version=version))
        ):
            self._changed(key, state)
        state.floor(self._floor(event).version)
        return state

    async def _booking(self, event: Any, key: str, msg: BookingChanged) -> None:
        state = self._load(key, event)
        known = state.booking_version
        for space, fk, command in state.apply_booking(msg, clock()):
            await topics.send_to_space(space, fk, encode(command))
        if state.booking_version != known:  # else a duplicate or an older change
            self._changed(key, state)

    async def finish(self) -> None:
        now = clock()
        for partition, event in self.keys.partitions().items():
            for key in pending.due(partition, now):
                if self.keys.stored(key, event):
                    self.keys.state(key, event, own=False)
                    self.keys.touch(key)
        await self.keys.flush(self.emit)

    async def _evict(self, key: str, state: BookingState, partition: int) -> None:
        if state.booking is None:
            # Evicted before, its tombstone lost with a worker: the partition knows nothing of
            # the booking any more, so its snapshot has no business downstream either.
            await topics.snapshots.send(key=key.encode(), value=None)
            return
        if not state.terminal:
            log.info("evict ignored: booking is live booking_id=%s", key)
            return
        for space, fk, command in state.evict(key):
            await topics.send_to_space(space, fk, encode(command))
        self.keys.drop(key)
        deadlines.set(partition, key, None)
        pending.set(partition, key, None)
        # The tombstone lets compaction forget the snapshot and the sink delete row and listing.
        await topics.snapshots.send(key=key.encode(), value=None)

    async def emit(self, key: str, state: BookingState) -> None:
        now, outbox, partition = clock(), state.outbox, self.keys.partition(key)
        if not conflate.is_due(outbox, now):
            pending.set(partition, key, outbox.due)
            if outbox.due is not None:
                waker.wake(partition, outbox.due)
            return
        outbox.due = None
        pending.set(partition, key, None)
        if state.expired(now, RETENTION):
            await self._evict(key, state, partition)
            return
        if self.keys.owed_again(key):  # the last snapshot may not have left: send it again
            state.last_hash = None
        parts = self.shelves.of(self.keys.last_event(key))
        again = state.missing(parts) + state.unanswered(now, ASK_AGAIN_AFTER)
        if again:
            log.info("booking asks for its parts again booking_id=%s parts=%s", key, again)
            for space, fk, command in state.ask_again(key, again, now):
                await topics.send_to_space(space, fk, encode(command))
        record = state.evaluate(now, parts)
        deadlines.set(partition, key, state.wake_at(RETENTION, ASK_AGAIN_AFTER))
        if record is not None:
            value = record.model_dump_json().encode()
            await self.keys.send(key, topics.snapshots, key=key.encode(), value=value)
            conflate.sent(outbox, now)
            metrics.SNAPSHOTS_EMITTED.inc()
            metrics.EVENTS_OUT.labels(topic=topics.snapshots.get_topic_name()).inc()


@app.agent(topics.booking_inputs)
async def bookings(stream: Any) -> None:
    async for events in stream.take_events(settings.batch_size, settings.batch_within_s):
        batch = BookingBatch()
        for event in events:
            await guarded(event, batch.handle)
        await batch.finish()


@app.on_partitions_revoked.connect  # type: ignore[arg-type]
async def _forget_revoked(app: Any, revoked: Any, **kwargs: Any) -> None:
    # Another worker may change these bookings while we don't own them: reload on return.
    gone = {tp.partition for tp in revoked if tp.topic == topics.bookings.get_topic_name()}
    deadlines.forget(gone)
    pending.forget(gone)
