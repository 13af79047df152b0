"""Debezium's change events, decoded where they are read.

Bookings and inspections are keyed by their id, which is the key of their key space: their
agents read the CDC topic directly and an event belongs to the key it is keyed by. Every other
message (a reading, pest or certificate for its location or vendor, read by the route agent; an
event keyed some other way) is forwarded to its key's topic.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from streams import metrics, routing, topics
from streams.agents.common import key_of
from streams.app import settings
from streams.deadletter import dead_letter
from streams.errors import BadEvent
from streams.messages import encode

TABLE_OF = {topic: table for table, topic in topics.CDC.items()}
SPACE_TOPICS = {
    "booking": topics.bookings,
    "location": topics.locations,
    "vendor": topics.vendors,
    "inspection": topics.inspections,
}


async def decode(event: Any, space: str) -> list[tuple[str, BaseModel]] | None:
    """The changes ``event`` brings to keys of ``space``: None when it is not a CDC event."""
    table = TABLE_OF.get(event.message.topic)
    if table is None:
        return None
    if event.value is None:
        return []  # the tombstone after a delete: the delete event itself was applied
    key = key_of(event)
    try:
        routed = routing.route(table, event.value)
    except BadEvent as exc:
        await dead_letter(event, f"{exc} (key={key})")
        return []
    mine: list[tuple[str, BaseModel]] = []
    for target, fk, message in routed:
        topic = SPACE_TOPICS[target]
        if fk == routing.BROADCAST:  # a TRUNCATE: every partition of the key space
            for partition in range(settings.partitions):
                await topic.send(key=None, value=encode(message), partition=partition)
        elif target == space and fk == key:
            mine.append((fk, message))
            continue
        else:
            await topic.send(key=fk.encode(), value=encode(message))
        metrics.EVENTS_OUT.labels(topic=topic.get_topic_name()).inc()
    return mine
