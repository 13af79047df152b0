"""Debezium's change events, decoded where they are read.

Each key space's agent reads the CDC topics of its rows (topology.DIRECT_TABLES), whose events
arrive in the partition of their key: a booking's or an inspection's id, a reading's or a pest
detection's location, a certificate's vendor. A change belongs to the agent that reads it when
its key lives in the event's partition. What does not (the old key of a row whose foreign key
changed; an event Debezium placed otherwise, such as one written before the connector routed
by column) is forwarded to its key's partition of the key space's topic.
"""

from __future__ import annotations

from faust.types import EventT
from pydantic import BaseModel

from streams import metrics, routing, topology
from streams.agents.common import DeadLetter, key_of
from streams.errors import BadEvent
from streams.messages import encode
from streams.runtime.topics import Topics


class Changes:
    def __init__(self, topics: Topics, dead_letter: DeadLetter) -> None:
        self.topics, self.dead_letter = topics, dead_letter

    async def decode(self, event: EventT, space: str) -> list[tuple[str, BaseModel]] | None:
        """The changes ``event`` brings to keys of ``space``: None when it is not a CDC
        event."""
        table = self.topics.table_of.get(event.message.topic)
        if table is None:
            return None
        if event.value is None:
            return []  # the tombstone after a delete: the delete event itself was applied
        key = key_of(event)
        try:
            routed = routing.route(table, event.value)
        except BadEvent as exc:
            await self.dead_letter(event, f"{exc} (key={key})")
            return []
        mine: list[tuple[str, BaseModel]] = []
        here, partitions = int(event.message.partition), self.topics.partitions
        for target, fk, message in routed:
            topic = self.topics.key_spaces[target]
            if fk == routing.BROADCAST:  # a TRUNCATE: every partition of the key space
                for partition in range(partitions):
                    await topic.send(key=None, value=encode(message), partition=partition)
            elif target == space and topology.space_partition(target, fk, partitions) == here:
                mine.append((fk, message))
                continue
            else:
                await self.topics.send_to_space(target, fk, encode(message))
            metrics.of_topic(metrics.EVENTS_OUT, topic.get_topic_name()).inc()
        return mine
