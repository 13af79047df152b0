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
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from faust.streams import _current_event
from pydantic import BaseModel

from streams.agents.common import load, save

S = TypeVar("S", bound=BaseModel)
log = logging.getLogger(__name__)


class KeyedBatch(Generic[S]):
    def __init__(self, table: Any, cls: type[S], max_bytes: int | None = None) -> None:
        self._table, self._cls, self._max_bytes = table, cls, max_bytes
        self._states: dict[str, S | None] = {}
        self._last_event: dict[str, Any] = {}
        self._events: dict[str, list[Any]] = {}  # the key's own events, for the dead letters
        self._dirty: dict[str, None] = {}  # insertion-ordered set
        self._partitions: dict[int, Any] = {}  # partition -> an event of it in this batch

    def make_current(self, event: Any) -> None:
        # Only the context variable the stores read: Stream.current_event must stay as it is,
        # because take_events() records the buffered events from that attribute.
        _current_event.set(weakref.ref(event))

    def stored(self, key: str, event: Any) -> bool:
        """Whether the table holds ``key`` (in the partition of ``event``)."""
        self.make_current(event)
        return key in self._states or self._table.get(key.encode()) is not None

    def seen(self, event: Any) -> None:
        self._partitions[int(event.message.partition)] = event

    def partitions(self) -> dict[int, Any]:
        """The partitions this batch went through, each with one of its events."""
        return dict(self._partitions)

    def state(self, key: str, event: Any, *, own: bool = True) -> S:
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
                state = load(self._table, key, self._cls)
            self._states[key] = state
        return state

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
        return load(self._table, key, self._cls)

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
        for key in self._dirty:
            self.make_current(self._last_event[key])
            state = self._states[key]
            try:
                if state is None:
                    self._table.pop(key.encode(), None)
                    continue
                await before_write(key, state)
                if self._states[key] is None:  # dropped by before_write (an eviction)
                    self._table.pop(key.encode(), None)
                    continue
                save(self._table, key, state, self._max_bytes)
            except Exception as exc:
                if retry is None:
                    await self._refuse(key, exc)
                    continue
                log.warning("key retried change by change key=%s reason=%s", key, exc)
                try:
                    state = await retry(key, self.stored_state(key))
                    self.make_current(self._last_event[key])
                    await before_write(key, state)
                    save(self._table, key, state, self._max_bytes)
                except Exception as again:
                    await self._refuse(key, again)
        self._states.clear()
        self._last_event.clear()
        self._events.clear()
        self._dirty.clear()
        self._partitions.clear()

    async def _refuse(self, key: str, exc: Exception) -> None:
        from streams.deadletter import dead_letter

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
            await dead_letter(own, reason)
