"""Conflation with a bounded delay. Pure: no Faust, no I/O.

A key that changes many times within a short window sends one message with its newest content.
The rule is a throttle with a leading and a trailing edge, per key:

* a change when nothing was sent within the last ``window`` is due at once (the end of the
  batch that carries it), so an isolated change pays no delay;
* a change within ``window`` of the last send is due at ``last send + window``; later changes
  until then join it. No message is ever later than the window after the first change it
  reflects, and at most one leaves per key per window;
* the last state always leaves: what is pending is part of the key's stored state (the
  ``Outbox``), so a worker that crashed between storing a change and sending it finds it
  pending on restart and sends it;
* what is stored as sent follows what Kafka acknowledged: a send is stored as ``unconfirmed``
  (a token naming it) until the worker that made it has seen every message of it delivered.
  A worker that finds a token it does not know (it restarted, or the key came to it in a
  rebalance), or whose send failed, owes the key again and sends it again; the receivers
  ignore a duplicate.

``DueIndex`` is the in-memory index of the keys that are pending, per partition, and when they
are due; it is a cache of the ``Outbox.due`` fields of a table, rebuilt from the table the first
time a partition ticks on a worker.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict


class Outbox(BaseModel):
    """What a key owes its listeners, stored with its state."""

    model_config = ConfigDict(extra="forbid")

    # a change waits to be sent at or after this time (None: nothing pending)
    due: datetime | None = None
    # when the last message left (None: never, or not since this worker's state began)
    sent_at: datetime | None = None
    # subscribers owed their first answer: answered at the end of the batch, not throttled
    fresh: list[str] = []
    # the last send, until its delivery was confirmed to the worker that made it
    unconfirmed: str | None = None

    @property
    def pending(self) -> bool:
        return self.due is not None or bool(self.fresh) or self.unconfirmed is not None

    @property
    def owed_at(self) -> datetime | None:
        """When a worker that has just loaded the key owes it a send (None: nothing owed).
        An unconfirmed send it cannot know about is owed at once."""
        if self.due is not None:
            return self.due
        return EPOCH if self.unconfirmed is not None else None


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: what the worker knows of the send an outbox names as unconfirmed
Delivery = Literal["in_flight", "delivered", "failed", "unknown"]


def mark(outbox: Outbox, now: datetime, window: timedelta) -> None:
    """A change happened at ``now``: make it due, at once or after the window."""
    if outbox.due is not None:
        return  # joins the pending change, which is due no later
    if outbox.sent_at is None or now >= outbox.sent_at + window:
        outbox.due = now
    else:
        outbox.due = outbox.sent_at + window


def is_due(outbox: Outbox, now: datetime) -> bool:
    return outbox.due is not None and outbox.due <= now


def sent(outbox: Outbox, now: datetime) -> None:
    """The pending change left at ``now``."""
    outbox.due = None
    outbox.sent_at = now
    outbox.fresh = []


def settle(outbox: Outbox, now: datetime, delivery: Delivery) -> bool:
    """Apply what became of the unconfirmed send; True when the outbox changed.

    Delivered: nothing is owed for it any more. Failed, or unknown to this worker (made before
    a restart, or by another worker): the key is due at once, to be sent again with its newest
    content. In flight: wait for it."""
    if outbox.unconfirmed is None or delivery == "in_flight":
        return False
    if delivery == "delivered":
        outbox.unconfirmed = None
    elif outbox.due is None or outbox.due > now:
        outbox.due = now
    return True


class DueIndex:
    """Pending keys per partition, by due time. A key may be set before its partition loads."""

    def __init__(self) -> None:
        self._heaps: dict[int, list[tuple[datetime, str]]] = {}
        self._current: dict[int, dict[str, datetime]] = {}
        self._loaded: set[int] = set()

    def loaded(self, partition: int) -> bool:
        return partition in self._loaded

    def load(self, partition: int, entries: Iterable[tuple[str, datetime | None]]) -> None:
        """Merge what the table says is pending (after a restart or a rebalance)."""
        self._loaded.add(partition)
        for key, due in entries:
            if due is not None and key not in self._current.get(partition, {}):
                self.set(partition, key, due)

    def forget(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self._heaps.pop(p, None)
            self._current.pop(p, None)
            self._loaded.discard(p)

    def set(self, partition: int, key: str, due: datetime | None) -> None:
        current = self._current.setdefault(partition, {})
        if due is None:
            current.pop(key, None)
            return
        if current.get(key) != due:
            current[key] = due
            heapq.heappush(self._heaps.setdefault(partition, []), (due, key))

    def due(self, partition: int, now: datetime) -> list[str]:
        """Pop the keys due at or before ``now`` (each once)."""
        heap, current, keys = self._heaps.get(partition, []), self._current.get(partition, {}), []
        while heap and heap[0][0] <= now:
            due, key = heapq.heappop(heap)
            if current.get(key) == due:  # otherwise superseded by a later set()
                del current[key]
                keys.append(key)
        return keys

    def next_due(self, partition: int) -> datetime | None:
        heap, current = self._heaps.get(partition, []), self._current.get(partition, {})
        while heap and current.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)  # stale entry
        return heap[0][0] if heap else None
