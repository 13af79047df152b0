"""What the sinks share: the items they are handed, and the interface they implement.

Each sink follows the compacted snapshot topic with a consumer group of its own
(streams.sinks.follower), so one that is slow or down never holds back the other. A follower hands
its sink one batch at a time, already conflated: at most one item per booking, the newest.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from schemas.snapshot import SnapshotRecord


@dataclass(frozen=True)
class Origin:
    """Where a message came from, for the dead letters."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class Item:
    """The latest message of one booking in a batch: a snapshot, or None for its tombstone."""

    booking_id: UUID
    record: SnapshotRecord | None
    origin: Origin


Refusal = tuple[Item, str]  # an item the sink will never accept, and why


class SnapshotSink(Protocol):
    """A destination of snapshots.

    ``write`` writes what it can of a batch and returns the items refused for what they contain
    (they go to the dead letters); it raises SinkUnavailable when the destination cannot be
    reached, and the follower retries the batch with capped backoff.
    """

    name: str

    def write(self, items: Sequence[Item]) -> list[Refusal]: ...

    def close(self) -> None: ...


def conflate(items: Iterable[Item]) -> list[Item]:
    """Keep the last item of each booking, in the order of their last appearance."""
    latest: dict[UUID, Item] = {}
    for item in items:
        latest.pop(item.booking_id, None)
        latest[item.booking_id] = item
    return list(latest.values())
