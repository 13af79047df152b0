"""Debezium's topics of readings, pests and certificates -> their key spaces, re-keyed.

Why not key those topics at the source (Debezium's ``message.key.columns``) and skip this hop?
An incremental snapshot (``mis backfill``, reconcile) buffers each chunk in a window keyed by
the message key, so rows that share a key collapse into one: keyed by location_id, a reconcile
re-read one certificate per vendor and one reading per location. Keyed by id, the snapshots stay
whole, and this agent moves each change to the key of its location or vendor.
"""

from __future__ import annotations

from typing import Any

from streams import metrics, topics
from streams.agents.changes import decode
from streams.agents.common import guarded
from streams.app import app


async def _handle(event: Any) -> None:
    metrics.EVENTS_IN.labels(topic=event.message.topic).inc()
    await decode(event, space="")  # nothing belongs here: every change is forwarded


@app.agent(topics.rekeyed)
async def route(stream: Any) -> None:
    async for event in stream.events():
        await guarded(event, _handle)
