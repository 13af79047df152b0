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
from streams.agents.common import guarded, key_of, load, parse, save
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


async def _emit(key: str, state: BookingState, partition: int) -> None:
    record = state.evaluate(clock())
    save(tables.booking_state, key, state)
    deadlines.set(partition, key, state.deadline)
    if record is not None:
        await topics.snapshots.send(key=key.encode(), value=record.model_dump_json().encode())
        metrics.SNAPSHOTS_EMITTED.inc()
        metrics.EVENTS_OUT.labels(topic=topics.snapshots.get_topic_name()).inc()


async def _evict(key: str, state: BookingState, partition: int) -> None:
    if not state.terminal:
        log.info("evict ignored: booking is live booking_id=%s", key)
        return
    for space, fk, command in state.evict(key):
        await SPACE_TOPICS[space].send(key=fk.encode(), value=encode(command))
    tables.booking_state.pop(key.encode(), None)
    deadlines.set(partition, key, None)
    # The tombstone lets compaction forget the snapshot and makes the sink delete row and listing.
    await topics.snapshots.send(key=key.encode(), value=None)


async def _on_tick(partition: int) -> None:
    table = tables.booking_state
    if not deadlines.loaded(partition):
        entries = []
        for raw_key, raw in table.items():
            key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
            if partition_of(key) == partition:
                entries.append((key, parse(BookingState, raw).deadline))
        deadlines.load(partition, entries)
    for key in deadlines.due(partition, clock()):
        if table.get(key.encode()) is None:
            continue
        await _emit(key, load(table, key, BookingState), partition)


async def _handle(event: Any) -> None:
    metrics.EVENTS_IN.labels(topic=event.message.topic).inc()
    partition = event.message.partition
    try:
        msg = BOOKING_MSG.validate_json(event.value)
    except ValidationError as exc:
        await dead_letter(event, f"unreadable message: {exc.errors()[0]['msg']}")
        return
    if isinstance(msg, Tick):
        await _on_tick(partition)
        return
    key = key_of(event)
    state = load(tables.booking_state, key, BookingState)
    if isinstance(msg, Evict):
        await _evict(key, state, partition)
        return
    if isinstance(msg, BookingChanged):
        commands = state.apply_booking(msg)
        for space, fk, command in commands:
            await SPACE_TOPICS[space].send(key=fk.encode(), value=encode(command))
        if state.booking_version != msg.version:
            return  # a duplicate or an older change: nothing to do
    elif not state.apply_part(PART_SPACE[type(msg)], msg):
        return
    await _emit(key, state, partition)


@app.agent(topics.bookings)
async def bookings(stream: Any) -> None:
    async for event in stream.events():
        await guarded(event, _handle)


@app.on_partitions_revoked.connect
async def _forget_revoked(app: Any, revoked: Any, **kwargs: Any) -> None:
    # Another worker may change these bookings while we don't own them: reload on return.
    deadlines.forget(
        {tp.partition for tp in revoked if tp.topic == topics.bookings.get_topic_name()}
    )
