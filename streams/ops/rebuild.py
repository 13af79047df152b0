"""Rebuilding the join tables from nothing, for ``mis replay --rebuild-tables``.

Two steps, both done while no worker runs:

1. Empty every table. Each key still alive in a table's changelog gets a tombstone. A worker's
   local RocksDB copy (MIS_DATA_DIR, on whatever machine) is brought up to date from the
   changelog when the worker starts, tombstones included, so every copy empties itself; no data
   directory has to be found and wiped by hand, and the changelog topics keep their identity
   (deleting and re-creating them would leave local stores claiming offsets past the new end).

2. Re-key the whole CDC history into the key-space topics (``<app>-by-*``), which the agents
   read beside Debezium's topics, before any worker runs; the group's CDC offsets move to their
   ends. The old messages of the key-space topics are skipped (the group's offsets are moved
   past them): they hold subscriptions and parts answered from the state being thrown away.
   Why not let the agents read the CDC history itself? They read its topics of several
   partitions in no particular order, so a booking would subscribe to its location while some
   of the location's readings are still waiting in another topic, get a partial part, and emit
   snapshots that never existed; the sinks would write them (they are newer evaluations) and
   then the right one again. Re-keyed up front, every data change precedes the first
   subscription in its key's partition: each key space answers with its complete state, and
   each booking emits once, its final snapshot, which the sinks' guard finds identical.
   Order across CDC partitions does not matter: every key-space transition is guarded by the
   Debezium version of the row (see streams.state).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import psycopg

from schemas.envelope import ZERO_VERSION
from streams import routing
from streams.errors import BadEvent
from streams.messages import VersionFloor, encode
from streams.ops.kafka import TP, Kafka
from streams.ops.terminal import Progress
from streams.topology import (
    SNAPSHOT_TABLE,
    SYNC_TABLE,
    key_space_topic,
    space_partition,
)

log = logging.getLogger(__name__)


def live_keys(messages: list[tuple[int, bytes, bool]]) -> dict[tuple[int, bytes], bool]:
    """(partition, key) -> whether the key's last changelog entry is a value (not a tombstone)."""
    alive: dict[tuple[int, bytes], bool] = {}
    for partition, key, has_value in messages:
        alive[(partition, key)] = has_value
    return alive


def clear_tables(kafka: Kafka, changelogs: Mapping[str, int], progress: Progress) -> int:
    """Tombstone every live key of the given changelog topics; return how many."""
    tps = [(t, p) for t, n in changelogs.items() for p in range(n)]
    ranges = kafka.watermarks(tps)
    total = sum(high - low for low, high in ranges.values())
    progress.total = total or None
    alive: dict[str, list[tuple[int, bytes, bool]]] = {t: [] for t in changelogs}
    read = 0
    for msg in kafka.read(ranges):
        if msg.key is not None:
            alive[msg.topic].append((msg.partition, msg.key, msg.value is not None))
        read += 1
        progress.update(read, "reading changelogs")
    sender = kafka.sender()
    for topic, entries in alive.items():
        for (partition, key), has_value in live_keys(entries).items():
            if has_value:
                sender.send(topic, partition, key, None)
    cleared = sender.flush()
    progress.close(read, f"{cleared:,} keys cleared")
    log.info("tables cleared changelogs=%s keys=%d", ",".join(changelogs), cleared)
    return cleared


@dataclass
class Rekeyed:
    events: int = 0
    tombstones: int = 0
    unroutable: int = 0
    routed: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def messages(self) -> int:
        return sum(self.routed.values())


# The greatest snapshot version either sink holds (text order is version order).
HELD_VERSION = f"""
SELECT greatest(
    (SELECT max(source_version) FROM {SNAPSHOT_TABLE}),
    (SELECT max(source_version) FROM {SYNC_TABLE}))
"""


def held_version(dsn: str) -> str:
    """The greatest version the sinks hold; ZERO_VERSION when they hold nothing."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute(HELD_VERSION).fetchone()
    return row[0] if row and row[0] else ZERO_VERSION


def send_floor(kafka: Kafka, app_id: str, version: str, partitions: int) -> None:
    """A VersionFloor to every booking partition, ahead of the history re-keyed after it."""
    sender = kafka.sender()
    for partition in range(partitions):
        sender.send(
            key_space_topic(app_id, "booking"),
            partition,
            None,
            encode(VersionFloor(version=version)),
        )
    sender.flush()
    log.info("version floor sent version=%s partitions=%d", version, partitions)


def rekey(
    kafka: Kafka,
    app_id: str,
    history: Mapping[TP, tuple[int, int]],
    partitions: Mapping[str, int],
    progress: Progress,
) -> Rekeyed:
    """Route every CDC event of ``history`` into the key-space topics (streams.routing)."""
    result = Rekeyed()
    started = time.monotonic()
    progress.total = sum(high - low for low, high in history.values()) or None
    sender = kafka.sender()
    for msg in kafka.read(history):
        result.events += 1
        if msg.value is None:
            result.tombstones += 1  # the tombstone after a delete: the delete itself is routed
        else:
            try:
                routed = routing.route(routing.table_of(msg.topic), msg.value)
            except BadEvent as exc:
                # Parked on the dead letters when it was first consumed; not parked again.
                result.unroutable += 1
                log.warning(
                    "unroutable event skipped topic=%s partition=%s offset=%s reason=%s",
                    msg.topic,
                    msg.partition,
                    msg.offset,
                    exc,
                )
                routed = []
            for space, key, message in routed:
                topic = key_space_topic(app_id, space)
                if key == routing.BROADCAST:  # a TRUNCATE: every partition of the key space
                    for partition in range(partitions[topic]):
                        sender.send(topic, partition, None, encode(message))
                else:
                    partition = space_partition(space, key, partitions[topic])
                    sender.send(topic, partition, key.encode(), encode(message))
                result.routed[topic] = result.routed.get(topic, 0) + 1
        progress.update(result.events, f"{result.messages:,} messages re-keyed")
    sender.flush()
    result.seconds = time.monotonic() - started
    progress.close(result.events, f"{result.messages:,} messages re-keyed")
    log.info(
        "history re-keyed events=%d messages=%d unroutable=%d seconds=%.1f",
        result.events,
        result.messages,
        result.unroutable,
        result.seconds,
    )
    return result
