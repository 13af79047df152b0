"""KeyedBatch (streams.agents.batch) and DeadlineIndex (streams.deadlines) without a broker.

The table is a dict that records, for every read and write, the partition of the event Faust
would consider current: the one whose store and changelog the real table would use.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from faust.streams import _current_event
from pydantic import BaseModel

from streams.agents.batch import Deliveries, KeyedBatch, Parsed
from streams.deadlines import DeadlineIndex


class Count(BaseModel):
    n: int = 0


@dataclass
class Message:
    partition: int
    offset: int
    topic: str = "by-test"
    key: bytes | None = None
    value: bytes | None = None


class Event:
    def __init__(self, partition: int, offset: int) -> None:
        self.message = Message(partition, offset)


def _current_partition() -> int | None:
    ref = _current_event.get(None)
    event = ref() if ref is not None else None
    return None if event is None else int(event.message.partition)


class Table(dict[bytes, bytes]):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[bytes, int | None]] = []
        self.writes: list[tuple[bytes, int | None]] = []

    def get(self, key: bytes, default: Any = None) -> Any:  # type: ignore[override]
        self.reads.append((key, _current_partition()))
        return super().get(key, default)

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.writes.append((key, _current_partition()))
        super().__setitem__(key, value)


def _stored(table: Table, key: str) -> int | None:
    raw = dict.get(table, key.encode())
    return None if raw is None else Count.model_validate_json(raw).n


async def _nothing(key: str, state: Count) -> None:
    return None


def test_a_key_is_read_once_and_written_once_per_batch_under_its_last_event() -> None:
    table = Table()
    batch = _batch(table)
    events = [Event(0, 1), Event(2, 7), Event(1, 3)]
    for event in events:
        batch.seen(event)
        state = batch.state("a", event)
        batch.touch("a")
        state.n += 1  # in-memory, as the agents apply their events
    assert table.reads == [(b"a", 0)]
    assert sorted(batch.partitions()) == [0, 1, 2]
    assert batch.partition("a") == 1
    asyncio.run(batch.flush(_nothing))
    assert table.writes == [(b"a", 1)]
    assert _stored(table, "a") == 3
    assert batch.partitions() == {}


def test_an_untouched_key_is_not_written_and_a_dropped_key_is_deleted() -> None:
    table = Table()
    table[b"gone"] = Count(n=5).model_dump_json().encode()
    table[b"reborn"] = Count(n=7).model_dump_json().encode()
    table.writes.clear()
    batch = _batch(table)
    event = Event(0, 1)
    batch.state("read-only", event)
    assert batch.state("gone", event).n == 5
    batch.drop("gone")
    assert batch.stored("gone", event)  # still held until the flush
    batch.drop("reborn")
    batch.state("reborn", event).n += 1  # dropped in this batch, then changed: starts afresh
    asyncio.run(batch.flush(_nothing))
    assert table.writes == [(b"reborn", 0)]
    assert _stored(table, "reborn") == 1
    assert b"gone" not in table and not batch.stored("gone", event)


def test_a_key_its_flush_drops_is_deleted_not_written() -> None:
    # An eviction decided while the key is flushed (streams.agents.bookings emit)
    table = Table()
    table[b"old"] = Count(n=3).model_dump_json().encode()
    table.writes.clear()
    batch = _batch(table)
    batch.state("old", Event(1, 9)).n += 1
    batch.touch("old")
    batch.state("kept", Event(1, 10)).n += 1
    batch.touch("kept")

    async def evict_old(key: str, state: Count) -> None:
        if key == "old":
            batch.drop(key)

    asyncio.run(batch.flush(evict_old))
    assert b"old" not in table
    assert table.writes == [(b"kept", 1)]


class Parked(list[tuple[int, str]]):
    """The dead letters of a batch: (offset, reason)."""

    async def __call__(self, event: Any, reason: str) -> None:
        self.append((event.message.offset, reason))


def _batch(
    table: Table,
    max_bytes: int | None = None,
    parked: Parked | None = None,
    parsed: Parsed | None = None,
) -> Any:
    return KeyedBatch(
        table,
        Count,
        deliveries=Deliveries(),
        dead_letter=Parked() if parked is None else parked,
        max_bytes=max_bytes,
        parsed=parsed,
    )


def _add(table: Table, parsed: Parsed, key: str, n: int, parked: Parked | None = None) -> Count:
    """One batch that adds ``n`` to ``key``; the state object it stored."""
    batch = _batch(table, max_bytes=12, parked=parked, parsed=parsed)
    state: Count = batch.state(key, Event(0, 1))
    state.n += n
    batch.touch(key)
    asyncio.run(batch.flush(_nothing))
    return state


def test_a_stored_state_is_taken_by_the_next_batch_without_parsing_it_again() -> None:
    table, parsed = Table(), Parsed(size=8)
    first = _add(table, parsed, "k", 1)
    second = _add(table, parsed, "k", 1)
    assert second is first  # the same object: not parsed from the table
    assert _stored(table, "k") == 2


def test_a_state_changed_in_the_table_meanwhile_is_parsed_from_the_table() -> None:
    # A rebalance: another worker stored the key since.
    table, parsed = Table(), Parsed(size=8)
    first = _add(table, parsed, "k", 1)
    dict.__setitem__(table, b"k", Count(n=40).model_dump_json().encode())
    second = _add(table, parsed, "k", 1)
    assert second is not first and _stored(table, "k") == 41


def test_a_refused_key_is_parsed_from_the_table_next_time(parked: Parked) -> None:
    table, parsed = Table(), Parsed(size=8)
    first = _add(table, parsed, "k", 1)
    refused = _add(table, parsed, "k", 10**9, parked)  # over max_bytes: refused
    assert refused is first and refused.n == 10**9 + 1  # the batch changed the object...
    assert _stored(table, "k") == 1 and len(parked) == 1
    again = _add(table, parsed, "k", 1)  # ...so it is not taken again
    assert again is not first and _stored(table, "k") == 2


def test_the_cache_keeps_the_most_recently_stored_keys_and_forgets_deleted_ones() -> None:
    table, parsed = Table(), Parsed(size=2)
    a = _add(table, parsed, "a", 1)
    b = _add(table, parsed, "b", 1)
    c = _add(table, parsed, "c", 1)
    assert _add(table, parsed, "a", 1) is not a  # dropped, the least recently stored
    assert _add(table, parsed, "c", 1) is c
    batch = _batch(table, parsed=parsed)
    batch.state("b", Event(0, 2))
    batch.drop("b")
    asyncio.run(batch.flush(_nothing))
    assert b"b" not in table
    fresh = _add(table, parsed, "b", 1)
    assert fresh is not b and _stored(table, "b") == 1


@pytest.fixture
def parked() -> Parked:
    return Parked()


def test_a_refused_key_keeps_its_state_and_its_events_go_to_the_dead_letters(
    parked: Parked,
) -> None:
    table = Table()
    table[b"bad"] = Count(n=1).model_dump_json().encode()
    batch = _batch(table, parked=parked)
    for offset, key in [(1, "bad"), (2, "good"), (3, "bad")]:
        batch.state(key, Event(0, offset)).n += 10
        batch.touch(key)
    batch.state("bad", Event(0, 4), own=False)  # a tick: brought the key up, not about it

    async def refuse_bad(key: str, state: Count) -> None:
        if key == "bad":
            raise ValueError("too big")

    asyncio.run(batch.flush(refuse_bad))
    assert _stored(table, "bad") == 1
    assert _stored(table, "good") == 10
    assert [offset for offset, _ in parked] == [1, 3]
    assert all("bad" in reason and "too big" in reason for _, reason in parked)


def test_a_failed_key_is_retried_from_its_stored_state(parked: Parked) -> None:
    table = Table()
    table[b"k"] = Count(n=1).model_dump_json().encode()
    batch = _batch(table, max_bytes=12, parked=parked)  # {"n":1000000000} would be 16 bytes
    batch.state("k", Event(3, 1)).n = 10**9
    batch.touch("k")
    retried: list[int] = []

    async def retry(key: str, stored: Count) -> Count:
        retried.append(stored.n)
        return Count(n=stored.n + 1)

    asyncio.run(batch.flush(_nothing, retry))
    assert retried == [1]
    assert _stored(table, "k") == 2
    assert parked == []


# --- DeadlineIndex ----------------------------------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_nothing_is_indexed_for_a_partition_before_it_is_loaded() -> None:
    index = DeadlineIndex()
    index.set(0, "a", T0)
    assert not index.loaded(0)
    assert index.due(0, T0 + timedelta(days=1)) == []


def test_due_keys_come_out_once_in_deadline_order_per_partition() -> None:
    index = DeadlineIndex()
    index.load(0, [("late", T0 + timedelta(minutes=2)), ("early", T0), ("never", None)])
    index.load(1, [("other", T0)])
    assert index.loaded(0) and index.loaded(1)
    assert index.due(0, T0 - timedelta(seconds=1)) == []
    assert index.due(0, T0 + timedelta(minutes=5)) == ["early", "late"]
    assert index.due(0, T0 + timedelta(minutes=5)) == []
    assert index.due(1, T0) == ["other"]


def test_a_moved_or_cleared_deadline_supersedes_the_old_one() -> None:
    index = DeadlineIndex()
    index.load(0, [("moved", T0), ("cleared", T0), ("same", T0)])
    index.set(0, "moved", T0 + timedelta(hours=1))
    index.set(0, "cleared", None)
    index.set(0, "same", T0)  # unchanged: still due once
    assert index.due(0, T0) == ["same"]
    assert index.due(0, T0 + timedelta(hours=1)) == ["moved"]


def test_a_forgotten_partition_is_loaded_again_from_the_table() -> None:
    index = DeadlineIndex()
    index.load(0, [("a", T0)])
    index.forget([0])
    assert not index.loaded(0)
    assert index.due(0, T0) == []
    index.load(0, [("a", T0)])
    assert index.due(0, T0) == ["a"]
