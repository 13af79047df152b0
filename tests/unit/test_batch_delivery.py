"""A batch stores its keys' states only once Kafka has acknowledged what the batch sent."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import BaseModel

from streams.agents.batch import KeyedBatch


class Counter(BaseModel):
    n: int = 0


@dataclass
class Message:
    partition: int = 0
    topic: str = "t"
    offset: int = 0


@dataclass
class Event:
    message: Message = field(default_factory=Message)


@dataclass
class Topic:
    """send() hands back a delivery future the test resolves (or fails) itself."""

    futures: list[asyncio.Future[Any]] = field(default_factory=list)

    async def send(self, **kwargs: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future


async def _flush_with(
    topic: Topic, table: dict[bytes, bytes], outcome: BaseException | None
) -> None:
    batch: KeyedBatch[Counter] = KeyedBatch(table, Counter)
    event = Event()
    for key in ("a", "b"):
        batch.state(key, event).n += 1
        batch.touch(key)

    async def before_write(key: str, state: Counter) -> None:
        await batch.send(topic, key=key.encode(), value=b"x")

    flushing = asyncio.ensure_future(batch.flush(before_write))
    while len(topic.futures) < 2:
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    assert table == {}, "stored before the sends were delivered"
    for future in topic.futures:
        if outcome is None:
            future.set_result(None)
        else:
            future.set_exception(outcome)
    await flushing


def test_states_are_stored_once_every_send_of_the_batch_is_delivered() -> None:
    table: dict[bytes, bytes] = {}
    asyncio.run(_flush_with(Topic(), table, None))
    assert table == {b"a": b'{"n":1}', b"b": b'{"n":1}'}


def test_a_failed_delivery_stores_nothing_of_the_batch() -> None:
    table: dict[bytes, bytes] = {}
    with pytest.raises(ConnectionError):
        asyncio.run(_flush_with(Topic(), table, ConnectionError("broker gone")))
    assert table == {}
