"""Fixes for faust-streaming 0.15.3 and aiokafka 0.14: how stream partitions are positioned
across a rebalance.

1. Seek the stream partitions before resuming them.

After a table recovery, ``Recovery.on_recovery_completed`` resumes the stream partitions and
only then seeks them to their committed offsets, while the flow (resumed for the recovery)
already lets the fetcher deliver. Messages fetched in between are processed, then fetched again
after the seek; when the fetcher records its read offset after the seek has reset it, the
re-fetched messages are dropped unacknowledged: the partition's commits stop for good (a gap
Faust never fills), and a message dropped from the first pass as well is lost. Earlier Faust
versions seeked first; faust-streaming #216/#217 restored that order in ``_resume_streams`` but
not here. Seen on this pipeline as a by-* partition whose committed offset never moved again and
as a key-space change that never reached its table after a restart.

The method below is Faust's own (BSD licence), with the seek moved before the resume.

2. A partition without a committed offset goes back to its beginning when Faust seeks to the
committed offsets. Faust drops records it fetched across a rebalance (the fetch came back after
the generation changed, or while the flow was stopped, or for a partition paused meanwhile) and
counts on the seek to the committed offsets to fetch them again. aiokafka's
``seek_to_committed`` leaves a partition with no commit (or a commit at 0) where it is, that is
past the dropped records: they were never processed and never would be. Seen on this pipeline
as a worker that took over the partitions of a worker SIGKILLed before its first commit of a
CDC partition and never read that partition's changes (tests/integration/test_two_workers.py,
about one run in three): the survivor logged "Worker ready" and then nothing, its aiokafka
position at the partition's end, its Faust read offset unset and the group's commit absent.
With ``consumer_auto_offset_reset="earliest"`` no commit means the beginning, so that is where
such a partition is put.

3. A fetch never drains partitions it was not asked for, nor those no longer active when it
returns. aiokafka's ``fetched_records`` takes an empty set of partitions as "all of them", and
Faust hands it its live set of active partitions, which a rebalance empties while the fetch
waits: the records of every partition come back, and Faust drops them as not active. The fetch
gets a copy, and nothing when the copy is empty. And a fetch that waited across a rebalance
comes back with records, read from the offsets the rebalance seeked to, of partitions paused
until the recovery resumes them: Faust drops them as well, and aiokafka is past them. Those
partitions go back to their first record returned. Seen on this pipeline as CDC partitions
whose last records after a rebalance were never read while the worker held them
(streams.runtime.stalls logged them: aiokafka's position at the log end, Faust's read offset at
the commit, nothing acknowledged).

4. A commit waits until every buffered changelog message is handed to the producer. A table
write is a changelog message put in Faust's producer buffer, which a task of its own hands to
aiokafka one message at a time; before committing the offsets, Faust flushes the buffer and the
producer. But the buffer's flush gives up as soon as no message left it within 0.1 s, and a
worker whose event loop is held longer than that by a batch (a storm's batches are) commits the
offsets of events whose state writes are still in the buffer: a worker killed then has lost
those writes, and the worker that takes its partitions over recovers the older state and never
sees the events again. Seen on this pipeline as bookings left with older certificates and
readings than the source after one of two workers was SIGKILLed five times under load
(`make faults`, "one of two workers"). The flush now waits until the buffer is empty; should no
message leave it for ``_FLUSH_STALLED_S`` it raises, so that the commit fails rather than
commits past what was not written.

5. A hole in a stream partition's offsets is read again before it counts as a gap. Faust
records the offsets between the last one it read and the next one it receives as a gap (a
compacted topic's removed records, a transaction's markers) and counts them as acknowledged.
But the topics the agents read are neither compacted nor transactional, and a hole in them means
records that were fetched, dropped across a rebalance and not fetched again: the position the
fetcher resumed from was past them. Counted as acknowledged, they were committed unprocessed.
Seen on this pipeline as a CDC partition whose changes of ten seconds around a rebalance never
reached a booking while the group's commit moved past them (`make faults`, "one of two workers").
A hole now puts the partition back to its start at the next fetch (``Rewinds``), and only the
same hole found again (the records really are not there) counts as a gap; meanwhile nothing past
the hole is committed. The holes seen came from the fetches fix 3 now puts back; this stays as a
guard for any other way to drop records.

6. Nothing is committed past an offset that was neither acknowledged nor a gap. Faust's
``Consumer._new_offset`` refuses to commit while the lowest acknowledged offset is more than one
past the committed one, meant as "while the next offset to commit is missing"; but the committed
offset already is the next one to read, so a single missing offset there is committed past. The
missing offset is now always waited for; a partition that waits too long is read again
(streams.runtime.stalls).

And two for throughput, not correctness:

7. A message whose delivery cannot wait is delivered without tasks. Faust's read loop hands
every message to the streams inside ``Service.wait_first`` (so that a rebalance can interrupt
a delivery waiting for room), which makes four tasks and waits on them: more than the delivery
itself costs, several event-loop rounds per message. When the flow is on, the producer buffer
under its limit and no stream queue full, the delivery has nothing to wait for and is awaited
as is; otherwise Faust's way is kept.

8. The worker consumer's fetches wait at most ``FETCH_MAX_WAIT_MS`` (100 ms) at the broker,
not Faust's 1.5 s. aiokafka keeps one fetch in flight per broker for the partitions whose
fetched records are consumed, so a partition drained while a fetch of quiet partitions waits is
fetched again only after that fetch returns: a storm's key-space messages were fetched seconds
after they were written while the worker idled.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time
from typing import Any

from aiokafka.errors import IllegalStateError
from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer, ensure_TP
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.producer import ProducerBuffer

from streams.runtime import compat

_applied = False
log = logging.getLogger(__name__)


async def _on_recovery_completed(self: Any, generation_id: int = 0) -> None:
    consumer = self.app.consumer
    self.log.info("Restore complete!")
    await self.app.on_rebalance_complete.send()
    self._set_recovery_ended()
    callback_coros = [
        asyncio.ensure_future(
            table.on_recovery_completed(
                self.actives_for_table[table], self.standbys_for_table[table]
            )
        )
        for table in self.tables.values()
    ]
    if callback_coros:
        await asyncio.wait(callback_coros)
    assignment = consumer.assignment()
    if self.app.consumer_generation_id != generation_id:
        self.log.warning(
            f"Recovery rebalancing again app id "
            f"{self.app.consumer_generation_id} param {generation_id}"
        )
        return
    if assignment:
        # Still paused: nothing is fetched from the old position while this runs.
        self.log.info("Seek stream partitions to committed offsets.")
        await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
    consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
    self.completed.set()
    self.app.flow_control.resume()
    consumer.resume_flow()
    await self.app._fetcher.maybe_start()
    self.tables.on_actives_ready()
    if not self.app.assignor.assigned_standbys():
        self.tables.on_standbys_ready()
    self.app.on_rebalance_end()
    self.log.info("Worker ready")


async def _perform_seek(self: Any) -> None:
    """Faust's ``Consumer.perform_seek``, and a stream partition without a commit to its start."""
    _rewinds(self).forget()
    read_offset = self._read_offset
    _committed_offsets = await self.seek_to_committed()
    read_offset.update(
        {
            tp: offset if offset is not None and offset >= 0 else None
            for tp, offset in _committed_offsets.items()
        }
    )
    committed_offsets = {
        ensure_TP(tp): offset if offset else None
        for tp, offset in _committed_offsets.items()
        if offset is not None
    }
    self._committed_offset.update(committed_offsets)
    # Changelogs are positioned by the table recovery, from the stores' own offsets.
    changelogs = self.app.tables.changelog_topics
    unstarted = [
        tp for tp, offset in _committed_offsets.items() if not offset and tp.topic not in changelogs
    ]
    if unstarted:
        earliest = await self.earliest_offsets(*unstarted)
        # In the consumer's own thread, as the table recovery seeks the changelogs.
        await self.seek_wait({tp: earliest.get(tp) or 0 for tp in unstarted})
        for tp in unstarted:
            read_offset[ensure_TP(tp)] = None


_fetch_records: Any = AIOKafkaConsumerThread._fetch_records


async def _fetch_only_active(
    self: Any,
    consumer: Any,
    active_partitions: Any,
    timeout: float | None = None,
    max_records: int | None = None,
) -> Any:
    if active_partitions is None:  # a client-only app, which reads everything
        return await _fetch_records(self, consumer, None, timeout=timeout, max_records=max_records)
    asked = frozenset(active_partitions)
    if not asked:
        return {}
    records = await _fetch_records(self, consumer, asked, timeout=timeout, max_records=max_records)
    _maybe_drop(records)
    return _put_back_inactive(self.consumer, consumer, records)


# A fault for the tests (tests/integration/test_stalls.py): the path of a file which, while it
# exists, holds a topic name; the next fetch with records of that topic removes the file and
# drops them as Faust drops records it does not deliver: the fetcher's position past them,
# nothing read, nothing acknowledged. Only streams.runtime.stalls reads them again.
_DROP_FETCHED = os.environ.get("MIS_FAULT_DROP_FETCHED", "")


def _maybe_drop(records: Any) -> None:
    if not _DROP_FETCHED or not records or not os.path.exists(_DROP_FETCHED):
        return
    with open(_DROP_FETCHED) as f:
        topic = f.read().strip()
    dropped = [tp for tp in records if tp.topic == topic]
    if dropped:
        os.remove(_DROP_FETCHED)
        for tp in dropped:
            n = len(records.pop(tp))
            log.warning("fault: %d fetched records of %s[%s] dropped", n, tp.topic, tp.partition)


def _put_back_inactive(faust_consumer: Any, client: Any, records: Any) -> Any:
    """The fetched records of the partitions still to be delivered; the others go back.

    A fetch waits up to a second for records of the partitions it was asked for. One that
    began before a rebalance can come back after it, with records from the offsets the
    rebalance seeked to, for partitions that are paused until the recovery resumes them: Faust
    drops those (not active), and aiokafka's position is past them already. Nothing would read
    them again, and the partition's commits would stop there. Each such partition is put back
    to its first record (here, in the consumer's own thread)."""
    active = faust_consumer._active_partitions
    if active is None or not records:
        return records
    buffered = faust_consumer._buffered_partitions
    inactive = [tp for tp in records if tp not in active and tp not in buffered]
    for tp in inactive:
        first = records.pop(tp)[0].offset
        try:
            client.seek(tp, first)
        except IllegalStateError:  # no longer assigned: its next owner reads from the commit
            continue
        log.info("%s[%s] fetched while not active: from %s again", tp.topic, tp.partition, first)
    return records


#: How long a fetch may wait at the broker for records (Faust sets 1500 ms).
FETCH_MAX_WAIT_MS = 100
_create_worker_consumer: Any = AIOKafkaConsumerThread._create_worker_consumer


def _worker_consumer_fetching_often(self: Any, transport: Any) -> Any:
    """Faust's worker consumer, whose fetches wait at most FETCH_MAX_WAIT_MS at the broker.

    aiokafka keeps one fetch in flight per broker, for the partitions whose fetched records
    are all consumed; a partition consumed while a fetch waits goes in the next one, after that
    one returns. With Faust's 1.5 s, a fetch of partitions without new records held the others
    for 1.5 s at a time: a storm's key-space messages were fetched seconds after they were
    written while the worker idled. An empty fetch answered every 0.1 s costs the broker
    little."""
    consumer = _create_worker_consumer(self, transport)
    consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
    return consumer


_service_wait_first: Any = Consumer.wait_first


def _delivery_cannot_block(consumer: Any) -> bool:
    """Whether the conductor's delivery of a message (``on_message``) runs to its end without
    waiting: the flow is on, the producer buffer is under its limit, and no stream's queue is
    full. Those are its only waits."""
    app = consumer.app
    if consumer.suspend_flow.is_set() or not app.flow_control.is_active():
        return False
    buffer = app.producer.buffer
    if buffer.size > buffer.max_messages:
        return False
    return not any(
        chan.queue.full() for chans in app.topics._topic_name_index.values() for chan in chans
    )


async def _wait_first_unless_blocking(self: Any, *coros: Any, timeout: Any = None) -> Any:
    """``Service.wait_first`` for the consumer's read loop, which calls it for every message it
    delivers: (delivery, the flow's suspension). It makes four tasks and waits on them, so that
    a rebalance can interrupt a delivery that waits; most deliveries do not wait, and four tasks
    each cost more than the delivery itself (seen as a storm's messages waiting seconds in
    aiokafka's buffer while the worker idled). A delivery that cannot wait is awaited as is."""
    if (
        len(coros) == 2
        and timeout is None
        and all(inspect.iscoroutine(c) for c in coros)
        and _delivery_cannot_block(self)
    ):
        delivery, suspended = coros
        suspended.close()
        await delivery
        return None  # the read loop does not look at the result
    return await _service_wait_first(self, *coros, timeout=timeout)


#: how long a flush waits for the buffer to move before it gives up (raises)
_FLUSH_STALLED_S = 60.0


class BufferStalled(RuntimeError):
    """Faust's producer buffer did not move for _FLUSH_STALLED_S: nothing is committed."""


async def _flush_until_empty(self: Any) -> None:
    """ProducerBuffer.flush: hand every buffered message to the producer before returning."""
    stalled_since: float | None = None
    while self.size:
        if self.state != "running":
            raise RuntimeError("Cannot flush: Producer not Running")
        if await self.flush_atmost(self.size):  # returns after 0.1 s with nothing sent
            stalled_since = None
            continue
        now = time.monotonic()
        stalled_since = now if stalled_since is None else stalled_since
        if now - stalled_since >= _FLUSH_STALLED_S:
            raise BufferStalled(
                f"{self.size} changelog messages not handed to the producer in "
                f"{_FLUSH_STALLED_S:.0f} s: the offsets are not committed"
            )


class Rewinds:
    """The holes found in stream partitions, and where each partition is to be read again from.

    ``hole`` is told of each hole as Faust finds it (the offsets ``first`` to ``last``, not
    received) with the partition's committed offset; it answers whether the hole counts as a
    gap. The first time a hole ending at ``last`` is found it does not: the partition is to go
    back to the committed offset (or ``first``, if lower, or if nothing is committed), which
    ``due`` hands out once. Found again after that, the records are not there, and it counts."""

    def __init__(self) -> None:
        self._pending: dict[Any, int] = {}
        self._rewound: dict[Any, int] = {}  # partition -> the last offset of the hole read again

    def hole(self, tp: Any, first: int, last: int, committed: int | None) -> bool:
        if tp in self._pending:
            return False  # found again before the partition went back: it will be read
        if self._rewound.get(tp) == last:
            del self._rewound[tp]
            return True
        start = first if committed is None else min(first, committed)
        self._pending[tp] = start
        self._rewound[tp] = last
        return False

    def due(self) -> dict[Any, int]:
        if not self._pending:  # every fetch asks: nothing to allocate when nothing is due
            return {}
        pending, self._pending = self._pending, {}
        return pending

    def forget(self) -> None:
        """A rebalance positioned every partition again (perform_seek)."""
        self._pending.clear()
        self._rewound.clear()


def _rewinds(consumer: Any) -> Rewinds:
    rewinds = consumer.__dict__.get("_mis_rewinds")
    if rewinds is None:
        rewinds = consumer.__dict__["_mis_rewinds"] = Rewinds()
    return rewinds


_add_gap = Consumer._add_gap


async def _add_gap_or_rewind(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
    """Consumer._add_gap: a hole is read again once before it counts as a gap (Rewinds)."""
    committed = self._committed_offset[tp]
    if _rewinds(self).hole(tp, offset_from, offset_to, committed):
        log.warning(
            "offsets %s-%s of %s not there when read again: counted as a gap",
            offset_from,
            offset_to,
            tp,
        )
        await _add_gap(self, tp, offset_from, offset_to)
    else:
        log.warning(
            "offsets %s-%s of %s skipped (committed %s): reading the partition again from there",
            offset_from,
            offset_to,
            tp,
            committed,
        )


_new_offset = Consumer._new_offset


def _new_offset_after_the_committed(self: Any, tp: Any) -> int | None:
    """Consumer._new_offset, and None while the committed offset itself is missing."""
    acked = self._acked[tp]
    committed = self._committed_offset[tp]
    if acked and committed is not None:
        lowest = min(acked)
        gaps = self._gap[tp]
        if gaps:
            lowest = min(lowest, gaps.begin())
        if lowest > committed:
            return None
    return _new_offset(self, tp)


_getmany = Consumer.getmany


async def _getmany_after_rewinds(self: Any, timeout: float) -> Any:
    """Consumer.getmany, after putting back the partitions a hole was found in (Rewinds)."""
    due = _rewinds(self).due()
    if due:
        assigned = self.assignment()
        # seek_wait, not seek: in the consumer's own thread (Consumer.seek calls aiokafka from
        # this one), and it sets the read offset with the fetch position.
        positions = {tp: start for tp, start in due.items() if tp in assigned}
        if positions:
            await self.seek_wait(positions)
    async for item in _getmany(self, timeout):
        yield item


def apply() -> None:
    """Install the fixes (idempotent); streams.runtime.app calls it before building an app."""
    global _applied
    if not _applied:
        compat.check()
        Recovery.on_recovery_completed = _on_recovery_completed  # type: ignore[method-assign]
        Consumer.perform_seek = _perform_seek  # type: ignore[method-assign]
        AIOKafkaConsumerThread._fetch_records = _fetch_only_active  # type: ignore[method-assign]
        ProducerBuffer.flush = _flush_until_empty  # type: ignore[method-assign]
        Consumer.wait_first = _wait_first_unless_blocking  # type: ignore[method-assign]
        AIOKafkaConsumerThread._create_worker_consumer = _worker_consumer_fetching_often  # type: ignore[method-assign]
        Consumer._add_gap = _add_gap_or_rewind  # type: ignore[method-assign]
        Consumer.getmany = _getmany_after_rewinds  # type: ignore[method-assign]
        Consumer._new_offset = _new_offset_after_the_committed  # type: ignore[method-assign]
        _applied = True
