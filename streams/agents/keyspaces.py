"""The Faust adapter of the foreign key spaces: location, vendor and inspection.

What a key does with its messages is streams.processors.keyspace; this module reads the
events, loads and stores the keys' states a batch at a time (streams.agents.batch), sends what
the processor returns and wakes a partition when a key's window ends (streams.agents.waker).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta
from functools import partial
from typing import Any

from faust.types import EventT, TableT, TopicT
from pydantic import TypeAdapter, ValidationError

from streams import metrics
from streams.agents.batch import Deliveries, KeyedBatch, Parsed
from streams.agents.changes import Changes
from streams.agents.common import add_agent, key_of, parse, stored_in_partition
from streams.agents.truncation import Truncations
from streams.agents.waker import Waker
from streams.clock import clock
from streams.conflate import DueIndex
from streams.messages import (
    INSPECTION_MSG,
    LOCATION_MSG,
    VENDOR_MSG,
    Gathered,
    Tick,
    Truncated,
    encode,
)
from streams.processors.keyspace import KeySpaceProcessor
from streams.runtime import Runtime
from streams.state import InspectionState, KeyState, LocationState, VendorState

log = logging.getLogger(__name__)
_TICK = encode(Tick())


class KeySpaceAgent:
    """One key space on one worker: its processor, its table, what is pending in it and who
    wakes it."""

    def __init__(
        self, rt: Runtime, name: str, adapter: TypeAdapter[Any], cls: type[KeyState]
    ) -> None:
        s = rt.settings
        self.rt, self.name, self.adapter, self.cls = rt, name, adapter, cls
        self.processor = KeySpaceProcessor(
            space=name,
            cls=cls,
            partitions=s.partitions,
            window=timedelta(seconds=s.conflate_window_s),
            max_part_bytes=s.max_part_bytes,
            reading_history=s.reading_history_per_sensor,
        )
        self.table: TableT = rt.tables.state[name]
        self.topic: TopicT = rt.topics.key_spaces[name]
        self.topic_name = self.topic.get_topic_name()
        self.changes = Changes(rt.topics, rt.dead_letter)
        self.pending = DueIndex()
        self.deliveries = Deliveries(partial(rt.pace.confirm_after, s.confirm_after_s))
        metrics.UNCONFIRMED_SENDS.labels(table=name).set_function(self.deliveries.pending)
        self.parsed = Parsed(s.state_cache_keys)
        self.waker = Waker(self.topic, _TICK)

    def paced(self) -> KeySpaceProcessor:
        """The processor with the window as this worker's pace has it now (streams.pace)."""
        window = self.rt.pace.window()
        if window == self.processor.window:
            return self.processor
        return replace(self.processor, window=window)

    def load_pending(self, partition: int) -> None:
        """What the table says is pending in ``partition`` (a restart leaves it there)."""
        if self.pending.loaded(partition):
            return
        entries = [
            (key, parse(self.cls, raw).outbox.owed_at)
            for key, raw in stored_in_partition(
                self.table, partition, self.name, self.rt.settings.partitions
            )
            if b'"due":"' in raw or b'"unconfirmed":"' in raw
        ]
        self.pending.load(partition, entries)
        if entries:
            log.info(
                "pending found topic=%s partition=%d keys=%d",
                self.topic_name,
                partition,
                len(entries),
            )

    def forget(self, partitions: set[int]) -> None:
        """Partitions revoked: another worker may change their keys meanwhile."""
        self.deliveries.forget(partitions)
        self.pending.forget(partitions)
        self.parsed.clear()


class KeySpaceBatch:
    def __init__(self, agent: KeySpaceAgent) -> None:
        rt = agent.rt
        self.agent, self.processor = agent, agent.paced()
        self.keys: KeyedBatch[KeyState] = KeyedBatch(
            agent.table,
            agent.cls,
            deliveries=agent.deliveries,
            dead_letter=rt.dead_letter,
            max_bytes=2 * rt.settings.max_part_bytes,
            parsed=agent.parsed,
        )
        self.truncations = Truncations(
            agent.cls.__name__, self.keys, agent.name, rt.tables.truncations, rt.settings.partitions
        )
        self.changed: set[str] = set()
        self.applied: dict[str, list[tuple[Any, Any]]] = {}  # key -> its (event, change)s

    async def handle(self, event: EventT) -> None:
        self.keys.seen(event)
        changes = await self.agent.changes.decode(event, self.agent.name)
        if changes is None:
            try:
                msg = self.agent.adapter.validate_json(event.value)
            except ValidationError as exc:
                reason = f"unreadable message: {exc.errors()[0]['msg']}"
                await self.agent.rt.dead_letter(event, reason)
                return
            if isinstance(msg, Tick):
                self.agent.load_pending(event.message.partition)
                return  # the due keys of every partition of the batch are flushed at its end
            if isinstance(msg, Truncated):
                now = clock()
                for key in self.truncations.record(
                    msg,
                    event,
                    self.agent.table,
                    lambda _, state: self.processor.truncate(state, msg.table, msg.version, now),
                ):
                    self.changed.add(key)
                    self.keys.touch(key)
                return
            if isinstance(msg, Gathered):
                # One location's changes as the gatherer read them (streams.gather).
                key = key_of(event)
                changes = [(key, change) for change in msg.changes]
            else:
                changes = [(key_of(event), msg)]
        for key, change in changes:
            self.apply(event, key, change)

    def apply(self, event: EventT, key: str, msg: Any) -> None:
        now = clock()
        self.applied.setdefault(key, []).append((event, msg))
        state = self.keys.state(key, event)
        if self.truncations.absorb(
            event, lambda table, version: self.processor.truncate(state, table, version, now)
        ):
            self.changed.add(key)
        if self.processor.apply(state, msg, now):
            self.changed.add(key)
        self.keys.touch(key)

    async def retry(self, key: str, stored: KeyState) -> KeyState:
        applied = self.applied.get(key, [])
        state, refused = self.processor.retry(key, stored, [m for _, m in applied], clock())
        for i, reason in refused:
            await self.agent.rt.dead_letter(
                applied[i][0], f"processing failed for key {key}: {reason}"
            )
        return state

    async def finish(self) -> None:
        self.keys.touch_due(self.agent.pending.due, clock())
        await self.keys.flush(self.answer, self.retry)

    async def answer(self, key: str, state: KeyState) -> None:
        step = self.processor.flush(key, state, clock(), changed=key in self.changed)
        bookings = self.agent.rt.topics.bookings
        for out in step.messages:
            assert out.key is not None
            await self.keys.send(
                key, bookings, key=out.key.encode(), value=out.value, partition=out.partition
            )
            metrics.of_topic(metrics.EVENTS_OUT, bookings.get_topic_name()).inc()
        partition = self.keys.partition(key)
        self.agent.pending.set(partition, key, step.due)
        if step.due is not None:
            self.agent.waker.wake(partition, step.due)


SPACES: tuple[tuple[str, TypeAdapter[Any], type[KeyState]], ...] = (
    ("location", LOCATION_MSG, LocationState),
    ("vendor", VENDOR_MSG, VendorState),
    ("inspection", INSPECTION_MSG, InspectionState),
)


def register(rt: Runtime) -> list[KeySpaceAgent]:
    """The agents of the foreign key spaces on ``rt``'s app."""
    agents = [KeySpaceAgent(rt, name, adapter, cls) for name, adapter, cls in SPACES]
    for agent in agents:
        add_agent(
            rt,
            agent.name,
            f"{__name__}.{agent.name}s",
            partial(KeySpaceBatch, agent),
            agent.forget,
        )
    return agents
