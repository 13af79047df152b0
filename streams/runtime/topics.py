"""Every topic of one app, declared from streams.topology and the app's Settings.

Keys and values are raw bytes on the wire; the agents decode them with pydantic, so that a
message that does not parse becomes a dead letter instead of an exception inside Faust.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.types import TopicT

from streams import topology
from streams.config import Settings


class Topics:
    def __init__(self, app: faust.App, settings: Settings) -> None:
        self._app, self._settings, self.partitions = app, settings, settings.partitions
        # Debezium's topics, keyed by the row's id as the bare string, each event in the
        # partition of its key space's key (see the connector's JSON and
        # topology.DIRECT_TABLES). Deletes are followed by tombstones (null values).
        self.cdc = {t: topology.cdc_topic(settings, t) for t in topology.SOURCE_TABLES}
        self.table_of = {topic: table for table, topic in self.cdc.items()}

        # One ordered stream per key space (see streams.messages).
        self.key_spaces: dict[str, TopicT] = {
            space: self._internal(topology.key_space_topic(settings.app_id, space))
            for space in topology.KEY_SPACES
        }
        self.locations = self.key_spaces["location"]
        self.vendors = self.key_spaces["vendor"]
        self.inspections = self.key_spaces["inspection"]
        self.bookings = self.key_spaces["booking"]

        # The output: the latest snapshot of every booking, for downstream consumers.
        self.snapshots = self._internal(
            topology.snapshot_topic(settings.app_id),
            compacting=True,
            deleting=False,
            allow_empty=True,
            config={"min.compaction.lag.ms": str(topology.SNAPSHOT_COMPACTION_LAG_MS)},
        )
        self.dead_letters = self._internal(
            topology.dead_letter_topic(settings.app_id),
            retention=float(topology.DEAD_LETTER_RETENTION_S),
        )

    def _internal(self, name: str, **kwargs: Any) -> TopicT:
        return self._app.topic(name, partitions=self.partitions, internal=True, **kwargs)

    def inputs(self, space: str) -> TopicT:
        """What the agent of key space ``space`` reads: Debezium's topics of its rows (those
        keyed by the key space's key) and its own topic together.

        Faust's assignor gives partition p of every co-subscribed topic with the same partition
        count to one worker, and a table writes into the partition of the current event, so a
        key's changes, its subscriptions and its state meet on one worker, in one partition.
        The topics are created before a worker starts (streams.admin.ensure_topics)."""
        names = [self.cdc[t] for t in topology.agent_tables(self._settings, space)]
        return self._app.topic(*names, self.key_spaces[space].get_topic_name(), allow_empty=True)

    async def send_to_space(self, space: str, key: str, value: bytes) -> None:
        """Send ``value`` to ``key`` of key space ``space``, in the partition the key lives in
        (topology.space_partition): never by the producer's own choice of partition."""
        partition = topology.space_partition(space, key, self.partitions)
        await self.key_spaces[space].send(key=key.encode(), value=value, partition=partition)
