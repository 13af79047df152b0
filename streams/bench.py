"""``python -m streams.bench`` (``make bench``): how many source changes per second one worker
sustains, and how long one change takes to reach Postgres and MongoDB. Prints figures; asserts
nothing.

Runs against the local stack with a worker of its own (a fresh consumer group and fresh tables),
so run it on a fresh stack: the worker first reads every change already in the CDC topics.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
from pymongo import MongoClient

from streams import source_db
from streams.config import REPO_ROOT, Settings, get_settings

PUBLISHED = (
    "SELECT count(*) FROM market_inventory_snapshots "
    "WHERE booking_id = ANY(%s) AND status = 'published'"
)
TEMPERATURE_BY_LOCATION = (
    "SELECT location_id, min((sensors->'temperature'->>'value')::float) "
    "FROM market_inventory_snapshots "
    "WHERE booking_id = ANY(%s) AND synced_hash = content_hash GROUP BY location_id"
)
TEMPERATURE = (
    "SELECT (sensors->'temperature'->>'value')::float FROM market_inventory_snapshots "
    "WHERE booking_id = %s"
)
INSERT_READING = (
    "INSERT INTO sensor_readings (location_id, sensor_id, sensor_type, value, unit, reading_time)"
    " VALUES (%s, %s, %s, %s, %s, %s)"
)


class Bench:
    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.settings = settings
        self.pg = psycopg.connect(settings.pg_dsn, autocommit=True)
        client: MongoClient[dict[str, Any]] = MongoClient(settings.mongo_url)
        self.listings = client[settings.mongo_database][settings.mongo_collection]
        env = {
            **os.environ,
            "MIS_APP_ID": f"mis-bench-{uuid.uuid4().hex[:8]}",
            "MIS_DATA_DIR": str(workdir / "data"),
            "MIS_WEB_PORT": str(settings.web_port + 7),
        }
        self.log = workdir / "worker.log"
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "-l", "warn"],
            cwd=REPO_ROOT,
            env=env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def wait(self, what: str, probe: Callable[[], bool], timeout: float) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.worker.poll() is not None:
                raise SystemExit(f"bench: the worker exited ({self.worker.returncode}): {self.log}")
            if probe():
                return time.monotonic() - start
            time.sleep(0.01)
        raise SystemExit(f"bench: timed out after {timeout:.0f}s waiting for {what}")

    def stop(self) -> None:
        self.worker.terminate()
        try:
            self.worker.wait(30)
        except subprocess.TimeoutExpired:
            self.worker.kill()
            self.worker.wait()

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.worker.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def bookings(self, locations: list[UUID], per_location: int) -> dict[UUID, list[UUID]]:
        vendor = uuid4()
        made: dict[UUID, list[UUID]] = {}
        for loc in locations:
            made[loc] = [
                source_db.insert(
                    self.pg,
                    "storage_bookings",
                    **source_db.booking_values(
                        farmer_id=uuid4(),
                        vendor_id=vendor,
                        location_id=loc,
                        crop_type="onion",
                        quantity_kg=100,
                        status="confirmed",
                    ),
                )
                for _ in range(per_location)
            ]
        return made

    def burst(self, locations: list[UUID], every: list[UUID], readings: int) -> None:
        """Throughput: a burst of readings, each changing every booking at its location."""
        now = datetime.now(UTC)
        rows = [
            (
                locations[i % len(locations)],
                f"s-{i % 7}",
                "temperature",
                float(i),
                "C",
                now + timedelta(milliseconds=i),
            )
            for i in range(readings)
        ]
        last = {locations[i % len(locations)]: float(i) for i in range(readings)}
        start = time.monotonic()
        with self.pg.cursor() as cur:
            cur.executemany(INSERT_READING, rows)
        written = time.monotonic() - start

        def current() -> bool:
            got = self.pg.execute(TEMPERATURE_BY_LOCATION, (every,)).fetchall()
            return len(got) == len(locations) and all(last[loc] == v for loc, v in got)

        self.wait("the burst to reach the sinks", current, timeout=900)
        total = time.monotonic() - start
        updates = readings * len(every) / len(locations)
        print(
            f"bench: {readings} readings committed in {written:.2f}s; every snapshot current "
            f"{total:.2f}s after the first commit: {readings / total:.0f} source changes/s, "
            f"{updates / total:.0f} snapshot updates/s"
        )

    def latency(self, location: UUID, booking: UUID, samples: int) -> None:
        """One change at a time, from commit to the Postgres row and the MongoDB document."""
        to_pg, to_mongo = [], []
        for i in range(samples):
            value = 10_000.0 + i
            start = time.monotonic()
            source_db.insert(
                self.pg,
                "sensor_readings",
                location_id=location,
                sensor_id="s-0",
                sensor_type="temperature",
                value=value,
                unit="C",
                reading_time=datetime.now(UTC) + timedelta(hours=1, seconds=i),
            )

            def in_pg(value: float = value) -> bool:
                row = self.pg.execute(TEMPERATURE, (booking,)).fetchone()
                return row is not None and row[0] == value

            def in_mongo(value: float = value) -> bool:
                wanted = {"booking_id": str(booking), "sensors.temperature.value": value}
                return self.listings.find_one(wanted) is not None

            to_pg.append(self.wait("a change in Postgres", in_pg, timeout=60))
            self.wait("a change in MongoDB", in_mongo, timeout=60)
            to_mongo.append(time.monotonic() - start)
            time.sleep(0.2)
        ms = [d * 1000 for d in to_pg]
        p95 = statistics.quantiles(ms, n=20)[18] if len(ms) > 1 else ms[0]
        print(
            f"bench: commit -> Postgres over {samples} single changes: p50 "
            f"{statistics.median(ms):.0f} ms, p95 {p95:.0f} ms, max {max(ms):.0f} ms; "
            f"commit -> MongoDB p50 {statistics.median(to_mongo) * 1000:.0f} ms"
        )


def run(locations: int, per_location: int, readings: int, samples: int) -> None:
    settings = get_settings()
    try:
        psycopg.connect(settings.pg_dsn, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        raise SystemExit(f"bench: Postgres is not reachable ({exc}); run `make stack-up`") from exc
    with tempfile.TemporaryDirectory(prefix="mis-bench-") as tmp:
        bench = Bench(settings, Path(tmp))
        try:
            locs = [uuid4() for _ in range(locations)]
            made = bench.bookings(locs, per_location)
            every = [b for bs in made.values() for b in bs]
            warm = bench.wait(
                "the first snapshots",
                lambda: bench.pg.execute(PUBLISHED, (every,)).fetchone() == (len(every),),
                timeout=300,
            )
            print(
                f"bench: {len(every)} bookings at {locations} locations published {warm:.1f}s "
                "after they were written (worker start-up included)"
            )
            bench.burst(locs, every, readings)
            bench.latency(locs[0], made[locs[0]][0], samples)
            print(f"bench: worker peak RSS {bench.peak_rss_mib():.0f} MiB")
        finally:
            bench.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m streams.bench", description=__doc__)
    p.add_argument("--locations", type=int, default=20)
    p.add_argument("--bookings-per-location", type=int, default=5)
    p.add_argument("--readings", type=int, default=3000)
    p.add_argument("--samples", type=int, default=20)
    a = p.parse_args(argv)
    run(a.locations, a.bookings_per_location, a.readings, a.samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
