"""Change events gathered per location before they reach the location agent. Pure: no Kafka.

A sensor storm is many small change events at few locations. Every event a Faust agent takes
costs the worker about the same (its stream, its acknowledgement, its offset), whatever it
carries, and a storm of a thousand readings a second spends most of the worker on that alone.
So the reading topic is read by a consumer of its own (streams.runtime.gatherer), and this
module turns what one read brought into one message per location (``Gathered``) on the
location key space's topic, in the location's partition: the agent takes a few messages per
location per read instead of one per reading.

Order is kept per location (the changes of a location keep the order they were read in), and a
``Truncated`` (which goes to every partition) leaves after everything read before it. Nothing
relies on more: a location applies changes by version and remembers deletes, so a message
delivered twice, or a read repeated after a crash, changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from streams.errors import BadEvent
from streams.messages import PestChanged, ReadingChanged, encode
from streams.routing import BROADCAST, route

#: Changes per message at most: a reading change is about 300 bytes of JSON, so a message stays
#: far under the producer's 1 MB whatever a read brought for one location.
MAX_CHANGES = 1000

GATHERED = (ReadingChanged, PestChanged)


@dataclass(frozen=True)
class Outgoing:
    """A message for ``key`` of key space ``space`` (BROADCAST: every partition)."""

    space: str
    key: str
    value: bytes
    #: the Kafka timestamp of the oldest event it carries: how long its changes have waited is
    #: measured from the source, not from the gathering
    timestamp_ms: int | None
    changes: int


@dataclass(frozen=True)
class Bad:
    """The event at ``index`` of the read could not be decoded."""

    index: int
    reason: str


@dataclass
class Gathering:
    out: list[Outgoing] = field(default_factory=list)
    bad: list[Bad] = field(default_factory=list)


@dataclass
class _Group:
    #: each change as its JSON, encoded as it is read: a read holds up to 20,000 changes, and
    #: their models take about six times the memory of their JSON (1.9 kB against 320 bytes)
    changes: list[bytes] = field(default_factory=list)
    timestamp_ms: int | None = None


_GATHERED_HEAD = b'{"kind":"gathered","changes":['
_GATHERED_TAIL = b"]}"


def gathered_value(changes: Sequence[bytes]) -> bytes:
    """The JSON of ``Gathered(changes=...)`` from the JSON of each change."""
    return _GATHERED_HEAD + b",".join(changes) + _GATHERED_TAIL


def _older(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


class Grouping:
    """What a read brought, grouped as it is read: ``add`` the events a chunk at a time (so
    that the chunk's messages can be let go before the next is read), then ``finish``."""

    def __init__(self, max_changes: int = MAX_CHANGES) -> None:
        self.max_changes = max_changes
        self.result = Gathering()
        self._groups: dict[tuple[str, str], _Group] = {}
        self._index = 0

    def _send(self, space: str, key: str, group: _Group) -> None:
        value = gathered_value(group.changes)
        self.result.out.append(Outgoing(space, key, value, group.timestamp_ms, len(group.changes)))

    def _flush(self) -> None:
        for (space, key), group in self._groups.items():
            self._send(space, key, group)
        self._groups.clear()

    def add(self, table: str, value: bytes | None, timestamp_ms: int | None) -> Bad | None:
        """The next event read: (source table, event value, Kafka timestamp in ms). A
        tombstone (the null value after a delete) carries nothing and is skipped; an event
        that cannot be decoded is returned (and reported in the result's ``bad``) with the
        reason."""
        index, self._index = self._index, self._index + 1
        if value is None:
            return None
        try:
            routed = route(table, value)
        except BadEvent as exc:
            bad = Bad(index, str(exc))
            self.result.bad.append(bad)
            return bad
        for space, key, message in routed:
            if key == BROADCAST or not isinstance(message, GATHERED):
                # A truncate (or a change of another kind) leaves after what was read before it.
                self._flush()
                self.result.out.append(Outgoing(space, key, encode(message), timestamp_ms, 1))
                continue
            group = self._groups.setdefault((space, key), _Group())
            group.changes.append(encode(message))
            group.timestamp_ms = _older(group.timestamp_ms, timestamp_ms)
            if len(group.changes) >= self.max_changes:
                self._send(space, key, self._groups.pop((space, key)))
        return None

    def finish(self) -> Gathering:
        self._flush()
        return self.result


def gather(
    records: Sequence[tuple[str, bytes | None, int | None]], max_changes: int = MAX_CHANGES
) -> Gathering:
    """``records``: (source table, event value, Kafka timestamp in ms), in the order read.

    Tombstones (the null value after a delete) carry nothing and are skipped; an event that
    cannot be decoded is reported in ``bad`` with the reason (its index in ``records``), and
    the others go on.
    """
    grouping = Grouping(max_changes)
    for table, value, timestamp_ms in records:
        grouping.add(table, value, timestamp_ms)
    return grouping.finish()


def held_back(
    assigned: Iterable[tuple[str, int]], queued: Mapping[int, int], limit: int
) -> set[tuple[str, int]]:
    """The partitions of ``assigned`` (CDC topic, partition) to stop reading for now: those
    whose key-space partition (the same number: Debezium places a change in the partition of
    its location) has more than ``limit`` messages its agent has not yet taken (``queued``).

    A gatherer reads faster than the location agent applies what it sends. Left to run ahead
    during a backlog (a bulk load, a new app id), it would queue the whole backlog on the
    location topic, and every subscription a new booking sends there would wait behind it.
    Held back, the changes wait in Debezium's topic instead, and each later read finds more of
    them per location."""
    return {tp for tp in assigned if queued.get(tp[1], 0) > limit}
