"""What a batch stores as sent follows what Kafka acknowledged (streams.agents.batch).

A key's flush hands its messages to the producer and stores its state at once, naming the send
as unconfirmed; the batch never waits for the deliveries. A later flush of the partition stores
the send as confirmed, or sends the key again when a delivery failed or the send is unknown
(made by a worker that died before the producer delivered it).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from streams import clock, conflate
from streams.agents.batch import Deliveries, KeyedBatch
from streams.conflate import EPOCH, Outbox
from tests.unit.fakes import Event, Table

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _frozen_clock() -> Any:
    clock.set_clock(lambda: NOW)
    yield
    clock.set_clock(clock.system_clock)


async def _no_dead_letters(event: Any, reason: str) -> None:
    raise AssertionError(f"nothing is refused here: {reason}")


class Keyed(BaseModel):
    n: int = 0
    outbox: Outbox = Outbox()


@dataclass
class Topic:
    """send() hands back a delivery future the test resolves (or fails) itself."""

    name: str = "app-snapshots"
    futures: list[asyncio.Future[Any]] = field(default_factory=list)

    def get_topic_name(self) -> str:
        return self.name

    async def send(self, **kwargs: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future


class Agent:
    """A key space the way the agents drive it: a change makes the key due, the flush sends
    what is due (streams.agents.bookings.emit, keyspaces.answer)."""

    def __init__(self) -> None:
        self.table = Table()
        self.deliveries = Deliveries()
        self.topic = Topic()
        self.sent: list[str] = []

    def stored(self, key: str) -> Keyed:
        return Keyed.model_validate_json(self.table[key.encode()])

    async def batch(self, changes: list[str], owed: tuple[str, ...] = ()) -> None:
        """A batch of partition 0 with a change of each key of ``changes``; the keys ``owed``
        come up as the due index brings them (the agents' finish())."""
        keys: KeyedBatch[Keyed] = KeyedBatch(
            self.table, Keyed, deliveries=self.deliveries, dead_letter=_no_dead_letters
        )
        event = Event()
        keys.seen(event)
        for key in changes:
            state = keys.state(key, event)
            state.n += 1
            conflate.mark(state.outbox, NOW, timedelta(0))
            keys.touch(key)
        for key in owed:
            keys.state(key, event, own=False)
            keys.touch(key)

        async def emit(key: str, state: Keyed) -> None:
            if conflate.is_due(state.outbox, NOW):
                await keys.send(key, self.topic, key=key.encode(), value=str(state.n).encode())
                self.sent.append(key)
                conflate.sent(state.outbox, NOW)

        # The flush must finish without any delivery being resolved.
        await asyncio.wait_for(keys.flush(emit), timeout=1)


def _run(scenario: Any) -> None:
    asyncio.run(scenario())


def test_the_state_is_stored_at_once_naming_the_send_unconfirmed_until_delivered() -> None:
    async def scenario() -> None:
        agent = Agent()
        await agent.batch(["a"])
        assert agent.sent == ["a"]
        token = agent.stored("a").outbox.unconfirmed
        assert token is not None and agent.stored("a").outbox.due is None
        assert agent.deliveries.pending() == 1

        await agent.batch([])  # a tick: still in flight, nothing is written or sent
        assert agent.stored("a").outbox.unconfirmed == token and agent.sent == ["a"]

        agent.topic.futures[0].set_result(None)
        await asyncio.sleep(0)
        assert agent.deliveries.pending() == 1  # delivered, not yet stored as confirmed
        await agent.batch([])  # the next batch of the partition stores it confirmed
        assert agent.stored("a").outbox.unconfirmed is None
        assert agent.sent == ["a"]
        assert agent.deliveries.pending() == 0

    _run(scenario)


def test_a_failed_delivery_sends_the_key_again() -> None:
    async def scenario() -> None:
        agent = Agent()
        await agent.batch(["a"])
        agent.topic.futures[0].set_exception(ConnectionError("broker gone"))
        await asyncio.sleep(0)
        await agent.batch([])
        assert agent.sent == ["a", "a"]
        assert agent.stored("a").n == 1
        agent.topic.futures[1].set_result(None)
        await asyncio.sleep(0)
        await agent.batch([])
        assert agent.stored("a").outbox.unconfirmed is None

    _run(scenario)


def test_a_delivered_send_is_confirmed_by_the_next_change_or_after_confirm_after() -> None:
    async def scenario() -> None:
        agent = Agent()
        agent.deliveries = Deliveries(confirm_after=3600)
        await agent.batch(["a"])
        agent.topic.futures[0].set_result(None)
        await asyncio.sleep(0)
        writes = len(agent.table.writes)
        await agent.batch([])  # delivered, but not long enough ago for a write of its own
        assert len(agent.table.writes) == writes
        assert agent.stored("a").outbox.unconfirmed is not None
        await agent.batch(["a"])  # the key's next change stores the confirmation with it
        assert agent.sent == ["a", "a"] and len(agent.table.writes) == writes + 1
        token = agent.stored("a").outbox.unconfirmed
        agent.topic.futures[1].set_exception(ConnectionError("broker gone"))
        await asyncio.sleep(0)
        await agent.batch([])  # a failure is not held back: the key leaves again at once
        assert agent.sent == ["a", "a", "a"]
        assert agent.stored("a").outbox.unconfirmed not in (None, token)

        agent.deliveries._confirm_after = 0  # the time has passed
        agent.topic.futures[2].set_result(None)
        await asyncio.sleep(0)
        await agent.batch([])
        assert agent.stored("a").outbox.unconfirmed is None

    _run(scenario)


def test_the_wait_for_a_confirmation_follows_what_gives_it_at_each_batch() -> None:
    async def scenario() -> None:
        wait = [3600.0]
        agent = Agent()
        agent.deliveries = Deliveries(lambda: wait[0])  # the pace's two windows, say
        await agent.batch(["a"])
        agent.topic.futures[0].set_result(None)
        await asyncio.sleep(0)
        await agent.batch([])
        assert agent.stored("a").outbox.unconfirmed is not None
        wait[0] = 0.0  # the window narrowed
        await agent.batch([])
        assert agent.stored("a").outbox.unconfirmed is None

    _run(scenario)


def test_a_send_unknown_to_the_worker_is_made_again() -> None:
    """The worker that stored the state died before the producer delivered: the next worker
    finds a token it never handed out, and owes the key at once."""

    async def scenario() -> None:
        before = Agent()
        await before.batch(["a"])
        lost = before.stored("a").outbox.unconfirmed
        after = Agent()
        after.table = before.table  # the store survives; the deliveries did not
        assert after.stored("a").outbox.owed_at == EPOCH  # the due index loads it as due
        await after.batch([], owed=("a",))
        assert after.sent == ["a"]
        assert after.stored("a").n == 1
        assert after.stored("a").outbox.unconfirmed not in (None, lost)

    _run(scenario)


def test_later_sends_join_the_pending_one_and_the_newest_token_names_them() -> None:
    async def scenario() -> None:
        agent = Agent()
        await agent.batch(["a"])
        first = agent.stored("a").outbox.unconfirmed
        await agent.batch(["a"])
        second = agent.stored("a").outbox.unconfirmed
        assert first != second and agent.sent == ["a", "a"]
        agent.topic.futures[1].set_result(None)
        await asyncio.sleep(0)
        await agent.batch([])  # the first send is still in flight
        assert agent.stored("a").outbox.unconfirmed == second
        agent.topic.futures[0].set_exception(ConnectionError("broker gone"))
        await asyncio.sleep(0)
        await agent.batch([])  # one of them failed: the key leaves again, with its newest state
        assert agent.sent == ["a", "a", "a"]

    _run(scenario)


def test_a_key_owed_again_with_nothing_to_send_is_no_longer_owed() -> None:
    async def scenario() -> None:
        agent = Agent()
        stale = Keyed(n=1, outbox=Outbox(unconfirmed="another-worker.7"))
        agent.table[b"a"] = stale.model_dump_json().encode()
        keys: KeyedBatch[Keyed] = KeyedBatch(
            agent.table, Keyed, deliveries=agent.deliveries, dead_letter=_no_dead_letters
        )
        event = Event()
        keys.state("a", event, own=False)
        keys.touch("a")

        async def nothing(key: str, state: Keyed) -> None:
            assert conflate.is_due(state.outbox, NOW + timedelta(days=99999))
            state.outbox.due = None  # evaluated, nothing to send (no snapshot yet)

        await keys.flush(nothing)
        assert agent.stored("a").outbox == Outbox()

    _run(scenario)


def test_settle_is_pure() -> None:
    outbox = Outbox(unconfirmed="t")
    assert not conflate.settle(outbox, NOW, "in_flight") and outbox.due is None
    assert conflate.settle(outbox, NOW, "unknown") and outbox.due == NOW
    later = Outbox(unconfirmed="t", due=NOW + timedelta(seconds=5))
    assert conflate.settle(later, NOW, "failed") and later.due == NOW
    assert conflate.settle(later, NOW, "delivered") and later.unconfirmed is None
    assert not conflate.settle(Outbox(), NOW, "unknown")
    assert Outbox().owed_at is None and Outbox(due=NOW).owed_at == NOW
