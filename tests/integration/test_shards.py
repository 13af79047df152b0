"""A vendor with more bookings than a key keeps subscribers in its state (streams.state.SHARD_AT):
its subscribers move into shards beside the state, every booking still gets its snapshot, and
a certificate of the vendor reaches all of them, on the real stack."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any
from uuid import uuid4

import pytest
from confluent_kafka import Consumer, TopicPartition

from streams import source_db, topology
from streams.state import SHARD_AT, SHARD_MARK
from tests.integration.workers import Worker, wait_for

BOOKINGS = SHARD_AT + 40
LOCATIONS = 20


def _synced(pg: Any, vendor: uuid.UUID, certified: bool) -> int:
    """The vendor's bookings whose row and listing agree, with ``is_certified`` as given."""
    row = pg.execute(
        "SELECT count(*) FROM market_inventory_snapshots s"
        " JOIN storage_bookings b ON b.id = s.booking_id"
        " WHERE b.vendor_id = %s AND s.synced_hash = s.content_hash AND s.is_certified = %s",
        (vendor, certified),
    ).fetchone()
    return int(row[0])


def _shard_keys(settings: Any, app_id: str, vendor: uuid.UUID) -> dict[str, set[int]]:
    """The vendor's state and its subscriber shards in its key space's changelog, each with
    the partitions it was written to."""
    topic = topology.changelog_topic(app_id, topology.STATE_TABLES["vendor"])
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"test-shards-{uuid4().hex[:6]}",
            "enable.auto.commit": False,
        }
    )
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {}
        for p in parts:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        found: dict[str, set[int]] = {}
        done = {p for p, high in ends.items() if high == 0}

        def read_to_end() -> bool:
            for msg in consumer.consume(500, timeout=1.0):
                partition, offset = msg.partition(), msg.offset()
                if msg.error() or partition is None or offset is None:
                    continue
                key = (msg.key() or b"").decode()
                if key.startswith(str(vendor)):
                    found.setdefault(key, set()).add(partition)
                if offset + 1 >= ends[partition]:
                    done.add(partition)
            return len(done) == len(parts)

        wait_for("the vendor state's changelog read to its end", read_to_end, timeout=60)
        return found
    finally:
        consumer.close()


@pytest.mark.late(1)
def test_a_vendor_past_the_shard_threshold_answers_every_booking(
    stack: Any, settings: Any, pg: Any, tmp_path: Any
) -> None:
    app_id = f"mis-its-{uuid.uuid4().hex[:8]}"
    vendor = uuid4()
    locations = [uuid4() for _ in range(LOCATIONS)]
    with Worker("s1", app_id, tmp_path).running():
        with pg.transaction():
            for i in range(BOOKINGS):
                source_db.insert(
                    pg,
                    "storage_bookings",
                    **source_db.booking_values(
                        farmer_id=uuid4(),
                        vendor_id=vendor,
                        location_id=locations[i % LOCATIONS],
                        crop_type="rice",
                        quantity_kg=10,
                        status="active",
                    ),
                )
        wait_for(
            f"all {BOOKINGS} snapshots, uncertified",
            lambda: _synced(pg, vendor, certified=False) == BOOKINGS,
            timeout=180,
        )
        written = _shard_keys(settings, app_id, vendor)
        shards = {k for k in written if k.startswith(f"{vendor}{SHARD_MARK}")}
        assert shards, "the vendor's subscribers were not sharded"
        # Each shard lives in the partition of its key's state, where the key's events are.
        assert all(written[k] == written[str(vendor)] for k in shards), written

        source_db.insert(
            pg,
            "certificates",
            **source_db.certificate_values(
                vendor_id=vendor,
                type="organic",
                status="valid",
                expiry_date=date.today() + timedelta(days=30),
            ),
        )
        wait_for(
            f"all {BOOKINGS} snapshots certified",
            lambda: _synced(pg, vendor, certified=True) == BOOKINGS,
            timeout=180,
        )
