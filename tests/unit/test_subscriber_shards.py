"""A key with many subscribers keeps them in shards beside its state (streams.state.KeyState):
a subscription rewrites one shard, not the whole list, and every reader sees one set."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from streams.agents.batch import Deliveries, KeyedBatch
from streams.agents.common import keys_in_partition
from streams.messages import Subscribe, Unsubscribe
from streams.processors.keyspace import KeySpaceProcessor
from streams.state import SHARD_AT, SHARDS, VendorState, shard_key, shard_of
from tests.unit.fakes import Event, Table

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _ids(n: int, start: int = 0) -> list[str]:
    return [str(UUID(int=(start + i) * 7919 + 1)) for i in range(n)]


def _stored_shards(writes: list[tuple[str, bytes]]) -> dict[int, list[str]]:
    return {int(k.rpartition("#")[2]): json.loads(v) for k, v in writes}


def test_past_the_threshold_the_subscribers_move_into_shards_and_stay_one_sorted_set() -> None:
    state = VendorState()
    ids = _ids(SHARD_AT + 1)
    for b in ids[:SHARD_AT]:
        state.subscribe(Subscribe(booking_id=b))
    assert not state.sharded and len(state.subscribers) == SHARD_AT
    assert state.shard_writes("v") == []

    state.subscribe(Subscribe(booking_id=ids[-1]))
    assert state.sharded and state.subscribers == []
    shards = _stored_shards(state.shard_writes("v"))
    assert sorted(shards) == list(range(SHARDS))
    assert sorted(b for part in shards.values() for b in part) == sorted(ids)
    for shard, part in shards.items():
        assert part == sorted(part) and all(shard_of(b) == shard for b in part)
    assert sorted(state.listeners()) == sorted(ids)
    assert state.listens(ids[0]) and not state.listens(_ids(1, start=10**6)[0])


def test_a_sharded_state_read_back_finds_its_subscribers_and_rewrites_one_shard() -> None:
    state = VendorState()
    ids = _ids(SHARD_AT + 50)
    for b in ids:
        state.subscribe(Subscribe(booking_id=b))
    store = {k: v for k, v in state.shard_writes("v")}
    header = state.model_dump_json()
    assert len(header) < 1_000  # the list is not in the state any more

    reread = VendorState.model_validate_json(header)
    reread.attach(lambda shard: json.loads(store.get(shard_key("v", shard), b"[]")))
    assert sorted(reread.listeners()) == sorted(ids)

    gone, new = ids[3], _ids(1, start=10**6)[0]
    reread.subscribe(Unsubscribe(booking_id=gone))
    reread.subscribe(Subscribe(booking_id=new))
    reread.subscribe(Subscribe(booking_id=new))  # a duplicate changes nothing more
    writes = dict(reread.shard_writes("v"))
    assert set(writes) == {shard_key("v", shard_of(gone)), shard_key("v", shard_of(new))}
    assert not reread.listens(gone) and reread.listens(new)


class _Owner:
    """What a loader belongs to at run time (a batch, its table): never to be copied."""

    def __init__(self, store: dict[str, bytes]) -> None:
        self.store = store

    def read(self, shard: int) -> list[str]:
        return list(json.loads(self.store.get(shard_key("v", shard), b"[]")))

    def __deepcopy__(self, memo: Any) -> Any:
        raise AssertionError("the loader's owner was copied")


def test_a_copy_of_a_sharded_state_shares_its_loader_and_changes_apart() -> None:
    state = VendorState()
    ids = _ids(SHARD_AT + 1)
    for b in ids:
        state.subscribe(Subscribe(booking_id=b))
    owner = _Owner(dict(state.shard_writes("v")))
    reread = VendorState.model_validate_json(state.model_dump_json())
    reread.attach(owner.read)
    trial = reread.model_copy(deep=True)  # as a key's retry takes it
    trial.subscribe(Unsubscribe(booking_id=ids[0]))
    assert not trial.listens(ids[0]) and reread.listens(ids[0])
    assert [k for k, _ in trial.shard_writes("v")] == [shard_key("v", shard_of(ids[0]))]
    assert reread.shard_writes("v") == []


async def _no_dead_letters(event: Any, reason: str) -> None:
    raise AssertionError(f"nothing is refused here: {reason}")


def _batch(table: Table, subscriptions: list[Any], answer: Any = None) -> None:
    async def run() -> None:
        keys: KeyedBatch[VendorState] = KeyedBatch(
            table, VendorState, deliveries=Deliveries(), dead_letter=_no_dead_letters
        )
        event = Event()
        keys.seen(event)
        for msg in subscriptions:
            keys.state("v1", event).subscribe(msg)
            keys.touch("v1")

        async def before_write(key: str, state: VendorState) -> None:
            if answer is not None:
                answer(key, state)

        await keys.flush(before_write)

    asyncio.run(run())


def test_a_batch_writes_the_state_and_only_the_shards_it_changed_in_its_partition() -> None:
    table = Table()
    ids = _ids(SHARD_AT + 10)
    _batch(table, [Subscribe(booking_id=b) for b in ids])
    assert len(table.writes) == 1 + SHARDS
    assert keys_in_partition(table, 0, "vendor", 1) == ["v1"]  # shards are not keys
    assert len(table[b"v1"]) < 1_000

    table.writes.clear()
    new = _ids(1, start=10**6)[0]
    _batch(table, [Subscribe(booking_id=new)])
    assert table.writes == [b"v1", shard_key("v1", shard_of(new)).encode()]

    # A later batch, reading everything from the table, answers every subscriber when due.
    p = KeySpaceProcessor(
        space="vendor",
        cls=VendorState,
        partitions=4,
        window=timedelta(0),
        max_part_bytes=450_000,
        reading_history=16,
    )
    answered: list[str] = []

    def answer(key: str, state: VendorState) -> None:
        state.outbox.due = NOW
        step = p.flush(key, state, NOW, changed=False)
        for out in step.messages:
            answered.extend(json.loads(out.value)["bookings"])

    _batch(table, [], answer=answer)  # nothing subscribed: the key is not touched
    assert answered == []
    _batch(table, [Subscribe(booking_id=ids[0])], answer=answer)
    assert sorted(answered) == sorted([*ids, new])
