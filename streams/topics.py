"""Every topic of the pipeline, in one place.

Keys and values are raw bytes on the wire; the agents decode them with pydantic, so that a
message that does not parse becomes a dead letter instead of an exception inside Faust.
"""

from __future__ import annotations

from typing import Any

from faust.types import TopicT

from streams.admin import DEAD_LETTER_RETENTION_S, SNAPSHOT_COMPACTION_LAG_MS, SOURCE_TABLES
from streams.app import app, settings

# Debezium's topics. Deletes are followed by tombstones (null values), hence allow_empty.
cdc = app.topic(*(settings.cdc_topic(t) for t in SOURCE_TABLES), allow_empty=True)


def _internal(suffix: str, **kwargs: Any) -> TopicT:
    return app.topic(
        f"{settings.app_id}-{suffix}",
        partitions=settings.partitions,
        internal=True,
        **kwargs,
    )


# One ordered stream per key space (see streams.messages).
locations = _internal("by-location")
vendors = _internal("by-vendor")
inspections = _internal("by-inspection")
bookings = _internal("by-booking")

# The output: the latest snapshot of every booking, for downstream consumers.
snapshots = _internal(
    "snapshots",
    compacting=True,
    deleting=False,
    allow_empty=True,
    config={"min.compaction.lag.ms": str(SNAPSHOT_COMPACTION_LAG_MS)},
)

dead_letters = _internal("dead-letters", retention=float(DEAD_LETTER_RETENTION_S))
