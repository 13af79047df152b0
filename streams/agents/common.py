"""What the agents share: the batched agent loop (add_agent), table (de)serialisation, keys."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any, Protocol, TypeVar, cast

from faust.streams import Stream
from faust.types import EventT, StreamT
from pydantic import BaseModel

from streams import metrics
from streams.errors import PipelineError
from streams.runtime import Runtime
from streams.state import is_shard_key
from streams.topology import space_partition

S = TypeVar("S", bound=BaseModel)
log = logging.getLogger(__name__)
#: a table of the join: raw keys to pydantic JSON (a Faust table, or a dict in the unit tests)
Store = MutableMapping[bytes, bytes]
#: parks an event on the dead-letter topic with a reason (streams.deadletter.DeadLetters)
DeadLetter = Callable[[Any, str], Awaitable[None]]


def key_of(event: EventT) -> str:
    key = event.key
    return key.decode() if isinstance(key, bytes) else str(key)


def parse(cls: type[S], raw: Any) -> S:
    if isinstance(raw, bytes | str):
        return cls.model_validate_json(raw)
    return cls.model_validate(raw)


def load(table: Store, key: str, cls: type[S]) -> S:
    """The state of ``key``; tables hold pydantic JSON as raw bytes."""
    raw = table.get(key.encode())
    return cls() if raw is None else parse(cls, raw)


async def guarded(
    event: EventT, handler: Callable[[Any], Awaitable[None]], dead_letter: DeadLetter
) -> None:
    """Run ``handler`` on one event; whatever it raises sends the event to the dead letters.

    An exception escaping a Faust agent would crash it and the event would be acknowledged
    anyway, that is, lost. Parked with its reason, it can be inspected and replayed.
    """
    try:
        await handler(event)
    except Exception as exc:
        log.exception(
            "processing failed topic=%s partition=%s offset=%s",
            event.message.topic,
            event.message.partition,
            event.message.offset,
        )
        await dead_letter(event, f"processing failed: {type(exc).__name__}: {exc}")


class StateTooLarge(PipelineError):
    """A key's state would not fit in one changelog message."""


def save(table: Store, key: str, state: BaseModel, max_bytes: int | None = None) -> bytes:
    """Store ``state`` as ``key``'s; returns what was stored."""
    raw = state.model_dump_json().encode()
    if max_bytes is not None and len(raw) > max_bytes:
        raise StateTooLarge(f"its state would be {len(raw):,} bytes, over {max_bytes:,}")
    table[key.encode()] = raw
    return raw


def stored_in_partition(
    table: Store, partition: int, space: str, partitions: int
) -> Iterator[tuple[str, bytes]]:
    """The keys of key space ``space`` that ``table`` holds in ``partition``, with their
    stored values (a key's subscriber shards, streams.state.shard_key, are not keys)."""
    for raw_key, raw in table.items():
        key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
        if is_shard_key(key):
            continue
        if space_partition(space, key, partitions) == partition:
            yield key, raw


def keys_in_partition(table: Store, partition: int, space: str, partitions: int) -> list[str]:
    """The keys of key space ``space`` that ``table`` holds in ``partition``."""
    return [key for key, _ in stored_in_partition(table, partition, space, partitions)]


class Batch(Protocol):
    """One batch of events of an agent: each event handled in turn, then the batch finished
    (its keys flushed and stored, streams.agents.batch)."""

    async def handle(self, event: EventT) -> None: ...

    async def finish(self) -> None: ...


def add_agent(
    rt: Runtime,
    space: str,
    name: str,
    new_batch: Callable[[], Batch],
    forget: Callable[[set[int]], None],
) -> None:
    """Add to ``rt``'s app the agent of key space ``space``: it reads the key space's inputs
    (streams.runtime.topics.Topics.inputs) in batches of ``MIS_BATCH_SIZE`` events, handing
    each to a ``new_batch()``, and calls ``forget`` with the partitions of the key space that
    a rebalance takes away (another worker may change their keys meanwhile)."""
    s, topic_name = rt.settings, rt.topics.key_spaces[space].get_topic_name()

    async def agent(stream: StreamT[Any]) -> None:
        events_of = cast(Stream[bytes], stream).take_events(s.batch_size, s.batch_within_s)
        async for events in events_of:
            taken, oldest = time.time(), None
            counts: dict[str, int] = {}
            for event in events:
                message = event.message
                counts[message.topic] = counts.get(message.topic, 0) + 1
                if message.timestamp:
                    delay = metrics.of_topic(metrics.INPUT_DELAY, message.topic)
                    delay.observe(max(0.0, taken - message.timestamp))
                    if oldest is None or message.timestamp < oldest:
                        oldest = message.timestamp
            for topic, n in counts.items():
                metrics.of_topic(metrics.EVENTS_IN, topic).inc(n)
            if oldest is not None:
                rt.pace.observe(taken - oldest, time.monotonic())
                metrics.CONFLATE_WINDOW.set(rt.pace.seconds)
                metrics.CONFLATE_WINDOW_WIDEST.set(rt.pace.widest_given)
            batch = new_batch()
            for event in events:
                await guarded(event, batch.handle, rt.dead_letter)
            await batch.finish()

    rt.app.agent(rt.topics.inputs(space), name=name)(agent)

    async def forget_revoked(app: Any, revoked: Any, **kwargs: Any) -> None:
        forget({tp.partition for tp in revoked if tp.topic == topic_name})

    rt.app.on_partitions_revoked.connect(forget_revoked)  # type: ignore[arg-type]
