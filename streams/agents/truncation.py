"""TRUNCATE in the key spaces: the runtime side of ``Truncated`` (the logic is in streams.state).

A ``Truncated`` message reaches every partition of a key space. There it is recorded in the
partition's marks (``truncations`` table, key ``<space>:<partition>``), and applied at once to
every key the partition holds; a key first seen later applies the marks when it is loaded, so a
change made before the TRUNCATE that arrives after it cannot bring its row back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from faust.types import EventT

from streams.agents.batch import KeyedBatch
from streams.agents.common import Store, keys_in_partition, load, save
from streams.messages import Truncated
from streams.state import TruncationMarks


class Truncations:
    """One batch's view of its partitions' marks, for one key space."""

    def __init__(
        self, space: str, keys: KeyedBatch[Any], key_space: str, marks: Store, partitions: int
    ) -> None:
        # ``space`` names the marks (kept under their old names) in the table ``marks``;
        # ``key_space`` places the keys.
        self.space, self.keys, self.key_space = space, keys, key_space
        self._table, self._partitions = marks, partitions
        self._marks: dict[int, TruncationMarks] = {}

    def marks(self, event: EventT) -> TruncationMarks:
        partition = int(event.message.partition)
        if partition not in self._marks:
            self.keys.make_current(event)
            self._marks[partition] = load(self._table, f"{self.space}:{partition}", TruncationMarks)
        return self._marks[partition]

    def record(
        self, msg: Truncated, event: EventT, table: Store, apply: Callable[[str, Any], bool]
    ) -> list[str]:
        """Record the TRUNCATE for the event's partition and apply it to every key stored there;
        return the keys it changed (``apply(key, state)`` says whether it changed one)."""
        partition = int(event.message.partition)
        marks = self.marks(event)
        if marks.merge(msg.table, msg.version):
            self.keys.make_current(event)
            save(self._table, f"{self.space}:{partition}", marks)
        self.keys.make_current(event)
        changed = []
        for key in keys_in_partition(table, partition, self.key_space, self._partitions):
            if apply(key, self.keys.state(key, event)):
                changed.append(key)
        return changed

    def absorb(self, event: EventT, apply: Callable[[str, str], bool]) -> bool:
        """Apply the partition's marks to a key just loaded; True when that changed it."""
        changed = False
        for table, version in self.marks(event).versions.items():
            changed = apply(table, version) or changed
        return changed
