"""The foreign key spaces: location, vendor and inspection.

Each agent keeps its key's rows and subscribers in a table and answers with its *part*: to a new
subscriber at once, and to every subscriber whenever a change alters the state. Within a batch a
key answers once, with its state after all of the batch's changes.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import TypeAdapter, ValidationError

from streams import metrics, tables, topics
from streams.agents.batch import KeyedBatch
from streams.agents.common import guarded, key_of
from streams.agents.truncation import Truncations
from streams.app import app, settings
from streams.clock import clock
from streams.deadletter import dead_letter
from streams.messages import (
    INSPECTION_MSG,
    LOCATION_MSG,
    VENDOR_MSG,
    CertificateChanged,
    InspectionChanged,
    PestChanged,
    ReadingChanged,
    Subscribe,
    Truncated,
    Unsubscribe,
    encode,
)
from streams.state import InspectionState, KeyState, LocationState, VendorState

log = logging.getLogger(__name__)


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


class _Batch:
    def __init__(self, table: Any, adapter: TypeAdapter[Any], cls: type[KeyState]) -> None:
        self.keys: KeyedBatch[KeyState] = KeyedBatch(table, cls)
        self.table, self.truncations = table, Truncations(cls.__name__, self.keys)
        self.adapter = adapter
        self.changed: set[str] = set()
        self.new_subscribers: dict[str, set[str]] = {}

    async def handle(self, event: Any) -> None:
        metrics.EVENTS_IN.labels(topic=event.message.topic).inc()
        try:
            msg = self.adapter.validate_json(event.value)
        except ValidationError as exc:
            await dead_letter(event, f"unreadable message: {exc.errors()[0]['msg']}")
            return
        if isinstance(msg, Truncated):
            for key in self.truncations.record(
                msg, event, self.table, lambda _, state: state.truncate(msg.table, msg.version)
            ):
                self.changed.add(key)
                self.keys.touch(key)
            return
        key = key_of(event)
        state = self.keys.state(key, event)
        if self.truncations.absorb(event, state.truncate):
            self.changed.add(key)
            self.keys.touch(key)
        if isinstance(msg, Subscribe | Unsubscribe):
            if state.subscribe(msg):
                self.new_subscribers.setdefault(key, set()).add(msg.booking_id)
            self.keys.touch(key)
        elif _apply(state, msg):
            self.changed.add(key)
            self.keys.touch(key)

    async def answer(self, key: str, state: KeyState) -> None:
        wanted = set(
            state.subscribers if key in self.changed else self.new_subscribers.get(key, ())
        )
        targets = [b for b in state.subscribers if b in wanted]
        if not targets:
            return
        part = encode(state.part(key))  # type: ignore[attr-defined]
        for booking_id in targets:
            await topics.bookings.send(key=booking_id.encode(), value=part)
        metrics.EVENTS_OUT.labels(topic=topics.bookings.get_topic_name()).inc(len(targets))


async def _serve(stream: Any, table: Any, adapter: TypeAdapter[Any], cls: type[KeyState]) -> None:
    async for events in stream.take_events(settings.batch_size, settings.batch_within_s):
        batch = _Batch(table, adapter, cls)
        for event in events:
            await guarded(event, batch.handle)
        await batch.keys.flush(batch.answer)


@app.agent(topics.locations)
async def locations(stream: Any) -> None:
    await _serve(stream, tables.location_state, LOCATION_MSG, LocationState)


@app.agent(topics.vendors)
async def vendors(stream: Any) -> None:
    await _serve(stream, tables.vendor_state, VENDOR_MSG, VendorState)


@app.agent(topics.inspections)
async def inspections(stream: Any) -> None:
    await _serve(stream, tables.inspection_state, INSPECTION_MSG, InspectionState)
