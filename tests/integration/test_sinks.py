"""The sinks on the real stack: each follows the snapshot topic at its own pace.

MongoDB stopped: the Postgres table stays fresh, and the listings catch up exactly once MongoDB is
back. A listing MongoDB refuses goes to the dead letters and the others are written. A publish
racing the sink never puts an older snapshot over a newer one.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
import requests
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from launcher.stack import Stack
from schemas.snapshot import SnapshotRecord, snapshot_id
from streams import source_db, topology
from streams.config import Settings
from streams.samples import booking, booking_record
from streams.sinks.listings import ListingSink
from tests.integration import backends
from tests.integration.conftest import Consume
from tests.integration.workers import (
    API_TOKEN,
    Worker,
    reading_ends,
    readings_gathered,
    snapshot_row,
    wait_for,
)

SETTLE = 60.0


@pytest.fixture(scope="module")
def app_id() -> str:
    return f"mis-it-sinks-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def worker(stack: Any, app_id: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    with Worker("w1", app_id, tmp_path_factory.mktemp("workers")).running() as w:
        yield w


def listing(mongo_db: Any, booking_id: UUID) -> dict[str, Any] | None:
    doc: dict[str, Any] | None = mongo_db["market_listings"].find_one(
        {"_id": str(snapshot_id(booking_id))}
    )
    return doc


def new_booking(pg: Any, location: UUID, quantity: int = 100) -> UUID:
    now = datetime.now(UTC)
    values = source_db.booking_values(
        farmer_id=uuid4(),
        vendor_id=uuid4(),
        location_id=location,
        crop_type="onion",
        quantity_kg=quantity,
        ai_inspection_id=None,
        grade="B",
        status="confirmed",
        duration_days=10,
        start_date=now,
        end_date=now + timedelta(days=10),
    )
    booking_id: UUID = source_db.insert(pg, "storage_bookings", **values)
    return booking_id


def reading(pg: Any, location: UUID, sensor_type: str, value: float) -> None:
    source_db.insert(
        pg,
        "sensor_readings",
        location_id=location,
        sensor_id=f"{sensor_type}-1",
        sensor_type=sensor_type,
        value=value,
        unit="u",
        status="active",
        reading_time=datetime.now(UTC),
    )


def published(pg: Any, mongo_db: Any, booking_id: UUID, quantity: int) -> tuple[dict, dict] | None:
    row = snapshot_row(pg, booking_id)
    doc = listing(mongo_db, booking_id)
    if row is None or doc is None or row["quantity_kg"] != quantity:
        return None
    if doc["content_hash"] != row["content_hash"] or row["synced_hash"] != row["content_hash"]:
        return None
    return row, doc


def test_postgres_stays_fresh_while_mongodb_is_down_and_mongodb_catches_up_exactly(
    worker: Worker, pg: Any, mongo_db: Any, settings: Settings
) -> None:
    location = uuid4()
    bookings = [new_booking(pg, location, quantity=100 + i) for i in range(5)]
    for i, b in enumerate(bookings):
        wait_for(f"listing of {b}", lambda b=b, q=100 + i: published(pg, mongo_db, b, q), SETTLE)

    stack = Stack.from_settings(settings)
    stack.stop_component("mongo")
    try:
        # Twenty versions of each booking while MongoDB is away; Postgres follows every one.
        for round_ in range(1, 21):
            for i, b in enumerate(bookings):
                pg.execute(
                    "UPDATE storage_bookings SET quantity_kg = %s, updated_at = now() "
                    "WHERE id = %s",
                    (1000 * round_ + i, b),
                )
        for i, b in enumerate(bookings):

            def fresh(b: UUID = b, q: int = 20_000 + i) -> dict[str, Any] | None:
                row = snapshot_row(pg, b)
                return row if row is not None and row["quantity_kg"] == q else None

            row = wait_for(f"Postgres row of {b} while MongoDB is down", fresh, SETTLE)
            # The row says what MongoDB holds: the old content, still published.
            assert row["status"] == "published"
            assert row["synced_hash"] != row["content_hash"]
    finally:
        stack.start_component("mongo")

    for i, b in enumerate(bookings):
        row, doc = wait_for(
            f"listing of {b} after MongoDB came back",
            lambda b=b, q=20_000 + i: published(pg, mongo_db, b, q),
            SETTLE,
        )
        assert doc["quantity_kg"] == row["quantity_kg"]
        assert doc["source_version"] == row["source_version"]
        assert doc["status"] == "published"


def test_a_listing_mongodb_refuses_is_dead_lettered_and_the_others_are_written(
    worker: Worker, pg: Any, mongo_db: Any, app_id: str, consume: Consume
) -> None:
    bad_location, good_location = uuid4(), uuid4()
    since = reading_ends()
    # A field name with a dot: the snapshot's sensors are keyed by sensor type.
    reading(pg, bad_location, "pm2.5", 12.0)
    reading(pg, good_location, "temperature", 4.0)
    # The readings in their locations before the bookings subscribe: the bad booking's first
    # snapshot is then the refused one.
    readings_gathered(app_id, since, 2)
    bad, good = new_booking(pg, bad_location), new_booking(pg, good_location)
    wait_for(f"listing of {good}", lambda: published(pg, mongo_db, good, 100), SETTLE)
    row = wait_for(f"row of {bad}", lambda: snapshot_row(pg, bad), SETTLE)
    assert "pm2.5" in row["sensors"]
    if backends.selected() == "containers":
        # MongoDB itself takes dotted field names (5.0 and later): the listing is written.
        wait_for(f"listing of {bad}", lambda: published(pg, mongo_db, bad, 100), SETTLE)
        return
    letter = consume(
        topology.dead_letter_topic(app_id),
        lambda r: isinstance(r.value, dict) and r.key == str(bad),
        timeout_s=SETTLE,
    )
    assert letter.value["reason"].startswith("mongodb: mongodb refused the listing")
    assert json.loads(letter.value["value"]["text"])["snapshot"]["booking_id"] == str(bad)
    assert snapshot_row(pg, bad)["status"] == "ready_to_publish"


def test_a_publish_racing_the_sink_never_puts_an_older_snapshot_over_a_newer_one(
    worker: Worker, pg: Any, mongo_db: Any
) -> None:
    location = uuid4()
    b = new_booking(pg, location, quantity=1)
    wait_for(f"listing of {b}", lambda: published(pg, mongo_db, b, 1), SETTLE)
    url = f"http://127.0.0.1:{worker.web_port}/storage-guard/snapshots/{b}/publish"
    for q in range(2, 12):
        pg.execute("UPDATE storage_bookings SET quantity_kg = %s WHERE id = %s", (q, b))
        answer = requests.post(url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30)
        assert answer.status_code == 200, answer.text
    row, doc = wait_for(f"listing of {b}", lambda: published(pg, mongo_db, b, 11), SETTLE)
    assert doc["quantity_kg"] == 11
    sync = pg.execute(
        "SELECT source_version, content_hash FROM market_listing_sync WHERE booking_id = %s", (b,)
    ).fetchone()
    assert sync == (row["source_version"], row["content_hash"])


def _record(booking_id: UUID, version: int) -> SnapshotRecord:
    return booking_record(booking(booking_id, "leek", version), version, datetime.now(UTC))


def test_concurrent_writers_leave_the_newest_listing_whatever_order_they_write_in(
    pg: Any, mongo_db: Any, settings: Settings
) -> None:
    """Two sinks (one of them a writer a rebalance left behind) and explicit publishes, all at
    once, each with the versions in another order: MongoDB ends with the newest."""
    booking_id = uuid4()
    records = [_record(booking_id, v) for v in range(1, 41)]
    orders = [records, records[::-1], random.Random(7).sample(records, len(records))]

    def write(order: list[SnapshotRecord], force: bool) -> None:
        sink = ListingSink(settings, auto_publish=True)
        try:
            for r in order:
                sink.publish([r], force=force)
        finally:
            sink.close()

    with ThreadPoolExecutor(max_workers=3) as pool:
        jobs = [pool.submit(write, order, i == 2) for i, order in enumerate(orders)]
        for job in jobs:
            job.result()
    doc = listing(mongo_db, booking_id)
    assert doc is not None and doc["quantity_kg"] == 40
    assert doc["source_version"] == f"{40:032x}"
    sync = pg.execute(
        "SELECT source_version FROM market_listing_sync WHERE booking_id = %s", (booking_id,)
    ).fetchone()
    assert sync == (f"{40:032x}",)
    # An older one offered afterwards, even as an explicit publish, writes nothing.
    ListingSink(settings).publish([records[0]], force=True)
    assert listing(mongo_db, booking_id) == doc
    pg.execute("DELETE FROM market_listing_sync WHERE booking_id = %s", (booking_id,))
    mongo_db["market_listings"].delete_one({"_id": str(snapshot_id(booking_id))})


def test_an_unreadable_snapshot_is_dead_lettered_once_and_the_sinks_go_on(
    worker: Worker, pg: Any, mongo_db: Any, app_id: str, settings: Settings
) -> None:
    marker = uuid4()
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    producer.produce(
        topology.snapshot_topic(app_id), key=str(marker).encode(), value=b'{"snapshot": 1}'
    )
    producer.flush(10)
    b = new_booking(pg, uuid4(), quantity=3)
    wait_for(f"listing of {b}", lambda: published(pg, mongo_db, b, 3), SETTLE)

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"it-{uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        }
    )
    topic = topology.dead_letter_topic(app_id)
    consumer.assign(
        [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(settings.partitions)]
    )
    letters, ended = [], set()
    deadline = time.monotonic() + 30
    try:
        while len(ended) < settings.partitions and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                ended.add(msg.partition())
                continue
            if msg.key() == str(marker).encode():
                letters.append(json.loads(msg.value()))
    finally:
        consumer.close()
    assert len(ended) == settings.partitions, "dead-letter topic not read to its end"
    assert [letter["reason"] for letter in letters] == [
        "unreadable snapshot: Input should be an object"
    ]


def test_the_mongodb_sink_writes_by_id_among_100k_listings(
    pg: Any, mongo_db: Any, settings: Settings
) -> None:
    """100,000 listings in the collection: the sink's replaces and deletes still find theirs
    by _id (the patched server's index), newest wins, and nothing else is touched."""
    name = f"it_listings_100k_{uuid4().hex[:8]}"
    coll = mongo_db[name]
    filler = [
        {"_id": str(uuid4()), "booking_id": str(uuid4()), "crop_type": "filler", "pad": "x" * 2000}
        for _ in range(100_000)
    ]
    for start in range(0, len(filler), 5000):
        coll.insert_many(filler[start : start + 5000], ordered=False)
    sink = ListingSink(settings.model_copy(update={"mongo_collection": name}), auto_publish=True)
    try:
        ids = [uuid4() for _ in range(300)]
        sink.publish([_record(b, 1) for b in ids])
        sink.publish([_record(b, 2) for b in ids[:200]])
        sink.publish([_record(b, 1) for b in ids[:100]])  # older: refused by the guard
        sink.publish([], gone=ids[250:])
        # Only by _id: any other filter reads all 100,000 documents on FerretDB.
        docs = {b: coll.find_one({"_id": str(snapshot_id(b))}) for b in ids}
        assert [b for b, d in docs.items() if d is not None] == ids[:250]
        assert all(docs[b]["quantity_kg"] == 2 for b in ids[:200])  # type: ignore[index]
        assert all(docs[b]["quantity_kg"] == 1 for b in ids[200:250])  # type: ignore[index]
        sample = random.Random(3).sample(filler, 50)
        assert all(coll.find_one({"_id": d["_id"]}) == d for d in sample)
        plan = mongo_db.command(
            "explain",
            {"find": name, "filter": {"_id": str(snapshot_id(ids[0]))}},
            verbosity="queryPlanner",
        )
        assert "USING INDEX" in json.dumps(plan.get("queryPlanner"), default=str) or (
            backends.selected() == "containers"
        )
    finally:
        sink.close()
        coll.drop()
        pg.execute("DELETE FROM market_listing_sync WHERE booking_id = ANY(%s)", (ids,))


def test_a_sink_process_stops_on_a_burst_of_sigterms(stack: Any, tmp_path: Any) -> None:
    # A worker's death sends its sinks SIGTERM (the parent-death signal), and whoever stops the
    # worker may send another: the second must not find the first one's handler mid-way.
    import os
    import signal
    import subprocess
    import sys

    from tests.integration.workers import REPO

    env = {**os.environ, "MIS_APP_ID": f"mis-sigterm-{uuid.uuid4().hex[:8]}"}
    for attempt in range(5):
        log = tmp_path / f"sink-{attempt}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "sink"],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for(
                "the sink to follow the snapshot topic",
                lambda log=log, proc=proc: (
                    "sink following" in log.read_text(errors="replace") or proc.poll() is not None
                ),
                timeout=60,
            )
            assert proc.poll() is None, log.read_text(errors="replace")[-2000:]
            for _ in range(200):  # some land while an earlier one's handler runs
                proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, f"attempt {attempt}: {log.read_text()[-2000:]}"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
