"""The stream partitions a worker holds but no longer reads: found, described and read again.

A partition with messages past its committed offset should see that offset, or the offset last
read, move. When neither moved for ``MIS_STALL_AFTER_S`` while the worker was neither
rebalancing nor recovering, and none of its messages is delivered and waiting for an agent or
fetched and waiting for the worker to take them (a storm's queues are busy, not stalled), its
messages are going nowhere: Faust took the partition out of the fetch and never put it back, or
it drops what it fetches as read already, or the fetcher's position is past records it never
delivered. Whatever the cause, the remedy is the same and safe: read the partition again from
its committed offset (every agent's handling is idempotent, so what is read twice changes
nothing). The warning says what the consumer's state was (``describe``), so the cause can be
read off the log; ``mis_partition_stalls_total`` counts them.

``Progress`` is the pure part: what was seen of each partition, and when it last moved.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any

from streams import metrics

log = logging.getLogger(__name__)


@dataclass
class _Seen:
    committed: int | None
    read: int | None
    since: float


class Progress:
    """When each partition's committed and read offsets last moved.

    ``stalled`` is told each partition's offsets at ``now``: it answers True when the partition
    has messages past its committed offset (``end`` is the offset after its last message), none
    of them delivered and waiting for an agent (``in_flight``: a busy partition is not a stalled
    one, however long its messages wait), and neither offset moved for ``after_s``. A partition
    found stalled starts over, so that it is found again only ``after_s`` later."""

    def __init__(self, after_s: float) -> None:
        self.after_s = after_s
        self._seen: dict[Hashable, _Seen] = {}

    def stalled(
        self,
        tp: Hashable,
        committed: int | None,
        read: int | None,
        end: int | None,
        now: float,
        in_flight: bool = False,
    ) -> bool:
        seen = self._seen.get(tp)
        if seen is None or (seen.committed, seen.read) != (committed, read):
            self._seen[tp] = _Seen(committed, read, now)
            return False
        # Nothing past the commit (idle), or messages delivered and waiting for an agent (busy).
        if end is None or end <= (committed or 0) or in_flight:
            seen.since = now
            return False
        if now - seen.since < self.after_s:
            return False
        seen.since = now
        return True

    def restart(self) -> None:
        """A rebalance or a recovery: everything is positioned again, time starts over."""
        self._seen.clear()

    def keep(self, tps: Iterable[Hashable]) -> None:
        """Forget the partitions not among ``tps`` (no longer assigned)."""
        kept = set(tps)
        for tp in [tp for tp in self._seen if tp not in kept]:
            del self._seen[tp]


def describe(consumer: Any, tp: Any) -> dict[str, Any]:
    """What Faust's consumer and aiokafka's fetcher know of ``tp``: the cause of a stall."""
    detail: dict[str, Any] = {
        "active": tp in (consumer._active_partitions or ()),
        "paused": tp in consumer._paused_partitions,
        "buffered": tp in consumer._buffered_partitions,
        "read_offset": consumer._read_offset.get(tp),
        "committed": consumer._committed_offset.get(tp),
    }
    acked = consumer._acked.get(tp) or []
    detail["acked"] = f"{len(acked)} from {min(acked)}" if acked else 0
    gap = consumer._gap.get(tp)
    detail["gaps"] = len(gap) if gap else 0
    try:
        client = consumer._thread._consumer
        state = client._subscription.subscription.assignment.state_value(tp)
        detail["fetch_paused"] = state.paused
        detail["position"] = state.position if state.has_valid_position else None
        detail["awaiting_reset"] = state.awaiting_reset
        detail["fetched_unread"] = _fetched(consumer, tp)
    except Exception as exc:  # the fetcher's state is not worth failing the check for
        detail["fetcher"] = f"unknown ({type(exc).__name__})"
    return detail


def waiting_in_fetcher(consumer: Any, tp: Any) -> bool:
    """Whether ``tp``'s records wait in aiokafka's fetcher for the worker to take them: the
    partition is active and not paused, so the next fetch hands them out. The worker is behind
    (Faust's delivery of a fetch waits for any agent whose buffer is full, so one slow agent
    holds back the others' partitions too); reading such a partition again would only fetch it
    twice."""
    if tp not in (consumer._active_partitions or ()) or tp in consumer._paused_partitions:
        return False
    try:
        return _fetched(consumer, tp)
    except AttributeError:
        return False


def _fetched(consumer: Any, tp: Any) -> bool:
    """Whether aiokafka's fetcher holds records of ``tp`` not yet handed out."""
    return consumer._thread._consumer._fetcher._records.get(tp) is not None


async def check(app: Any, progress: Progress, now: float) -> int:
    """Find the worker's stalled stream partitions and read each again from its committed
    offset; returns how many were."""
    consumer = app.consumer
    if app.rebalancing or app.in_recovery or not consumer.flow_active:
        progress.restart()
        return 0
    changelogs = app.tables.changelog_topics
    assigned = [tp for tp in consumer.assignment() if tp.topic not in changelogs]
    progress.keep(assigned)
    in_flight = {m.tp for m in list(consumer._unacked_messages) if not m.acked}
    stalled = []
    for tp in assigned:
        committed = consumer._committed_offset.get(tp)
        read = consumer._read_offset.get(tp)
        end = consumer.highwater(tp)
        busy = tp in in_flight or waiting_in_fetcher(consumer, tp)
        if progress.stalled(tp, committed, read, end, now, in_flight=busy):
            stalled.append((tp, committed))
    for tp, committed in stalled:
        start = committed
        if start is None:
            start = (await consumer.earliest_offsets(tp)).get(tp) or 0
        log.warning(
            "%s[%s] stalled for %.0f s (%s, log end %s): reading it again from offset %s",
            tp.topic,
            tp.partition,
            progress.after_s,
            ", ".join(f"{k}={v}" for k, v in describe(consumer, tp).items()),
            consumer.highwater(tp),
            start,
        )
        metrics.PARTITION_STALLS.labels(topic=tp.topic).inc()
        if tp not in consumer._paused_partitions:
            consumer._buffered_partitions.discard(tp)
            consumer._get_active_partitions().add(tp)
        await consumer.seek_wait({tp: start})  # the fetch position and the read offset
    return len(stalled)
