"""Processing a batch of events per key: load each key's state once, write it once.

Under load, many events for one key arrive together (a burst of readings at one location, the
parts answering them at each booking). Applying them to one in-memory state and writing the table
and the downstream message once per key per batch does the same work a fraction of the times.

Faust writes a table key into the store and changelog of the partition of the *current event*.
Reads go to the store of the current event's partition too. A batch spans partitions, so each
key is read while its event is made current, and written while its last event is.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from faust.streams import _current_event
from pydantic import BaseModel

from streams.agents.common import guarded, load, save

S = TypeVar("S", bound=BaseModel)


class KeyedBatch(Generic[S]):
    def __init__(self, table: Any, cls: type[S]) -> None:
        self._table, self._cls = table, cls
        self._states: dict[str, S | None] = {}
        self._last_event: dict[str, Any] = {}
        self._dirty: dict[str, None] = {}  # insertion-ordered set

    def make_current(self, event: Any) -> None:
        # Only the context variable the stores read: Stream.current_event must stay as it is,
        # because take_events() records the buffered events from that attribute.
        _current_event.set(weakref.ref(event))

    def stored(self, key: str, event: Any) -> bool:
        """Whether the table holds ``key`` (in the partition of ``event``)."""
        self.make_current(event)
        return key in self._states or self._table.get(key.encode()) is not None

    def state(self, key: str, event: Any) -> S:
        """The key's state as of the events applied so far in this batch."""
        self._last_event[key] = event
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

    async def flush(self, before_write: Callable[[str, S], Awaitable[None]]) -> None:
        """For every changed key: call ``before_write`` (which may change the state and send
        messages), then write the state, under the key's own last event."""
        for key in self._dirty:
            event = self._last_event[key]

            async def write(event: Any, key: str = key) -> None:
                self.make_current(event)
                state = self._states[key]
                if state is None:
                    self._table.pop(key.encode(), None)
                    return
                await before_write(key, state)
                save(self._table, key, state)

            await guarded(event, write)
        self._states.clear()
        self._last_event.clear()
        self._dirty.clear()
