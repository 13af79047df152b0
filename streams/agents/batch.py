"""Processing a batch of events per key: load each key's state once, write it once.

Under load, many events for one key arrive together (a burst of readings at one location, the
parts answering them at each booking). Applying them to one in-memory state and writing the table
and the downstream message once per key per batch does the same work a fraction of the times.

Faust writes a table key into the store and changelog of the partition of the *current event*.
Reads go to the store of the current event's partition too. A batch spans partitions, so each
key is read while its event is made current, and written while its last event is.

A key whose flush fails (its part would not fit in a message, a send is refused) keeps the state
it had before the batch, and every one of its events in the batch goes to the dead letters with
the reason; the other keys of the batch are written as usual.

What is stored as sent follows what Kafka acknowledged, without the stream ever waiting for
the producer. The messages a key's flush sends go through ``send``; the key's state is written
at once, with its outbox naming the send as ``unconfirmed`` (streams.conflate), and the
delivery futures are watched from here (``Deliveries``). A later batch of the partition (a
leader's tick reaches every partition each ``MIS_TICK_INTERVAL_S``) writes the key again with
the send confirmed, or makes it due again if a delivery failed. A worker that dies before the
producer delivered leaves the token in the store; the worker that loads the key next does not
know it and sends the key again. Awaiting the deliveries inside the batch instead would hold
the agent, and with it a rebalance's wait for the streams to drain, for as long as the
producer retries (``producer_request_timeout``, 20 minutes by default).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import signal
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, Generic, TypeVar

from faust.types import EventT
from pydantic import BaseModel

from streams import conflate
from streams.agents.common import DeadLetter, Store, load, parse, save
from streams.clock import clock
from streams.conflate import Delivery, Outbox
from streams.runtime.internals import make_current
from streams.state import KeyState, shard_key

S = TypeVar("S", bound=BaseModel)
log = logging.getLogger(__name__)

# Tokens name one send of one key: unique to this process, so that a token found in the store
# that this process did not hand out is known to be someone else's.
_RUN = uuid.uuid4().hex[:12]
_SEQ = itertools.count(1)


@dataclass(eq=False)
class _Sends:
    token: str
    outstanding: int = 0
    failed: bool = False
    settled_at: float = 0.0  # time.monotonic() when the last outstanding send completed


class Deliveries:
    """The sends of one table's keys, from when they are handed to the producer until the
    store shows them confirmed. Later sends of a key join its entry: it is delivered when all
    of them are, failed when any failed, and named by the newest token.

    A delivered send is stored as confirmed by the key's next write, or, if the key is not
    written again within ``confirm_after`` seconds, by a write of its own then: under load a
    key's confirmation rides on its next change instead of costing a write (and a changelog
    message) per send; the agents wait two conflation windows (streams.pace.Pace.confirm_after).
    A failed send is made again at the next batch of its partition."""

    def __init__(self, confirm_after: float | Callable[[], float] = 0.0) -> None:
        """``confirm_after``: seconds, or what gives them at each batch (streams.pace)."""
        self._sends: dict[int, dict[str, _Sends]] = {}
        self._confirm_after = confirm_after

    @staticmethod
    def token() -> str:
        return f"{_RUN}.{next(_SEQ)}"

    def track(self, partition: int, key: str, token: str, futures: list[Awaitable[Any]]) -> None:
        """The key's state naming ``token`` is stored: watch the deliveries of its send."""
        entry = self._sends.setdefault(partition, {}).get(key)
        if entry is None:
            entry = self._sends[partition][key] = _Sends(token)
        entry.token = token
        for future in futures:
            entry.outstanding += 1
            asyncio.ensure_future(future).add_done_callback(partial(self._done, entry, key))

    @staticmethod
    def _done(entry: _Sends, key: str, future: asyncio.Future[Any]) -> None:
        entry.outstanding -= 1
        entry.settled_at = time.monotonic()
        if future.cancelled() or future.exception() is not None:
            entry.failed = True
            reason = "cancelled" if future.cancelled() else repr(future.exception())
            log.warning("send not delivered, the key is sent again key=%s reason=%s", key, reason)

    def delivery(self, partition: int, key: str, token: str | None) -> Delivery:
        entry = self._sends.get(partition, {}).get(key)
        if entry is None or entry.token != token:
            return "unknown"
        if entry.outstanding:
            return "in_flight"
        return "failed" if entry.failed else "delivered"

    def settled(self, partition: int) -> list[str]:
        """The keys of ``partition`` whose sends have all completed and are to be stored so
        now: failed, or delivered at least ``confirm_after`` seconds ago."""
        wait = self._confirm_after
        before = time.monotonic() - (wait() if callable(wait) else wait)
        return [
            k
            for k, e in self._sends.get(partition, {}).items()
            if not e.outstanding and (e.failed or e.settled_at <= before)
        ]

    def discard(self, partition: int, key: str) -> None:
        entries = self._sends.get(partition, {})
        entry = entries.get(key)
        if entry is not None and not entry.outstanding:
            del entries[key]

    def pending(self) -> int:
        """Keys whose stored state does not show their last send confirmed yet: a worker stopped
        now leaves these sends to be made again by the worker that next loads the keys."""
        return sum(len(entries) for entries in self._sends.values())

    def forget(self, partitions: Iterable[int]) -> None:
        """After a rebalance: the keys may have been changed elsewhere meanwhile. A send still
        named in the store is then unknown, and made again: a duplicate, never a loss."""
        for p in partitions:
            self._sends.pop(p, None)


# A fault for the tests (tests/integration/test_crash_after_send.py): the path of a file which,
# while it exists, holds the end of a topic name; the first key whose state is stored after
# messages to such a topic were handed to the producer removes the file and SIGKILLs the
# worker, before the producer could deliver them.
_KILL_AFTER_SEND = os.environ.get("MIS_FAULT_KILL_AFTER_SEND", "")


def _maybe_killed(topics: Iterable[str]) -> None:
    if not _KILL_AFTER_SEND or not os.path.exists(_KILL_AFTER_SEND):
        return
    with open(_KILL_AFTER_SEND) as f:
        suffix = f.read().strip()
    if suffix and any(t.endswith(suffix) for t in topics):
        os.remove(_KILL_AFTER_SEND)
        log.warning("fault: SIGKILL after a send to %s", suffix)
        os.kill(os.getpid(), signal.SIGKILL)


class Parsed:
    """The parsed states of one table's most recently written keys, kept between batches.

    A location's state (its readings' history) takes a millisecond to parse and is loaded by
    nearly every batch of a storm. The state a batch stored is kept here, with the bytes it was
    stored as, and the next batch that loads the key takes it instead of parsing the bytes
    again, if the table still holds those bytes. A state taken belongs to the batch (it
    changes it); the cache holds it again only once it is stored again, so a key whose flush
    fails is parsed from the table next time. At most ``size`` keys, the least recently
    stored dropped first; 0 keeps none."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._states: OrderedDict[str, tuple[bytes, BaseModel]] = OrderedDict()

    def take(self, key: str, raw: bytes) -> BaseModel | None:
        entry = self._states.pop(key, None)
        if entry is None or (entry[0] is not raw and entry[0] != raw):
            return None
        return entry[1]

    def keep(self, key: str, raw: bytes, state: BaseModel) -> None:
        if self._size <= 0:
            return
        self._states[key] = (raw, state)
        self._states.move_to_end(key)
        while len(self._states) > self._size:
            self._states.popitem(last=False)

    def discard(self, key: str) -> None:
        self._states.pop(key, None)

    def clear(self) -> None:
        self._states.clear()


def _outbox(state: Any) -> Outbox | None:
    outbox = getattr(state, "outbox", None)
    return outbox if isinstance(outbox, Outbox) else None


class KeyedBatch(Generic[S]):
    """One batch of one table's keys. ``deliveries`` outlives the batch: the agent keeps one
    per table. A refused key's events go to ``dead_letter``.

    A key space's states (streams.state.KeyState) may keep their subscribers in shards of their
    own beside them: each state handed out reads those from the table on demand, and the
    shards it changed are written after it, in the same partition."""

    def __init__(
        self,
        table: Store,
        cls: type[S],
        *,
        deliveries: Deliveries,
        dead_letter: DeadLetter,
        max_bytes: int | None = None,
        parsed: Parsed | None = None,
    ) -> None:
        self._table, self._cls, self._max_bytes = table, cls, max_bytes
        self._parsed = parsed
        self._deliveries, self._dead_letter = deliveries, dead_letter
        self._sent: dict[str, list[tuple[str, Awaitable[Any]]]] = {}  # key -> (topic, delivery)
        self._owed: set[str] = set()  # keys whose last send must be made again (_settle)
        self._states: dict[str, S | None] = {}
        self._last_event: dict[str, Any] = {}
        self._events: dict[str, list[Any]] = {}  # the key's own events, for the dead letters
        self._dirty: dict[str, None] = {}  # insertion-ordered set
        self._partitions: dict[int, Any] = {}  # partition -> an event of it in this batch

    async def send(self, of: str, topic: Any, /, **message: Any) -> None:
        """Send a message for the key ``of`` while it is flushed; the key's state names the send
        as unconfirmed until the producer delivered it."""
        delivery = await topic.send(**message)
        self._sent.setdefault(of, []).append((topic.get_topic_name(), delivery))

    def make_current(self, event: EventT) -> None:
        """Reads and writes of the table go to the partition of ``event`` from now on."""
        make_current(event)

    def stored(self, key: str, event: EventT) -> bool:
        """Whether the table holds ``key`` (in the partition of ``event``)."""
        self.make_current(event)
        return key in self._states or self._table.get(key.encode()) is not None

    def seen(self, event: EventT) -> None:
        self._partitions[int(event.message.partition)] = event

    def touch_due(self, due: Callable[[int, datetime], list[str]], now: datetime) -> None:
        """Bring up the keys that ``due(partition, now)`` names in each partition this batch
        went through (those the table holds), to be flushed with the batch."""
        for partition, event in self._partitions.items():
            for key in due(partition, now):
                if self.stored(key, event):
                    self.state(key, event, own=False)
                    self.touch(key)

    def partitions(self) -> dict[int, Any]:
        """The partitions this batch went through, each with one of its events."""
        return dict(self._partitions)

    def state(self, key: str, event: EventT, *, own: bool = True) -> S:
        """The key's state as of the events applied so far in this batch.

        ``own``: the event is about this key (it goes to the dead letters if the key fails),
        rather than a tick or a neighbour that brought the key up."""
        self._last_event[key] = event
        if own:
            events = self._events.setdefault(key, [])
            if not events or events[-1] is not event:
                events.append(event)
        state = self._states.get(key)
        if state is None:
            if key in self._states:  # dropped earlier in this batch
                state = self._cls()
            else:
                self.make_current(event)
                state = self._load(key)
            self._states[key] = state
        return state

    def _load(self, key: str) -> S:
        if self._parsed is None:
            return self._attach(key, load(self._table, key, self._cls))
        raw = self._table.get(key.encode())
        if raw is None:
            self._parsed.discard(key)
            return self._attach(key, self._cls())
        kept = self._parsed.take(key, raw)
        return self._attach(key, kept if isinstance(kept, self._cls) else parse(self._cls, raw))

    def _attach(self, key: str, state: S) -> S:
        if isinstance(state, KeyState):
            state.attach(partial(self._read_shard, key))
        return state

    def _read_shard(self, key: str, shard: int) -> list[str]:
        self.make_current(self._last_event[key])
        raw = self._table.get(shard_key(key, shard).encode())
        return [] if raw is None else json.loads(raw)

    def touch(self, key: str) -> None:
        self._dirty[key] = None

    def drop(self, key: str) -> None:
        """The key's state is to be deleted from the table."""
        self._states[key] = None
        self._dirty[key] = None

    def partition(self, key: str) -> int:
        return int(self._last_event[key].message.partition)

    def last_event(self, key: str) -> Any:
        """The last event of this batch that brought ``key`` up."""
        return self._last_event[key]

    def stored_state(self, key: str) -> S:
        """The key's state as the table holds it, before this batch."""
        self.make_current(self._last_event[key])
        return self._attach(key, load(self._table, key, self._cls))

    async def flush(
        self,
        before_write: Callable[[str, S], Awaitable[None]],
        retry: Callable[[str, S], Awaitable[S]] | None = None,
    ) -> None:
        """For every changed key: call ``before_write`` (which may change the state and send
        messages, and raises to refuse the key's changes), then write the state, under the
        key's own last event.

        When a key fails, ``retry`` (if given) gets its stored state, applies the batch's
        changes of the key one at a time, dead-letters those that do not fit and returns the
        result, which is then written the same way."""
        now = clock()
        for partition, event in self._partitions.items():
            for key in self._deliveries.settled(partition):
                if self.stored(key, event):
                    self.state(key, event, own=False)
                    self.touch(key)
                else:
                    self._deliveries.discard(partition, key)
        for key in self._dirty:
            self.make_current(self._last_event[key])
            state = self._states[key]
            try:
                if state is None:
                    self._table.pop(key.encode(), None)
                    if self._parsed is not None:
                        self._parsed.discard(key)
                    continue
                owed = self._settle(key, state, now)
                await before_write(key, state)
                if self._states[key] is None:  # dropped by before_write (an eviction)
                    self._table.pop(key.encode(), None)
                    if self._parsed is not None:
                        self._parsed.discard(key)
                    continue
                self._write(key, state, owed)
            except Exception as exc:
                if retry is None:
                    await self._refuse(key, exc)
                    continue
                log.warning("key retried change by change key=%s reason=%s", key, exc)
                try:
                    state = await retry(key, self.stored_state(key))
                    self.make_current(self._last_event[key])
                    owed = self._settle(key, state, now)
                    await before_write(key, state)
                    self._write(key, state, owed)
                except Exception as again:
                    await self._refuse(key, again)
        self._states.clear()
        self._last_event.clear()
        self._events.clear()
        self._dirty.clear()
        self._partitions.clear()
        self._sent.clear()
        self._owed.clear()

    def _settle(self, key: str, state: S, now: datetime) -> bool:
        """Apply what became of the key's unconfirmed send; True when it is owed again."""
        outbox = _outbox(state)
        if outbox is None or outbox.unconfirmed is None:
            return False
        partition = self.partition(key)
        delivery = self._deliveries.delivery(partition, key, outbox.unconfirmed)
        if delivery in ("delivered", "failed"):
            self._deliveries.discard(partition, key)
        conflate.settle(outbox, now, delivery)
        owed = delivery in ("failed", "unknown")
        if owed:
            self._owed.add(key)
        return owed

    def owed_again(self, key: str) -> bool:
        """While ``key`` is flushed: its last send failed or is unknown to this worker (made
        before a restart, or elsewhere), so it must be sent again even if its content is the
        same. A send still in flight is not owed again: it is on its way."""
        return key in self._owed

    def _write(self, key: str, state: S, owed: bool) -> None:
        # A retried key's sends count with those of its first attempt; a refused key's are
        # forgotten with it (clear() below), as its state is not stored.
        outbox, sent = _outbox(state), self._sent.pop(key, [])
        token = None
        if outbox is not None:
            if sent:
                token = outbox.unconfirmed = self._deliveries.token()
            elif owed and outbox.due is None:
                outbox.unconfirmed = None  # it was owed again, and the agent found nothing to send
        raw = save(self._table, key, state, self._max_bytes)
        if isinstance(state, KeyState):
            for entry, value in state.shard_writes(key):
                self._table[entry.encode()] = value
        if self._parsed is not None:
            self._parsed.keep(key, raw, state)
        if token is not None:
            futures = [delivery for _, delivery in sent]
            self._deliveries.track(self.partition(key), key, token, futures)
        if sent:
            _maybe_killed(topic for topic, _ in sent)

    async def _refuse(self, key: str, exc: Exception) -> None:
        event = self._last_event[key]
        log.exception(
            "key refused key=%s topic=%s partition=%s offset=%s",
            key,
            event.message.topic,
            event.message.partition,
            event.message.offset,
        )
        reason = f"processing failed for key {key}: {type(exc).__name__}: {exc}"
        for own in self._events.get(key) or [event]:
            await self._dead_letter(own, reason)
