"""Debezium's five topics -> the key spaces, re-keyed by join key."""

from __future__ import annotations

from typing import Any

from streams import metrics, routing, topics
from streams.agents.common import guarded, key_of
from streams.app import app, settings
from streams.deadletter import dead_letter
from streams.errors import BadEvent
from streams.messages import encode

SPACES = {
    "booking": topics.bookings,
    "location": topics.locations,
    "vendor": topics.vendors,
    "inspection": topics.inspections,
}


async def _handle(event: Any) -> None:
    topic = event.message.topic
    metrics.EVENTS_IN.labels(topic=topic).inc()
    if event.value is None:
        return  # the tombstone after a delete: the delete event itself was routed
    try:
        routed = routing.route(routing.table_of(topic), event.value)
    except BadEvent as exc:
        await dead_letter(event, f"{exc} (key={key_of(event)})")
        return
    for space, key, message in routed:
        target = SPACES[space]
        if key == routing.BROADCAST:  # a TRUNCATE: every partition of the key space
            for partition in range(settings.partitions):
                await target.send(key=None, value=encode(message), partition=partition)
        else:
            await target.send(key=key.encode(), value=encode(message))
        metrics.EVENTS_OUT.labels(topic=target.get_topic_name()).inc()


@app.agent(topics.cdc)
async def route(stream: Any) -> None:
    async for event in stream.events():
        await guarded(event, _handle)
