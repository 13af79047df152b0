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


@app.agent(topics.snapshots)
async def sink(stream: Any) -> None:
    # take_events acks a batch only after this body returns, and the body only returns once
    # the batch is written (the publisher retries), so no offset passes an unwritten snapshot.
    async for events in stream.take_events(settings.sink_batch_size, settings.sink_batch_within_s):
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
