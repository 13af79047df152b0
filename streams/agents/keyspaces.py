"""The foreign key spaces: location, vendor and inspection.

Each agent keeps its key's rows and subscribers in a table and answers with its *part*: to a new
subscriber at the end of the batch that brought its subscription, and to every subscriber after
a change, conflated (streams.conflate): at most one answer per key per
``MIS_CONFLATE_WINDOW_S``, with the newest content, never later than the window after the first
change it reflects. An answer is one message per destination booking partition, naming the
subscribers of that partition, not one per booking.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from streams import conflate, metrics, tables, topics
from streams.agents.batch import KeyedBatch, forget_deliveries
from streams.agents.changes import decode
from streams.agents.common import guarded, key_of, parse
from streams.agents.truncation import Truncations
from streams.agents.waker import Waker
from streams.app import app, settings
from streams.builder import PEST_WINDOW
from streams.clock import clock
from streams.conflate import DueIndex
from streams.deadletter import dead_letter
from streams.errors import PipelineError
from streams.messages import (
    INSPECTION_MSG,
    LOCATION_MSG,
    VENDOR_MSG,
    CertificateChanged,
    InspectionChanged,
    LocationPart,
    PestChanged,
    ReadingChanged,
    Subscribe,
    Tick,
    Truncated,
    Unsubscribe,
    encode,
)
from streams.state import InspectionState, KeyState, LocationState, VendorState
from streams.topology import space_partition

log = logging.getLogger(__name__)
WINDOW = timedelta(seconds=settings.conflate_window_s)
_TICK = encode(Tick())


class PartTooLarge(PipelineError):
    """A key's part would not fit in one message."""


def _apply(state: KeyState, msg: Any) -> bool:
    """Apply a row change; True when the state changed."""
    if isinstance(msg, ReadingChanged) and isinstance(state, LocationState):
        return state.apply_reading(msg, history=settings.reading_history_per_sensor)
    if isinstance(msg, PestChanged) and isinstance(state, LocationState):
        return state.apply_pest(msg, now=clock())
    if isinstance(msg, CertificateChanged) and isinstance(state, VendorState):
        return state.apply_certificate(msg)
    if isinstance(msg, InspectionChanged) and isinstance(state, InspectionState):
        return state.apply_inspection(msg)
    raise TypeError(f"{type(msg).__name__} does not belong to {type(state).__name__}")


def grouped(subscribers: Iterable[str], partitions: int) -> dict[int, list[str]]:
    """Subscribers by the booking partition their messages go to."""
    by_partition: dict[int, list[str]] = {}
    for booking_id in subscribers:
        partition = space_partition("booking", booking_id, partitions)
        by_partition.setdefault(partition, []).append(booking_id)
    return by_partition


def part_of(state: KeyState, key: str) -> BaseModel:
    """What the bookings need of the key: pests outside the window never reach a snapshot."""
    part: BaseModel = state.part(key)  # type: ignore[attr-defined]
    if isinstance(part, LocationPart):
        horizon = clock() - PEST_WINDOW
        pests = [p for p in part.pests if p.detected_at >= horizon]
        part = part.model_copy(update={"pests": pests})
    return part


# Pest detections may fill this share of a location's part; the rest stays free for readings
# (a reading from a new sensor still gets through where detections have piled up).
PEST_SHARE = 0.75


def fits(key: str, state: KeyState, *, with_state: bool = False) -> BaseModel:
    """The key's part, if it (and the state) are within their bounds; PartTooLarge if not.
    The state's own bound is otherwise checked as it is written (agents.common.save)."""
    part = part_of(state, key)
    limit = settings.max_part_bytes
    size = len(encode(part))
    if size > limit:
        raise PartTooLarge(f"its part would be {size:,} bytes, over MIS_MAX_PART_BYTES={limit:,}")
    if isinstance(part, LocationPart) and size > PEST_SHARE * limit:
        pests = size - len(encode(part.model_copy(update={"pests": []})))
        if pests > PEST_SHARE * limit:
            raise PartTooLarge(
                f"its pest detections in the window would take {pests:,} bytes of its part, "
                f"over {PEST_SHARE:.0%} of MIS_MAX_PART_BYTES={limit:,}"
            )
    size = len(encode(state)) if with_state else 0
    if size > 2 * limit:
        raise PartTooLarge(
            f"its state would be {size:,} bytes, over twice MIS_MAX_PART_BYTES={limit:,}"
        )
    return part


class Space:
    """One key space: its table, its messages, what is pending in it and who wakes it."""

    def __init__(
        self,
        name: str,
        topic: Any,
        table: Any,
        adapter: TypeAdapter[Any],
        cls: type[KeyState],
    ) -> None:
        self.name, self.table, self.adapter, self.cls = name, table, adapter, cls
        self.topic_name = topic.get_topic_name()
        self.pending = DueIndex()
        self.waker = Waker(topic, _TICK)

    def load_pending(self, partition: int) -> None:
        """What the table says is pending in ``partition`` (a restart leaves it there)."""
        if self.pending.loaded(partition):
            return
        entries = []
        for raw_key, raw in self.table.items():
            if b'"due":"' not in raw and b'"unconfirmed":"' not in raw:
                continue
            key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
            if space_partition(self.name, key, settings.partitions) == partition:
                entries.append((key, parse(self.cls, raw).outbox.owed_at))
        self.pending.load(partition, entries)
        if entries:
            log.info(
                "pending found topic=%s partition=%d keys=%d",
                self.topic_name,
                partition,
                len(entries),
            )


class KeySpaceBatch:
    def __init__(self, space: Space) -> None:
        self.space = space
        limit = 2 * settings.max_part_bytes
        self.keys: KeyedBatch[KeyState] = KeyedBatch(space.table, space.cls, limit)
        self.truncations = Truncations(space.cls.__name__, self.keys, space.name)
        self.changed: set[str] = set()
        self.applied: dict[str, list[tuple[Any, Any]]] = {}  # key -> its (event, change)s

    async def handle(self, event: Any) -> None:
        metrics.EVENTS_IN.labels(topic=event.message.topic).inc()
        self.keys.seen(event)
        changes = await decode(event, self.space.name)
        if changes is None:
            try:
                msg = self.space.adapter.validate_json(event.value)
            except ValidationError as exc:
                await dead_letter(event, f"unreadable message: {exc.errors()[0]['msg']}")
                return
            if isinstance(msg, Tick):
                self.space.load_pending(event.message.partition)
                return  # the due keys of every partition of the batch are flushed at its end
            if isinstance(msg, Truncated):
                for key in self.truncations.record(
                    msg,
                    event,
                    self.space.table,
                    lambda _, state: state.truncate(msg.table, msg.version),
                ):
                    self._changed(key, self.keys.state(key, event))
                return
            changes = [(key_of(event), msg)]
        for key, change in changes:
            self.apply(event, key, change)

    def _changed(self, key: str, state: KeyState) -> None:
        conflate.mark(state.outbox, clock(), WINDOW)
        self.changed.add(key)
        self.keys.touch(key)

    def apply(self, event: Any, key: str, msg: Any) -> None:
        self.applied.setdefault(key, []).append((event, msg))
        state = self.keys.state(key, event)
        if self.truncations.absorb(event, state.truncate):
            self._changed(key, state)
        if self._apply(state, msg):
            self.changed.add(key)
        self.keys.touch(key)

    @staticmethod
    def _apply(state: KeyState, msg: Any) -> bool:
        """Apply one message to the key's state; True when its rows changed."""
        fresh = state.outbox.fresh
        if isinstance(msg, Subscribe | Unsubscribe):
            if state.subscribe(msg):
                if msg.booking_id not in fresh:
                    fresh.append(msg.booking_id)
            elif msg.booking_id in fresh:
                fresh.remove(msg.booking_id)
            return False
        if _apply(state, msg):
            conflate.mark(state.outbox, clock(), WINDOW)
            return True
        return False

    async def retry(self, key: str, stored: KeyState) -> KeyState:
        """The key's changes failed together: apply them one by one to its stored state and
        keep each that leaves the part and the state within their bounds."""
        state = stored
        for event, msg in self.applied.get(key, []):
            trial = state.model_copy(deep=True)
            self._apply(trial, msg)
            try:
                fits(key, trial, with_state=True)
            except PipelineError as exc:
                await dead_letter(event, f"processing failed for key {key}: {exc}")
                continue
            state = trial
        return state

    async def finish(self) -> None:
        now = clock()
        for partition, event in self.keys.partitions().items():
            for key in self.space.pending.due(partition, now):
                if self.keys.stored(key, event):
                    self.keys.state(key, event, own=False)
                    self.keys.touch(key)
        await self.keys.flush(self.answer, self.retry)

    async def answer(self, key: str, state: KeyState) -> None:
        now, outbox = clock(), state.outbox
        due = conflate.is_due(outbox, now)
        if due:
            targets = list(state.subscribers)
        else:
            listening = set(state.subscribers)
            targets = [b for b in outbox.fresh if b in listening]
        if targets or key in self.changed:
            part = fits(key, state)
            for partition, ids in grouped(targets, settings.partitions).items():
                value = encode(part.model_copy(update={"bookings": ids}))
                await self.keys.send(
                    key, topics.bookings, key=key.encode(), value=value, partition=partition
                )
                metrics.EVENTS_OUT.labels(topic=topics.bookings.get_topic_name()).inc()
        if due:
            conflate.sent(outbox, now)
        else:
            outbox.fresh = []
        partition = self.keys.partition(key)
        self.space.pending.set(partition, key, outbox.due)
        if outbox.due is not None:
            self.space.waker.wake(partition, outbox.due)


async def _serve(stream: Any, space: Space) -> None:
    async for events in stream.take_events(settings.batch_size, settings.batch_within_s):
        batch = KeySpaceBatch(space)
        for event in events:
            await guarded(event, batch.handle)
        await batch.finish()


location_space = Space(
    "location", topics.locations, tables.location_state, LOCATION_MSG, LocationState
)
vendor_space = Space("vendor", topics.vendors, tables.vendor_state, VENDOR_MSG, VendorState)
inspection_space = Space(
    "inspection", topics.inspections, tables.inspection_state, INSPECTION_MSG, InspectionState
)
SPACES = (location_space, vendor_space, inspection_space)


@app.agent(topics.location_inputs)
async def locations(stream: Any) -> None:
    await _serve(stream, location_space)


@app.agent(topics.vendor_inputs)
async def vendors(stream: Any) -> None:
    await _serve(stream, vendor_space)


@app.agent(topics.inspection_inputs)
async def inspections(stream: Any) -> None:
    await _serve(stream, inspection_space)


@app.on_partitions_revoked.connect  # type: ignore[arg-type]
async def _forget_revoked(app: Any, revoked: Any, **kwargs: Any) -> None:
    # Another worker may change these keys while we don't own them: reload on return.
    forget_deliveries(tp.partition for tp in revoked)
    for space in SPACES:
        space.pending.forget({tp.partition for tp in revoked if tp.topic == space.topic_name})
