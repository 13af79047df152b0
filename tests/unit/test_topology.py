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


# String.hashCode and the PartitionRouting partition (for 4 and 7 partitions) of each string,
# as a JVM computes them (a five-line Java program printing s.hashCode() and the partition).
JAVA = [
    ("3f1c0e9a-8a4b-4c11-9d7e-2b6f0a1c5d33", -576051309, 3, 1),
    ("hello", 99162322, 2, 0),
    ("", 0, 0, 0),
    ("ünïcødé-🙂", 1261274299, 3, 5),
    ("00000000-0000-0000-0000-000000000000", 1428967488, 0, 4),
]


def test_java_partition_is_debeziums_partition_routing_with_the_java_hash() -> None:
    for text, hash_code, p4, p7 in JAVA:
        assert topology.java_string_hash(text) == hash_code
        assert topology.java_partition(text, 4) == p4
        assert topology.java_partition(text, 7) == p7


def test_locations_and_vendors_are_placed_as_debezium_routes_their_rows() -> None:
    key = str(uuid4())
    for space in topology.KEY_SPACES:
        expected = (
            topology.java_partition(key, 5)
            if space in ("location", "vendor")
            else topology.partition_of(key, 5)
        )
        assert topology.space_partition(space, key, 5) == expected
    # each routed table is read by the key space its routing column belongs to
    for table, column in topology.ROUTED_BY.items():
        space = column.removesuffix("_id")
        assert table in topology.DIRECT_TABLES[space]
        assert space in topology.ROUTED_SPACES


def test_every_internal_topic_and_changelog_carries_the_app_id() -> None:
    names = [
        *topology.internal_topics("app"),
        *(topology.changelog_topic("app", t) for t in topology.TABLES),
        *(topology.sink_group("app", s) for s in topology.SINK_NAMES),
    ]
    assert len(set(names)) == len(names)
    assert all(n.startswith("app-") for n in names)
    assert topology.key_space_topic("app", "booking") == "app-by-booking"


def test_the_connector_routes_each_table_by_the_column_the_topology_names() -> None:
    import json
    import re
    from pathlib import Path

    config = json.loads(
        (Path(__file__).parents[2] / "connectors" / "storage_guard-source.json").read_text()
    )["config"]
    routed: dict[str, str] = {}
    for name in config["transforms"].split(","):
        prefix = f"transforms.{name}."
        if not config[prefix + "type"].endswith("partitions.PartitionRouting"):
            continue
        assert config[prefix + "partition.hash.function"] == "java"
        assert config[prefix + "partition.topic.num"] == "${env:MIS_PARTITIONS}"
        column = config[prefix + "partition.payload.fields"].removeprefix("change.")
        pattern = config[f"predicates.{config[prefix + 'predicate']}.pattern"]
        for table in topology.SOURCE_TABLES:
            if re.fullmatch(pattern, f"sg.public.{table}"):
                assert table not in routed, f"{table} routed twice"
                routed[table] = column
    assert routed == topology.ROUTED_BY
