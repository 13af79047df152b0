"""The pipeline's topology, declared once: every topic, table, consumer group and key space.

Pure: functions of the application id (``MIS_APP_ID``) or of Settings, no Faust, no I/O. The
Faust declarations (streams.runtime.topics, streams.runtime.tables), the topic creation
(streams.admin), the operations (streams.ops), the sinks, the bench and the tests all take
their names from here.

    Debezium:   <prefix>.public.<source table>            one per SOURCE_TABLES
    key spaces: <app>-by-<space>                           one per KEY_SPACES
    output:     <app>-snapshots (compacted)
    parked:     <app>-dead-letters
    state:      <app>-<table>-changelog                    one per TABLES (Faust's tables)
    sinks:      consumer group <app>-sink-<sink>           one per SINK_NAMES
    workers:    consumer group <app>
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from aiokafka.partitioner import murmur2

if TYPE_CHECKING:
    from streams.config import Settings

# Storage Guard's tables that Debezium captures, each with a CDC topic.
SOURCE_TABLES = (
    "storage_bookings",
    "crop_inspections",
    "sensor_readings",
    "pest_detections",
    "certificates",
)
# The key spaces (streams.messages): one ordered stream per key.
KEY_SPACES = ("location", "vendor", "inspection", "booking")
# The source tables each key space's agent reads directly. Their events arrive in the partition
# of the key space's key: bookings and inspections are keyed by their id; readings, pests and
# certificates keep their id as the message key, and Debezium's PartitionRouting transform puts
# each into the partition of its location or vendor (ROUTED_BY, java_partition).
DIRECT_TABLES = {
    "location": ("sensor_readings", "pest_detections"),
    "vendor": ("certificates",),
    "inspection": ("crop_inspections",),
    "booking": ("storage_bookings",),
}
# Tables whose topics the gatherer reads instead of their key space's agent, with a consumer
# group of its own (MIS_GATHER_READINGS, streams.gather): the agent gets their changes on its
# key space's topic, a message per key per read.
GATHERED_TABLES = ("sensor_readings",)
# Tables whose events Debezium places by a column rather than by the message key.
ROUTED_BY = {
    "sensor_readings": "location_id",
    "pest_detections": "location_id",
    "certificates": "vendor_id",
}
# Key spaces placed as PartitionRouting places those events (by Java's String.hashCode);
# the others as Kafka's producers place a key (murmur2 of its bytes).
ROUTED_SPACES = frozenset({"location", "vendor"})

# The Faust tables (streams.runtime.tables), each with the changelog `<app>-<table>-changelog`.
STATE_TABLES = {
    "location": "location-state",
    "vendor": "vendor-state",
    "inspection": "inspection-state",
    "booking": "booking-state",
}
TRUNCATIONS_TABLE = "truncations"
# Per booking partition, the parts its bookings listen to: one copy each (streams.state.Shelf).
PARTS_TABLE = "booking-parts"
TABLES = (*STATE_TABLES.values(), TRUNCATIONS_TABLE, PARTS_TABLE)

SNAPSHOT_COMPACTION_LAG_MS = 60_000
DEAD_LETTER_RETENTION_S = 30 * 24 * 3600

# The pipeline's own Postgres tables: the snapshots, and what MongoDB holds of them.
SNAPSHOT_TABLE = "market_inventory_snapshots"
SYNC_TABLE = "market_listing_sync"

# The sinks, each following the snapshot topic with a consumer group of its own.
SINK_NAMES = ("postgres", "mongodb")


def cdc_topic(settings: Settings, table: str) -> str:
    """Debezium's topic of a source table."""
    return settings.cdc_topic(table)


def cdc_topics(settings: Settings) -> list[str]:
    return [settings.cdc_topic(t) for t in SOURCE_TABLES]


def key_space_topic(app_id: str, space: str) -> str:
    """The topic of a key space (``space`` as in KEY_SPACES: "booking", ...)."""
    return f"{app_id}-by-{space}"


def key_space_topics(app_id: str) -> list[str]:
    return [key_space_topic(app_id, s) for s in KEY_SPACES]


def snapshot_topic(app_id: str) -> str:
    """The compacted output: the latest snapshot of every booking."""
    return f"{app_id}-snapshots"


def dead_letter_topic(app_id: str) -> str:
    return f"{app_id}-dead-letters"


def internal_topics(app_id: str) -> list[str]:
    """The topics the workers write: the key spaces, the snapshots, the dead letters."""
    return [*key_space_topics(app_id), snapshot_topic(app_id), dead_letter_topic(app_id)]


def changelog_topic(app_id: str, table: str) -> str:
    """Faust's changelog of one of TABLES."""
    return f"{app_id}-{table}-changelog"


def worker_group(app_id: str) -> str:
    """The consumer group of the workers (Faust uses the app id)."""
    return app_id


def gather_group(app_id: str) -> str:
    """The consumer group with which the workers' gatherers read GATHERED_TABLES' topics."""
    return f"{app_id}-gather"


def gathered_tables(settings: Settings) -> tuple[str, ...]:
    """The tables the gatherers read with ``settings`` (none when MIS_GATHER_READINGS is off)."""
    return GATHERED_TABLES if settings.gather_readings else ()


def agent_tables(settings: Settings, space: str) -> tuple[str, ...]:
    """The source tables whose topics the agent of ``space`` reads itself."""
    gathered = gathered_tables(settings)
    return tuple(t for t in DIRECT_TABLES[space] if t not in gathered)


def sink_group(app_id: str, sink: str) -> str:
    """The consumer group with which ``sink`` follows the snapshot topic."""
    return f"{app_id}-sink-{sink}"


def java_string_hash(text: str) -> int:
    """Java's ``String.hashCode``: 31-fold over the UTF-16 code units, in 32-bit arithmetic."""
    h = 0
    units = text.encode("utf-16-be")
    for i in range(0, len(units), 2):
        h = (31 * h + (units[i] << 8 | units[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def java_partition(value: str, partitions: int) -> int:
    """The partition Debezium's PartitionRouting (``partition.hash.function=java``) gives an
    event whose routing field holds ``value``: the hash's low 31 bits (Integer.MAX_VALUE
    becoming 0) modulo the partition count."""
    h = java_string_hash(value) & 0x7FFFFFFF
    return (0 if h == 0x7FFFFFFF else h) % partitions


@lru_cache(maxsize=1 << 16)
def space_partition(space: str, key: str, partitions: int) -> int:
    """The partition of ``key`` in key space ``space``: where its events, its messages and its
    state live. Every message to a key space goes to this partition explicitly. (Cached: a
    location's answer places each of its subscribers, each time.)"""
    if space in ROUTED_SPACES:
        return java_partition(key, partitions)
    return partition_of(key, partitions)


def partition_of(key: bytes | str, partitions: int) -> int:
    """The partition of ``key`` among ``partitions``: murmur2, as Kafka's Java producer, Kafka
    Connect and aiokafka's DefaultPartitioner (the workers' producer) compute it.

    confluent-kafka's default partitioner hashes differently (CRC32), so whatever produces with it
    gives this partition explicitly: a key must land where the workers' own messages land.
    """
    raw = key.encode() if isinstance(key, str) else key
    return (murmur2(raw) & 0x7FFFFFFF) % partitions
