"""Every topic of the pipeline, in one place.

Keys and values are raw bytes on the wire; the agents decode them with pydantic, so that a
message that does not parse becomes a dead letter instead of an exception inside Faust.
"""

from __future__ import annotations

from typing import Any

from faust.types import TopicT

from streams import topology
from streams.app import app, settings

# Debezium's topics, keyed by the row's id as the bare string, each event in the partition of
# its key space's key (see the connector's JSON and topology.DIRECT_TABLES).
# Deletes are followed by tombstones (null values), hence allow_empty.
CDC = {t: topology.cdc_topic(settings, t) for t in topology.SOURCE_TABLES}


def _internal(name: str, **kwargs: Any) -> TopicT:
    return app.topic(
        name,
        partitions=settings.partitions,
        internal=True,
        **kwargs,
    )


# One ordered stream per key space (see streams.messages).
locations = _internal(topology.key_space_topic(settings.app_id, "location"))
vendors = _internal(topology.key_space_topic(settings.app_id, "vendor"))
inspections = _internal(topology.key_space_topic(settings.app_id, "inspection"))
bookings = _internal(topology.key_space_topic(settings.app_id, "booking"))

# The output: the latest snapshot of every booking, for downstream consumers.
snapshots = _internal(
    topology.snapshot_topic(settings.app_id),
    compacting=True,
    deleting=False,
    allow_empty=True,
    config={"min.compaction.lag.ms": str(topology.SNAPSHOT_COMPACTION_LAG_MS)},
)

dead_letters = _internal(
    topology.dead_letter_topic(settings.app_id),
    retention=float(topology.DEAD_LETTER_RETENTION_S),
)


def _inputs(space: TopicT, *tables: str) -> TopicT:
    # What a key-space agent reads: Debezium's topic of its rows (if keyed by the key space's
    # key) and its own topic together.
    # Faust's assignor gives partition p of every co-subscribed topic with the same partition
    # count to one worker, and a table writes into the partition of the current event, so a
    # key's changes, its subscriptions and its state meet on one worker, in one partition.
    # The topics are created before a worker starts (streams.admin.ensure_topics).
    return app.topic(*(CDC[t] for t in tables), space.get_topic_name(), allow_empty=True)


location_inputs = _inputs(locations, *topology.DIRECT_TABLES["location"])
vendor_inputs = _inputs(vendors, *topology.DIRECT_TABLES["vendor"])
inspection_inputs = _inputs(inspections, *topology.DIRECT_TABLES["inspection"])
booking_inputs = _inputs(bookings, *topology.DIRECT_TABLES["booking"])

KEY_SPACE_TOPICS = {"location": locations, "vendor": vendors, "inspection": inspections}
KEY_SPACE_TOPICS["booking"] = bookings


async def send_to_space(space: str, key: str, value: bytes) -> None:
    """Send ``value`` to ``key`` of key space ``space``, in the partition the key lives in
    (topology.space_partition): never by the producer's own choice of partition."""
    partition = topology.space_partition(space, key, settings.partitions)
    await KEY_SPACE_TOPICS[space].send(key=key.encode(), value=value, partition=partition)
