"""What flushing one key produces (see streams.processors)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from streams import topology

#: the topic of the snapshots, beside the key spaces of topology.KEY_SPACES
SNAPSHOTS = "snapshots"


@dataclass(frozen=True)
class Out:
    """One message to send: to a key space's topic (``to`` in topology.KEY_SPACES), in the
    partition its key lives in, or to the snapshot topic (``to`` is SNAPSHOTS), where the
    producer places it by its key."""

    to: str
    key: str | None
    value: bytes | None
    partition: int | None = None

    @classmethod
    def to_key(cls, space: str, key: str, value: bytes, partitions: int) -> Out:
        return cls(space, key, value, topology.space_partition(space, key, partitions))


@dataclass
class Step:
    messages: list[Out] = field(default_factory=list)
    #: when the key must be flushed again because its conflation window ends (None: nothing
    #: is pending)
    due: datetime | None = None
    #: whether the key was evaluated; then ``wake_at`` is its next deadline (None: none)
    evaluated: bool = False
    wake_at: datetime | None = None
    #: the key's state is to be deleted
    drop: bool = False
