"""The booking key space: where the parts meet and the snapshot is built.

Ticks from the clock arrive on every partition of this topic; a tick re-evaluates the bookings of
its partition whose deadline (a pest event leaving the window, a certificate expiring, a sensor
going stale) has passed. Table writes therefore stay inside stream processing, as Faust requires.
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka.partitioner import DefaultPartitioner
from pydantic import ValidationError

from streams import metrics, tables, topics
from streams.agents.batch import KeyedBatch
from streams.agents.common import guarded, key_of, parse
from streams.agents.truncation import Truncations
from streams.app import app, settings
from streams.clock import clock
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
    encode,
)
from streams.state import BookingState, Space

log = logging.getLogger(__name__)

SPACE_TOPICS = {
    "location": topics.locations,
    "vendor": topics.vendors,
    "inspection": topics.inspections,
}
PART_SPACE: dict[type, Space] = {
    LocationPart: "location",
    VendorPart: "vendor",
    InspectionPart: "inspection",
}

deadlines = DeadlineIndex()
_partitioner = DefaultPartitioner()
_all_partitions = list(range(settings.partitions))


def partition_of(key: str) -> int:
    """The partition Kafka's default partitioner puts ``key`` in (murmur2, like the producer)."""
    return int(_partitioner(key.encode(), _all_partitions, _all_partitions))


def _load_index(partition: int) -> None:
    if deadlines.loaded(partition):
        return
    entries = []
    for raw_key, raw in tables.booking_state.items():
        key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
        if partition_of(key) == partition:
            entries.append((key, parse(BookingState, raw).deadline))
    deadlines.load(partition, entries)


class _Batch:
    """One batch of the booking topic: every booking it touches is evaluated once, at the end."""

    def __init__(self) -> None:
        self.keys: KeyedBatch[BookingState] = KeyedBatch(tables.booking_state, BookingState)
        self.truncations = Truncations("booking", self.keys)

    async def handle(self, event: Any) -> None:
        metrics.EVENTS_IN.labels(topic=event.message.topic).inc()
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
                    self.keys.state(due, event)
                    self.keys.touch(due)
            return
        if isinstance(msg, Truncated):
            for key in self.truncations.record(
                msg, event, tables.booking_state, lambda _, state: state.truncate(msg)
            ):
                self.keys.touch(key)
            return
        key = key_of(event)
        state = self.keys.state(key, event)
        if self.truncations.absorb(
            event, lambda table, version: state.truncate(Truncated(table=table, version=version))
        ):
            self.keys.touch(key)
        if isinstance(msg, Evict):
            await self._evict(key, state, event.message.partition)
        elif isinstance(msg, BookingChanged):
            known = state.booking_version
            for space, fk, command in state.apply_booking(msg):
                await SPACE_TOPICS[space].send(key=fk.encode(), value=encode(command))
            if state.booking_version != known:  # else a duplicate or an older change
                self.keys.touch(key)
        elif state.apply_part(PART_SPACE[type(msg)], msg):
            self.keys.touch(key)

    async def _evict(self, key: str, state: BookingState, partition: int) -> None:
        if not state.terminal:
            log.info("evict ignored: booking is live booking_id=%s", key)
            return
        for space, fk, command in state.evict(key):
            await SPACE_TOPICS[space].send(key=fk.encode(), value=encode(command))
        self.keys.drop(key)
        deadlines.set(partition, key, None)
        # The tombstone lets compaction forget the snapshot and the sink delete row and listing.
        await topics.snapshots.send(key=key.encode(), value=None)

    async def emit(self, key: str, state: BookingState) -> None:
        record = state.evaluate(clock())
        deadlines.set(self.keys.partition(key), key, state.deadline)
        if record is not None:
            await topics.snapshots.send(key=key.encode(), value=record.model_dump_json().encode())
            metrics.SNAPSHOTS_EMITTED.inc()
            metrics.EVENTS_OUT.labels(topic=topics.snapshots.get_topic_name()).inc()


@app.agent(topics.bookings)
async def bookings(stream: Any) -> None:
    async for events in stream.take_events(settings.batch_size, settings.batch_within_s):
        batch = _Batch()
        for event in events:
            await guarded(event, batch.handle)
        await batch.keys.flush(batch.emit)


@app.on_partitions_revoked.connect  # type: ignore[arg-type]
async def _forget_revoked(app: Any, revoked: Any, **kwargs: Any) -> None:
    # Another worker may change these bookings while we don't own them: reload on return.
    deadlines.forget(
        {tp.partition for tp in revoked if tp.topic == topics.bookings.get_topic_name()}
    )
