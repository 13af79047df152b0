"""The Faust adapter of the booking key space: where the parts meet and the snapshot is built.

What a booking does with its messages is streams.processors.booking; this module reads the
events, loads and stores the bookings a batch at a time (streams.agents.batch), keeps the
partition's shelf of parts (streams.state.Shelf) in the parts table, sends what the processor
returns, and keeps the deadlines.

Ticks arrive on every partition of this topic: from the leader's clock, and from this worker when
a conflation window ends (streams.agents.waker). A tick re-evaluates the bookings of its partition
whose deadline (a pest event leaving the window, a certificate expiring, a sensor going stale) has
passed, and emits those whose window is over. Table writes therefore stay inside stream
processing, as Faust requires. A part arrives as one message per booking partition naming the
bookings it answers.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta
from functools import partial

from faust.types import EventT
from pydantic import ValidationError

from streams import metrics
from streams.agents.batch import Deliveries, KeyedBatch, Parsed
from streams.agents.changes import Changes
from streams.agents.common import (
    Store,
    add_agent,
    key_of,
    load,
    parse,
    save,
    stored_in_partition,
)
from streams.agents.truncation import Truncations
from streams.agents.waker import Waker
from streams.builder import SharedViews
from streams.clock import clock
from streams.conflate import DueIndex
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
from streams.processors.booking import BookingProcessor
from streams.processors.step import SNAPSHOTS, Step
from streams.runtime import Runtime
from streams.state import PART_SPACE, BookingState, Part, PartitionFloor, PartOf, Shelf, Space

log = logging.getLogger(__name__)

PART_CLASSES: dict[Space, type[Part]] = {space: cls for cls, space in PART_SPACE.items()}


class BookingAgent:
    """The booking key space on one worker: its processor, its deadlines and what is pending."""

    def __init__(self, rt: Runtime) -> None:
        s = rt.settings
        self.rt = rt
        self.processor = BookingProcessor(
            partitions=s.partitions,
            window=timedelta(seconds=s.conflate_window_s),
            retention=timedelta(days=s.cleanup_after_days),
            ask_again_after=timedelta(seconds=s.ask_again_after_s),
        )
        self.ask_again_after = self.processor.ask_again_after
        self.topic_name = rt.topics.bookings.get_topic_name()
        self.changes = Changes(rt.topics, rt.dead_letter)
        self.deadlines = DeadlineIndex()
        self.pending = DueIndex()
        self.deliveries = Deliveries(partial(rt.pace.confirm_after, s.confirm_after_s))
        metrics.UNCONFIRMED_SENDS.labels(table="booking").set_function(self.deliveries.pending)
        self.parsed = Parsed(s.booking_cache_keys)
        self.waker = Waker(rt.topics.bookings, encode(Tick()))

    def paced(self) -> BookingProcessor:
        """The processor with the window and the patience with unanswered subscriptions as
        this worker's pace has them now (streams.pace)."""
        pace, p = self.rt.pace, self.processor
        window, patience = pace.window(), pace.patience(self.ask_again_after)
        if window == p.window and patience == p.ask_again_after:
            return p
        return replace(p, window=window, ask_again_after=patience)

    def load_index(self, partition: int) -> None:
        if self.deadlines.loaded(partition):
            return
        p = self.processor
        entries, owed = [], []
        table = self.rt.tables.booking_state
        for key, raw in stored_in_partition(table, partition, "booking", p.partitions):
            state = parse(BookingState, raw)
            entries.append((key, state.wake_at(p.retention, p.ask_again_after)))
            owed.append((key, state.outbox.owed_at))
        self.deadlines.load(partition, entries)
        self.pending.load(partition, owed)

    def forget(self, partitions: set[int]) -> None:
        """Partitions revoked: another worker may change their bookings meanwhile."""
        self.deliveries.forget(partitions)
        self.deadlines.forget(partitions)
        self.pending.forget(partitions)
        self.parsed.clear()


class _Shelves:
    """The shelves of the partitions a batch goes through (streams.state.Shelf), read from the
    parts table as keys are first asked for and written as parts arrive."""

    def __init__(self, keys: KeyedBatch[BookingState], table: Store) -> None:
        self.keys, self.table = keys, table
        self._shelves: dict[int, Shelf] = {}
        self._looked_up: set[tuple[int, Space, str]] = set()

    @staticmethod
    def _key(space: Space, fk: str, partition: int) -> bytes:
        return f"{space}:{fk}@{partition}".encode()

    def get(self, space: Space, fk: str, event: EventT) -> Part | None:
        partition = int(event.message.partition)
        shelf = self._shelves.setdefault(partition, Shelf())
        if (partition, space, fk) not in self._looked_up:
            self._looked_up.add((partition, space, fk))
            self.keys.make_current(event)
            raw = self.table.get(self._key(space, fk, partition))
            if raw is not None:
                shelf.offer(PART_CLASSES[space].model_validate_json(raw))
        return shelf.get(space, fk)

    def offer(self, part: Part, event: EventT) -> None:
        space, partition = PART_SPACE[type(part)], int(event.message.partition)
        self.get(space, part.fk, event)  # what the partition holds, first
        if self._shelves[partition].offer(part):
            held = self._shelves[partition].get(space, part.fk)
            assert held is not None
            self.keys.make_current(event)
            self.table[self._key(space, part.fk, partition)] = encode(held)

    def of(self, event: EventT) -> PartOf:
        """The parts as the partition of ``event`` holds them."""
        return lambda space, fk: self.get(space, fk, event)


class BookingBatch:
    """One batch of the booking topic: every booking it touches is evaluated once, at the end."""

    def __init__(self, agent: BookingAgent) -> None:
        rt = agent.rt
        self.agent, self.processor, self.tables = agent, agent.paced(), rt.tables
        self.keys: KeyedBatch[BookingState] = KeyedBatch(
            rt.tables.booking_state,
            BookingState,
            deliveries=agent.deliveries,
            dead_letter=rt.dead_letter,
            max_bytes=2 * rt.settings.max_part_bytes,
            parsed=agent.parsed,
        )
        self.truncations = Truncations(
            "booking", self.keys, "booking", rt.tables.truncations, rt.settings.partitions
        )
        self.shelves = _Shelves(self.keys, rt.tables.booking_parts)
        self._floors: dict[int, PartitionFloor] = {}
        self._now, self._views = clock(), SharedViews()

    def _floor(self, event: EventT) -> PartitionFloor:
        # Kept beside the TRUNCATE marks: per partition, in the partition's own store.
        partition = int(event.message.partition)
        if partition not in self._floors:
            self.keys.make_current(event)
            self._floors[partition] = load(
                self.tables.truncations, f"floor:{partition}", PartitionFloor
            )
        return self._floors[partition]

    def _changed(self, key: str, state: BookingState) -> None:
        self.processor.changed(state, clock())
        self.keys.touch(key)

    async def handle(self, event: EventT) -> None:
        self.keys.seen(event)
        changes = await self.agent.changes.decode(event, "booking")
        if changes is not None:
            for key, change in changes:
                assert isinstance(change, BookingChanged)
                await self._booking(event, key, change)
            return
        try:
            msg = BOOKING_MSG.validate_json(event.value)
        except ValidationError as exc:
            await self.agent.rt.dead_letter(event, f"unreadable message: {exc.errors()[0]['msg']}")
            return
        if isinstance(msg, Tick):
            partition = event.message.partition
            self.agent.load_index(partition)
            for due in self.agent.deadlines.due(partition, clock()):
                if self.keys.stored(due, event):
                    self._changed(due, self.keys.state(due, event, own=False))
            return
        if isinstance(msg, VersionFloor):
            floor = self._floor(event)
            if floor.raise_to(msg.version):
                self.keys.make_current(event)
                save(self.tables.truncations, f"floor:{event.message.partition}", floor)
            return
        if isinstance(msg, Truncated):
            now = clock()
            for key in self.truncations.record(
                msg,
                event,
                self.tables.booking_state,
                lambda _, state: self.processor.truncate(state, msg, now),
            ):
                self.keys.touch(key)
            return
        if isinstance(msg, LocationPart | VendorPart | InspectionPart):
            space, now = PART_SPACE[type(msg)], clock()
            self.shelves.offer(msg, event)
            for booking_id in msg.bookings or [key_of(event)]:
                state = self._load(booking_id, event)
                if self.processor.part(state, space, msg, now):
                    self.keys.touch(booking_id)
            return
        key = key_of(event)
        if isinstance(msg, Evict):
            state = self._load(key, event)
            await self._send(key, self.processor.evict(key, state), event.message.partition)
        else:
            await self._booking(event, key, msg)

    def _load(self, key: str, event: EventT) -> BookingState:
        """The booking's state, with the TRUNCATEs of its partition it has not applied yet."""
        state, now = self.keys.state(key, event), clock()
        if self.truncations.absorb(
            event,
            lambda table, version: self.processor.truncate(
                state, Truncated(table=table, version=version), now
            ),
        ):
            self.keys.touch(key)
        state.floor(self._floor(event).version)
        return state

    async def _booking(self, event: EventT, key: str, msg: BookingChanged) -> None:
        state = self._load(key, event)
        known = state.booking_version
        step = self.processor.booking(key, state, msg, clock())
        await self._send(key, step, event.message.partition)
        if state.booking_version != known:
            self.keys.touch(key)

    async def _send(self, key: str, step: Step, partition: int, *, flushing: bool = False) -> None:
        """Send what the processor returned for ``key`` and keep its deadlines. While the key
        is flushed, its snapshot goes through the batch (its state names the send until
        Kafka confirmed it); subscriptions and tombstones go out at once."""
        topics = self.agent.rt.topics
        for out in step.messages:
            if out.to == SNAPSHOTS:
                assert out.key is not None
                if flushing and out.value is not None:
                    await self.keys.send(
                        key, topics.snapshots, key=out.key.encode(), value=out.value
                    )
                    metrics.SNAPSHOTS_EMITTED.inc()
                    metrics.of_topic(metrics.EVENTS_OUT, topics.snapshots.get_topic_name()).inc()
                else:
                    await topics.snapshots.send(key=out.key.encode(), value=out.value)
            else:
                await topics.key_spaces[out.to].send(
                    key=None if out.key is None else out.key.encode(),
                    value=out.value,
                    partition=out.partition,
                )
        if step.drop:
            self.keys.drop(key)
        if step.evaluated:
            self.agent.deadlines.set(partition, key, step.wake_at)
            self.agent.pending.set(partition, key, None)

    async def finish(self) -> None:
        # One instant for the whole flush: the bookings of a location evaluated together
        # share its view (builder.SharedViews), computed once.
        self._now, self._views = clock(), SharedViews()
        self.keys.touch_due(self.agent.pending.due, self._now)
        await self.keys.flush(self.emit)

    async def emit(self, key: str, state: BookingState) -> None:
        partition = self.keys.partition(key)
        parts = self.shelves.of(self.keys.last_event(key))
        step = self.processor.flush(
            key,
            state,
            parts,
            self._now,
            owed_again=self.keys.owed_again(key),
            views=self._views,
        )
        await self._send(key, step, partition, flushing=True)
        if not step.evaluated:
            self.agent.pending.set(partition, key, step.due)
            if step.due is not None:
                self.agent.waker.wake(partition, step.due)


def register(rt: Runtime) -> BookingAgent:
    """The agent of the booking key space on ``rt``'s app."""
    agent = BookingAgent(rt)
    add_agent(rt, "booking", f"{__name__}.bookings", lambda: BookingBatch(agent), agent.forget)
    return agent
