"""Which bookings of a partition are due for re-evaluation by time alone. Pure, in memory.

The index is a cache of the ``deadline`` field of the booking table, kept per partition. It is
rebuilt from the table the first time a partition ticks on this worker (after start-up or a
rebalance), so it needs no changelog of its own.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from datetime import datetime


class DeadlineIndex:
    def __init__(self) -> None:
        self._heaps: dict[int, list[tuple[datetime, str]]] = {}
        self._current: dict[int, dict[str, datetime]] = {}

    def loaded(self, partition: int) -> bool:
        return partition in self._heaps

    def load(self, partition: int, entries: Iterable[tuple[str, datetime | None]]) -> None:
        self._heaps[partition], self._current[partition] = [], {}
        for key, deadline in entries:
            self.set(partition, key, deadline)

    def forget(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self._heaps.pop(p, None)
            self._current.pop(p, None)

    def set(self, partition: int, key: str, deadline: datetime | None) -> None:
        if partition not in self._heaps:
            return  # loaded from the table on the partition's first tick
        current = self._current[partition]
        if deadline is None:
            current.pop(key, None)
            return
        if current.get(key) != deadline:
            current[key] = deadline
            heapq.heappush(self._heaps[partition], (deadline, key))

    def due(self, partition: int, now: datetime) -> list[str]:
        """Pop the keys whose deadline is at or before ``now`` (each once)."""
        heap, current, keys = self._heaps.get(partition, []), self._current.get(partition, {}), []
        while heap and heap[0][0] <= now:
            deadline, key = heapq.heappop(heap)
            if current.get(key) == deadline:  # otherwise superseded by a later set()
                del current[key]
                keys.append(key)
        return keys
