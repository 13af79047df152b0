"""The topology's partition function is the one the workers' producer uses (streams.topology)."""

from __future__ import annotations

from uuid import uuid4

from aiokafka.partitioner import DefaultPartitioner

from streams import topology
from streams.config import Settings


def test_partition_of_is_aiokafkas_default_partitioner_for_the_configured_count() -> None:
    partitioner = DefaultPartitioner()
    for partitions in sorted({Settings().partitions, 1, 3, 4, 7, 12}):
        every = list(range(partitions))
        for key in [str(uuid4()) for _ in range(300)] + ["", "a", "ab", "abc", "é"]:
            expected = partitioner(key.encode(), every, every)
            assert topology.partition_of(key, partitions) == expected
            assert topology.partition_of(key.encode(), partitions) == expected


def test_every_internal_topic_and_changelog_carries_the_app_id() -> None:
    names = [
        *topology.internal_topics("app"),
        *(topology.changelog_topic("app", t) for t in topology.TABLES),
        *(topology.sink_group("app", s) for s in topology.SINK_NAMES),
    ]
    assert len(set(names)) == len(names)
    assert all(n.startswith("app-") for n in names)
    assert topology.key_space_topic("app", "booking") == "app-by-booking"
