"""The snapshot topic -> Postgres and MongoDB, in batches, retried until written."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from schemas.snapshot import SnapshotRecord
from streams import metrics, topics
from streams.agents.common import key_of
from streams.app import app, settings
from streams.deadletter import dead_letter
from streams.errors import SinkRejected
from streams.sinks.mongo import MongoSink
from streams.sinks.postgres import PostgresSink
from streams.sinks.publisher import Publisher

log = logging.getLogger(__name__)

publisher = Publisher(
    PostgresSink(settings.pg_dsn),
    MongoSink(settings.mongo_url, settings.mongo_database, settings.mongo_collection),
    auto_publish=settings.auto_publish,
    max_delay=settings.sink_retry_max_s,
)


async def _write(events: list[Any]) -> None:
    batch: list[tuple[str, SnapshotRecord | None]] = []
    for event in events:
        metrics.EVENTS_IN.labels(topic=event.message.topic).inc()
        if event.value is None:
            batch.append((key_of(event), None))
            continue
        try:
            batch.append((key_of(event), SnapshotRecord.model_validate_json(event.value)))
        except ValidationError as exc:
            await dead_letter(event, f"unreadable snapshot: {exc.errors()[0]['msg']}")
    await publisher.write(batch)


@app.agent(topics.snapshots)
async def sink(stream: Any) -> None:
    # take_events acks a batch only after this body returns, and the body only returns once
    # the batch is written (the publisher retries while a sink is down), so no offset passes
    # an unwritten snapshot. A batch a sink refuses is retried one snapshot at a time, and
    # only the refused ones go to the dead letters.
    async for events in stream.take_events(settings.sink_batch_size, settings.sink_batch_within_s):
        try:
            await _write(events)
        except SinkRejected:
            for event in events:
                try:
                    await _write([event])
                except SinkRejected as exc:
                    await dead_letter(event, str(exc))
        except Exception as exc:
            log.exception("sink failed on a batch of %d", len(events))
            for event in events:
                await dead_letter(event, f"sink failed: {type(exc).__name__}: {exc}")
