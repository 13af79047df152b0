"""Issue 5: replay, backfill and republish, run as an operator runs them, on the real stack.

The module has a consumer group (MIS_APP_ID) of its own. It writes a data set to the source
tables, lets a worker build it, and then runs the `mis` commands as processes: it stops the
worker before a replay (a replay refuses to run beside one) and starts it again once the
offsets are moved, while the replay waits for it to catch up.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from schemas.snapshot import snapshot_id
from streams import source_db, topology
from streams.config import Settings
from streams.ops.follow import follow
from streams.ops.kafka import Kafka
from streams.ops.terminal import Progress
from streams.ops.verify import Scope, verify
from tests.integration.workers import REPO, Worker, wait_for

SETTLE_S = 240.0
KEY_SPACES = ("by-location", "by-vendor", "by-inspection", "by-booking", "snapshots")
CONNECTOR = json.loads((REPO / "connectors" / "storage_guard-source.json").read_text())


@dataclass
class Pipeline:
    """One consumer group; its worker is stopped and started again around each replay."""

    settings: Settings
    workdir: Path
    worker: Worker | None = None
    starts: int = 0
    runs: int = 0

    @property
    def app_id(self) -> str:
        return self.settings.app_id

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "MIS_APP_ID": self.app_id,
            # One data directory across restarts: a rebuild must empty it through the changelog.
            "MIS_DATA_DIR": str(self.workdir / "data"),
            "MIS_TICK_INTERVAL_S": "1",
        }

    def start(self) -> None:
        self.starts += 1
        env = {"MIS_DATA_DIR": self.env()["MIS_DATA_DIR"]}
        self.worker = Worker(f"w{self.starts}", self.app_id, self.workdir, env).start()
        self.worker.wait_ready(timeout=240)

    def stop(self) -> None:
        if self.worker is not None:
            # A send is stored as confirmed a little after its delivery; a worker stopped before
            # that repeats it after the restart, which would count as the replay's snapshots.
            if self.worker.proc is not None and self.worker.proc.poll() is None:
                self.worker.wait_confirmed()
            self.worker.stop()
            self.worker = None
        kafka = Kafka(self.settings.kafka_bootstrap)
        wait_for("the worker to leave the group", lambda: not kafka.members(self.app_id), 60)

    def settle(self) -> None:
        """Wait until the group has consumed every CDC event and drained its own topics."""
        kafka = Kafka(self.settings.kafka_bootstrap)
        cdc = topology.cdc_topics(self.settings)
        internal = [f"{self.app_id}-{s}" for s in KEY_SPACES]
        counts = kafka.partitions([*cdc, *internal])
        marks = kafka.watermarks((t, p) for t, n in counts.items() for p in range(n))
        result = follow(
            kafka,
            self.app_id,
            {tp: (low, high) for tp, (low, high) in marks.items() if tp[0] in cdc},
            {tp: low for tp, (low, _) in marks.items() if tp[0] in internal},
            {t for t in internal if not t.endswith("by-booking")},
            Progress("settle", stream=io.StringIO()),
            SETTLE_S,
        )
        assert result.caught_up, f"worker did not catch up: {self.worker and self.worker.tail()}"

    def mis(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "streams.cli", *args],
            cwd=REPO,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def replay(self, *args: str, timeout: float = 900) -> dict[str, str]:
        """Run `mis replay`, start the worker once the offsets are moved, return the summary."""
        assert self.worker is None, "stop the worker first"
        self.runs += 1
        err = self.workdir / f"replay-{self.runs}.err"
        with err.open("w") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "replay", *args],
                cwd=REPO,
                env=self.env(),
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        try:
            wait_for(
                "the replay to move the offsets",
                lambda: proc.poll() is not None or "start the workers" in err.read_text(),
                timeout=300,
                every=0.5,
            )
            assert proc.poll() is None, f"replay exited early: {err.read_text()}"
            self.start()
            out, _ = proc.communicate(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, f"{out}\n{err.read_text()}"
        print(f"\n$ mis replay {' '.join(args)}\n{out}")
        return parse_summary(out)


def parse_summary(out: str) -> dict[str, str]:
    rows = {}
    for line in out.splitlines():
        found = re.match(r"^  (\S.*?)  +(\S.*)$", line)
        if found:
            rows[found[1]] = found[2]
    return rows


def number(text: str) -> int:
    found = re.match(r"[\d,]+", text)
    assert found, text
    return int(found[0].replace(",", ""))


@dataclass
class World:
    """The module's data set: bookings of one farmer over a few vendors and locations."""

    pg: Any
    farmer: UUID = field(default_factory=uuid4)
    vendors: list[UUID] = field(default_factory=lambda: [uuid4() for _ in range(3)])
    locations: list[UUID] = field(default_factory=lambda: [uuid4() for _ in range(4)])
    bookings: list[UUID] = field(default_factory=list)
    certificates: list[UUID] = field(default_factory=list)
    now: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))
    changes: int = 0  # change events written to the CDC topics (tombstones included)

    def add(self, table: str, **values: Any) -> Any:
        self.changes += 1
        return source_db.insert(self.pg, table, **values)

    def update(self, table: str, row_id: Any, **values: Any) -> None:
        self.changes += 1
        source_db.update(self.pg, table, row_id, **values)

    def delete(self, table: str, row_id: Any) -> None:
        self.changes += 2  # the delete and its tombstone
        source_db.delete(self.pg, table, row_id)

    def reading(self, location: UUID, sensor: str, kind: str, value: float, minutes: float) -> int:
        return self.add(
            "sensor_readings",
            location_id=location,
            sensor_id=sensor,
            sensor_type=kind,
            value=value,
            unit="%" if kind == "humidity" else "C",
            reading_time=self.now - timedelta(minutes=minutes),
        )

    def booking(self, i: int, inspection: UUID | None, **extra: Any) -> UUID:
        values = source_db.booking_values(
            farmer_id=self.farmer,
            vendor_id=self.vendors[i % len(self.vendors)],
            location_id=self.locations[i % len(self.locations)],
            crop_type=["tomato", "onion", "mango", "rice"][i % 4],
            quantity_kg=100 + 37 * i,
            ai_inspection_id=inspection,
            grade="AB"[i % 2],
            status=["confirmed", "active", "pending"][i % 3],
            duration_days=30,
            start_date=self.now,
            end_date=self.now + timedelta(days=30),
        )
        values.update(extra)
        booking = self.add("storage_bookings", **values)
        self.bookings.append(booking)
        return booking

    def write(self, bookings: int = 40) -> None:
        today = date.today()
        v0, v1, _ = self.vendors
        self.certificates += [
            self.add(
                "certificates",
                vendor_id=v0,
                type="organic",
                status="valid",
                issuer="Board",
                expiry_date=today + timedelta(days=200),
                score=91,
            ),
            self.add(
                "certificates",
                vendor_id=v0,
                type="haccp",
                status="valid",
                expiry_date=today - timedelta(days=5),
            ),
            self.add("certificates", vendor_id=v1, type="iso22000", status="valid"),
            self.add("certificates", vendor_id=v1, type="gap", status="revoked"),
        ]
        latest: dict[UUID, int] = {}
        for n, location in enumerate(self.locations):
            for sensor, kind, base in (
                ("t-1", "temperature", 4.0),
                ("t-2", "temperature", 5.0),
                ("h-1", "humidity", 85.0),
            ):
                for k in range(6):
                    rid = self.reading(location, sensor, kind, base + n + k / 4, 30 - 5 * k)
                latest[location] = rid
            self.add(
                "pest_detections",
                location_id=location,
                pest_type="moth",
                severity=["low", "medium"][n % 2],
                confidence=0.6,
                detected_at=self.now - timedelta(days=1, hours=n),
            )
            # Outside the 7-day window: the location forgets it, and a replay brings it back
            # only to forget it again.
            self.add(
                "pest_detections",
                location_id=location,
                pest_type="beetle",
                severity="critical",
                confidence=0.9,
                detected_at=self.now - timedelta(days=10),
            )
        inspections = []
        for i in range(bookings):
            inspection = None
            if i % 3 != 2:
                inspection = self.add(
                    "crop_inspections",
                    farmer_id=self.farmer,
                    crop_type="x",
                    status="completed" if i % 3 == 0 else "pending",
                    quality_score=Decimal(f"{70 + i % 30}.25"),
                    freshness="fresh",
                    shelf_life_days=10 + i % 7,
                )
            inspections.append(inspection)
            self.booking(i, inspection)
        # Later changes of every kind.
        self.update("storage_bookings", self.bookings[0], location_id=self.locations[3])
        self.update("storage_bookings", self.bookings[1], status="cancelled")
        self.update("storage_bookings", self.bookings[2], status="completed")
        self.delete("storage_bookings", self.bookings[3])
        self.update(
            "crop_inspections", inspections[4], status="completed", quality_score=Decimal("93.50")
        )
        self.delete("sensor_readings", latest[self.locations[1]])
        self.update("certificates", self.certificates[2], status="revoked")


def capture(pg: Any, mongo_db: Any, farmer: UUID) -> tuple[dict[Any, Any], dict[Any, Any]]:
    cur = pg.execute("SELECT * FROM market_inventory_snapshots WHERE farmer_id = %s", (farmer,))
    names = [d.name for d in cur.description]
    rows = {r[names.index("booking_id")]: dict(zip(names, r, strict=True)) for r in cur}
    docs = {
        d["booking_id"]: d for d in mongo_db["market_listings"].find({"farmer_id": str(farmer)})
    }
    return rows, docs


def assert_same(
    before: dict[Any, Any], after: dict[Any, Any], what: str, ignore: tuple[str, ...] = ()
) -> None:
    """Field by field, so that a failure names the booking and the field."""
    problems = []
    for key in sorted(set(before) | set(after), key=str):
        b, a = before.get(key), after.get(key)
        if b is None or a is None:
            problems.append(f"{what} {key}: {'gone' if a is None else 'new'}")
            continue
        for name in sorted((set(b) | set(a)) - set(ignore)):
            if b.get(name) != a.get(name):
                problems.append(f"{what} {key}.{name}: {b.get(name)!r} -> {a.get(name)!r}")
    assert not problems, "\n".join(problems[:40])


def writes_since(pg: Any, since: datetime, farmer: UUID) -> tuple[int, int]:
    """(rows of this module, rows of anything else) written since ``since``."""
    found = pg.execute(
        "SELECT count(*) FILTER (WHERE farmer_id = %(f)s),"
        " count(*) FILTER (WHERE farmer_id <> %(f)s) FROM market_inventory_snapshots"
        " WHERE updated_at >= %(t)s OR last_synced_at >= %(t)s",
        {"f": farmer, "t": since},
    ).fetchone()
    return int(found[0]), int(found[1])


@pytest.fixture(scope="module")
def pipeline(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    settings = Settings(app_id=f"mis-ops-{uuid.uuid4().hex[:8]}")
    p = Pipeline(settings, tmp_path_factory.mktemp("ops"))
    p.start()
    try:
        yield p
    finally:
        if p.worker is not None:
            p.worker.stop()


@pytest.fixture(scope="module")
def world(pipeline: Pipeline, pg: Any, mongo_db: Any) -> World:
    w = World(pg)
    w.write()
    live = len(w.bookings)
    wait_for(
        "every booking's snapshot in both sinks",
        lambda: (
            len(
                [
                    r
                    for r in capture(pg, mongo_db, w.farmer)[0].values()
                    if r["synced_hash"] == r["content_hash"]
                ]
            )
            == live
        ),
        timeout=SETTLE_S,
        every=1.0,
    )
    pipeline.settle()
    # Drained topics are not yet every change shown: a location's answer can wait in its
    # conflation window (wide while a fresh app id works off the topics' history), so the
    # snapshots are awaited as the source tables make them (streams.ops.verify's SQL).
    scope = Scope(farmers=frozenset({w.farmer}))
    wait_for(
        "every snapshot as the source tables make it",
        lambda: verify(pipeline.settings, now=datetime.now(UTC), scope=scope).clean,
        timeout=SETTLE_S,
        every=2.0,
    )
    return w


def test_replay_is_refused_while_a_worker_runs(pipeline: Pipeline, world: World) -> None:
    kafka = Kafka(pipeline.settings.kafka_bootstrap)
    members = kafka.members(pipeline.app_id)
    assert members
    cdc_before = {
        tp: o for tp, o in kafka.committed(pipeline.app_id).items() if tp[0].startswith("sg.")
    }

    result = pipeline.mis("replay", "--to-earliest", "--no-wait")

    assert result.returncode == 2, result.stdout + result.stderr
    assert "active member" in result.stderr
    assert all(m.member_id in result.stderr for m in members), result.stderr
    assert f"MIS_APP_ID={pipeline.app_id}" in result.stderr
    cdc_after = {
        tp: o for tp, o in kafka.committed(pipeline.app_id).items() if tp[0].startswith("sg.")
    }
    assert cdc_after == cdc_before


@pytest.mark.parametrize("rebuild", [False, True], ids=["on-the-tables", "tables-rebuilt"])
def test_replay_from_earliest_changes_nothing(
    pipeline: Pipeline, world: World, pg: Any, mongo_db: Any, rebuild: bool
) -> None:
    rows, docs = capture(pg, mongo_db, world.farmer)
    assert len(rows) == len(docs) == len(world.bookings)
    pipeline.stop()
    started = datetime.now(UTC)

    summary = pipeline.replay("--to-earliest", *(["--rebuild-tables"] if rebuild else []))

    rows_after, docs_after = capture(pg, mongo_db, world.farmer)
    assert_same(rows, rows_after, "row")
    assert_same(docs, docs_after, "listing")
    mine, others = writes_since(pg, started, world.farmer)
    assert mine == 0
    # Rows of other modules may age past a deadline (a sensor going stale) meanwhile.
    assert number(summary["postgres rows written"]) == others
    assert number(summary["change events"]) >= world.changes
    if rebuild:
        assert number(summary["table keys cleared"]) >= len(world.bookings)
        # Every booking was built again from nothing, and emitted once more: identical.
        assert number(summary["snapshots emitted"]) >= len(world.bookings)
        # ... and the rebuilt subscriptions are live: a new reading reaches its bookings.
        at = world.locations[2]
        world.reading(at, "c-1", "co2", 450.0, 0)
        booking = world.bookings[2 + 4]  # bookings i % 4 == 2 are at locations[2]
        wait_for(
            "the new reading in a rebuilt booking's snapshot",
            lambda: "co2" in capture(pg, mongo_db, world.farmer)[1][str(booking)]["sensors"],
            timeout=120,
        )
        pipeline.settle()


def test_a_rebuild_replaces_what_the_sinks_hold_even_at_a_greater_version(
    pipeline: Pipeline, world: World, pg: Any, mongo_db: Any
) -> None:
    """A row and a listing hand-corrupted at the greatest version the sinks hold (as after a
    builder fix, when the stored snapshot's version is greater than what a booking rebuilt from
    nothing reaches): a rebuild writes the recomputed snapshot over them."""
    rows, docs = capture(pg, mongo_db, world.farmer)
    booking = world.bookings[1]
    top = pg.execute(
        "SELECT greatest((SELECT max(source_version) FROM market_inventory_snapshots),"
        " (SELECT max(source_version) FROM market_listing_sync))"
    ).fetchone()[0]
    pg.execute(
        "UPDATE market_inventory_snapshots SET quantity_kg = quantity_kg + 1, "
        "content_hash = repeat('0', 64), source_version = %s WHERE booking_id = %s",
        (top, booking),
    )
    pg.execute(
        "UPDATE market_listing_sync SET content_hash = repeat('0', 64), source_version = %s "
        "WHERE booking_id = %s",
        (top, booking),
    )
    mongo_db["market_listings"].update_one(
        {"_id": str(snapshot_id(booking))}, {"$inc": {"quantity_kg": 1}}
    )
    pipeline.stop()

    pipeline.replay("--to-earliest", "--rebuild-tables")

    def restored() -> tuple[dict[Any, Any], dict[Any, Any]] | None:
        now_rows, now_docs = capture(pg, mongo_db, world.farmer)
        row, doc = now_rows[booking], now_docs[str(booking)]
        if (
            row["content_hash"] != rows[booking]["content_hash"]
            or row["synced_hash"] != row["content_hash"]
        ):
            return None
        return (now_rows, now_docs) if doc["content_hash"] == row["content_hash"] else None

    now_rows, now_docs = wait_for("the rebuilt snapshot in both sinks", restored, timeout=120)
    assert now_rows[booking]["quantity_kg"] == rows[booking]["quantity_kg"]
    assert now_docs[str(booking)]["quantity_kg"] == docs[str(booking)]["quantity_kg"]
    assert now_rows[booking]["source_version"] >= top
    # The others had nothing to change.
    unchanged = ("updated_at", "source_version", "evaluated_at", "last_synced_at")
    assert_same(
        {k: v for k, v in rows.items() if k != booking},
        {k: v for k, v in now_rows.items() if k != booking},
        "row",
        ignore=unchanged,
    )
    pipeline.settle()


def test_replay_from_a_time_in_mid_stream_converges(
    pipeline: Pipeline, world: World, pg: Any, mongo_db: Any
) -> None:
    before = world.changes
    time.sleep(1.5)
    mid_stream = datetime.now(UTC)
    time.sleep(1.5)
    changes = [
        lambda: world.reading(world.locations[0], "t-1", "temperature", 7.5, 0),
        lambda: world.update("storage_bookings", world.bookings[5], status="active"),
        lambda: world.update("certificates", world.certificates[0], score=77),
        lambda: world.booking(5, None, crop_type="banana"),
    ]
    for change in changes:
        change()
    new = world.bookings[-1]
    wait_for(
        "the booking written after the mid-stream time",
        lambda: str(new) in capture(pg, mongo_db, world.farmer)[1],
        timeout=SETTLE_S,
    )
    pipeline.settle()
    rows, docs = capture(pg, mongo_db, world.farmer)
    pipeline.stop()

    summary = pipeline.replay("--to-datetime", mid_stream.isoformat())

    rows_after, docs_after = capture(pg, mongo_db, world.farmer)
    assert_same(rows, rows_after, "row")
    assert_same(docs, docs_after, "listing")
    replayed = number(summary["change events"])
    assert len(changes) <= replayed < before, "only the changes after the time are replayed"
    # The key spaces hold the replayed changes already (bookings read theirs straight from
    # Debezium's topic, with no re-keyed copy): nothing is answered again, no snapshot emitted.
    assert number(summary["snapshots emitted"]) == 0


def test_republish_restores_an_emptied_mongodb(
    pipeline: Pipeline, world: World, pg: Any, mongo_db: Any
) -> None:
    listings = mongo_db["market_listings"]
    everything = {d["_id"]: d["content_hash"] for d in listings.find()}
    rows, mine = capture(pg, mongo_db, world.farmer)
    assert len(mine) == len(world.bookings)

    listings.delete_many({})  # by hand, as after a lost or replaced MongoDB
    assert listings.count_documents({}) == 0
    result = pipeline.mis("republish")
    assert result.returncode == 0, result.stderr
    print(f"\n$ mis republish\n{result.stdout}")
    # This module's listings come back exactly as the publisher wrote them; every other listing
    # (other modules' data) comes back with its content.
    assert_same(mine, capture(pg, mongo_db, world.farmer)[1], "listing")
    assert {d["_id"]: d["content_hash"] for d in listings.find()} == everything
    assert number(parse_summary(result.stdout)["listings written"]) == len(everything)

    listings.delete_many({})
    result = pipeline.mis("republish", "--from", "topic")
    assert result.returncode == 0, result.stderr
    print(f"\n$ mis republish --from topic\n{result.stdout}")
    # From the topic: the same content; published_at is the time of this publication, and the
    # topic's latest record of a booking may be a later evaluation of the same content.
    assert_same(
        mine,
        capture(pg, mongo_db, world.farmer)[1],
        "listing",
        ignore=("published_at", "evaluated_at", "source_version"),
    )
    assert capture(pg, mongo_db, world.farmer)[0] == rows  # Postgres is not touched

    listings.delete_many({})
    assert pipeline.mis("republish").returncode == 0
    assert_same(mine, capture(pg, mongo_db, world.farmer)[1], "listing")


def _published_tables(pg: Any, publication: str) -> set[str]:
    cur = pg.execute(
        "SELECT tablename FROM pg_publication_tables WHERE pubname = %s", (publication,)
    )
    return {r[0] for r in cur}


def test_backfill_fills_in_rows_written_while_the_connector_did_not_capture_them(
    pipeline: Pipeline, world: World, pg: Any, mongo_db: Any
) -> None:
    publication = CONNECTOR["config"]["publication.name"]
    missed = ("storage_bookings", "certificates")
    vendor, location, farmer = uuid4(), uuid4(), uuid4()
    # A DBA re-creates the publication without two tables: Postgres stops sending their changes
    # to the connector, which goes on streaming the others and notices nothing.
    pg.execute(f"ALTER PUBLICATION {publication} DROP TABLE {', '.join(missed)}")
    try:
        world.add(
            "certificates",
            vendor_id=vendor,
            type="organic",
            status="valid",
            expiry_date=date.today() + timedelta(days=300),
        )
        world.reading(location, "t-1", "temperature", 3.5, 1)
        gap = [
            source_db.insert(
                pg,
                "storage_bookings",
                **source_db.booking_values(
                    farmer_id=farmer,
                    vendor_id=vendor,
                    location_id=location,
                    crop_type="onion",
                    quantity_kg=500 + i,
                    status="confirmed",
                ),
            )
            for i in range(5)
        ]
    finally:
        absent = set(missed) - _published_tables(pg, publication)
        if absent:
            pg.execute(f"ALTER PUBLICATION {publication} ADD TABLE {', '.join(sorted(absent))}")
    # A booking written after the repair is captured: streaming went on past the gap.
    marker = world.booking(7, None)
    wait_for(
        "the booking written after the repair",
        lambda: str(marker) in capture(pg, mongo_db, world.farmer)[1],
        timeout=SETTLE_S,
    )
    assert capture(pg, mongo_db, farmer) == ({}, {})

    result = pipeline.mis("backfill", "storage_bookings", "--where", f"farmer_id = '{farmer}'")
    assert result.returncode == 0, result.stdout + result.stderr
    print(f"\n$ mis backfill storage_bookings --where ...\n{result.stdout}")
    summary = parse_summary(result.stdout)
    assert summary["snapshot"] == "COMPLETED"
    assert summary["public.storage_bookings"] == "5 rows read (SUCCEEDED)"

    def snapshots(check: Any) -> bool:
        rows, docs = capture(pg, mongo_db, farmer)
        return len(docs) == len(gap) and all(
            r["synced_hash"] == r["content_hash"] and check(r, docs[str(r["booking_id"])])
            for r in rows.values()
        )

    wait_for(
        "the snapshots of the bookings the connector missed",
        lambda: snapshots(lambda r, d: r["sensors"] and not r["is_certified"]),
        timeout=SETTLE_S,
    )

    result = pipeline.mis("backfill", "certificates")
    assert result.returncode == 0, result.stdout + result.stderr
    print(f"\n$ mis backfill certificates\n{result.stdout}")
    summary = parse_summary(result.stdout)
    assert summary["snapshot"] == "COMPLETED"
    assert number(summary["public.certificates"]) >= 1 + len(world.certificates)
    wait_for(
        "the certificate the connector missed in those snapshots",
        lambda: snapshots(
            lambda r, d: (
                r["certification_types"] == ["organic"]
                and d["is_certified"]
                and r["status"] == "published"
            )
        ),
        timeout=SETTLE_S,
    )
