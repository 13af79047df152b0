"""The foreign key spaces: location, vendor and inspection.

Each agent keeps its key's rows and subscribers in a table and answers with its *part*: to a new
subscriber at once, and to every subscriber whenever a change alters the state.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import TypeAdapter, ValidationError

from streams import metrics, tables, topics
from streams.agents.common import guarded, key_of, load, save
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
    Unsubscribe,
    encode,
)
from streams.state import InspectionState, KeyState, LocationState, VendorState

log = logging.getLogger(__name__)


def _apply(state: KeyState, msg: Any) -> bool:
    if isinstance(msg, Subscribe | Unsubscribe):
        return state.subscribe(msg)
    if isinstance(msg, ReadingChanged) and isinstance(state, LocationState):
        return state.apply_reading(msg, history=settings.reading_history_per_sensor)
    if isinstance(msg, PestChanged) and isinstance(state, LocationState):
        return state.apply_pest(msg, now=clock())
    if isinstance(msg, CertificateChanged) and isinstance(state, VendorState):
        return state.apply_certificate(msg)
    if isinstance(msg, InspectionChanged) and isinstance(state, InspectionState):
        return state.apply_inspection(msg)
    raise TypeError(f"{type(msg).__name__} does not belong to {type(state).__name__}")


def _handler(table: Any, adapter: TypeAdapter[Any], cls: type[KeyState]) -> Any:
    async def handle(event: Any) -> None:
        metrics.EVENTS_IN.labels(topic=event.message.topic).inc()
        try:
            msg = adapter.validate_json(event.value)
        except ValidationError as exc:
            await dead_letter(event, f"unreadable message: {exc.errors()[0]['msg']}")
            return
        key = key_of(event)
        state = load(table, key, cls)
        if not _apply(state, msg):
            return
        save(table, key, state)
        answer_to = [msg.booking_id] if isinstance(msg, Subscribe) else list(state.subscribers)
        if answer_to:
            part = encode(state.part(key))  # type: ignore[attr-defined]
            for booking_id in answer_to:
                await topics.bookings.send(key=booking_id.encode(), value=part)
            metrics.EVENTS_OUT.labels(topic=topics.bookings.get_topic_name()).inc(len(answer_to))

    return handle


async def _serve(stream: Any, table: Any, adapter: TypeAdapter[Any], cls: type[KeyState]) -> None:
    handle = _handler(table, adapter, cls)
    async for event in stream.events():
        await guarded(event, handle)


@app.agent(topics.locations)
async def locations(stream: Any) -> None:
    await _serve(stream, tables.location_state, LOCATION_MSG, LocationState)


@app.agent(topics.vendors)
async def vendors(stream: Any) -> None:
    await _serve(stream, tables.vendor_state, VENDOR_MSG, VendorState)


@app.agent(topics.inspections)
async def inspections(stream: Any) -> None:
    await _serve(stream, tables.inspection_state, INSPECTION_MSG, InspectionState)
