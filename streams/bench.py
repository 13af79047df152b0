"""``mis bench``: how many source changes per second one worker sustains, and how long a change
takes to reach Postgres and MongoDB. Prints figures; asserts nothing.

Runs against the local stack with a worker of its own (fresh consumer group and tables).
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import psycopg
from pymongo import MongoClient

from streams import source_db
from streams.config import REPO_ROOT, Settings, get_settings


_worker: subprocess.Popen[bytes] | None = None


def _wait(what: str, probe, timeout: float) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if _worker is not None and _worker.poll() is not None:
            raise SystemExit(f"bench: the worker exited with {_worker.returncode}; see its log")
        if probe():
            return time.monotonic() - start
        time.sleep(0.02)
    raise SystemExit(f"bench: timed out after {timeout:.0f}s waiting for {what}")


def _start_worker(settings: Settings, workdir: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "MIS_APP_ID": f"mis-bench-{uuid.uuid4().hex[:8]}",
        "MIS_DATA_DIR": str(workdir / "data"),
        "MIS_WEB_PORT": str(settings.web_port + 7),
    }
    log = (workdir / "worker.log").open("wb")  # kept only for the run; see --keep-log
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "worker", "-l", "warn"],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return proc


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def run(locations: int, bookings_per_location: int, readings: int, samples: int) -> None:
    settings = get_settings()
    pg = psycopg.connect(settings.pg_dsn, autocommit=True)
    mongo = MongoClient(settings.mongo_url)[settings.mongo_database][settings.mongo_collection]
    with tempfile.TemporaryDirectory(prefix="mis-bench-") as tmp:
        print(f"bench: worker log in {tmp}/worker.log")
        global _worker
        worker = _worker = _start_worker(settings, Path(tmp))
        try:
            vendor, now = uuid4(), datetime.now(UTC)
            locs = [uuid4() for _ in range(locations)]
            booking_ids: dict[UUID, list[UUID]] = {loc: [] for loc in locs}
            for loc in locs:
                for _ in range(bookings_per_location):
                    booking_ids[loc].append(
                        source_db.insert(
                            pg,
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
                    )
            every = [b for bs in booking_ids.values() for b in bs]
            warm = _wait(
                "the first snapshots",
                lambda: (
                    pg.execute(
                        "SELECT count(*) FROM market_inventory_snapshots WHERE booking_id = ANY(%s) AND status='published'",
                        (every,),
                    ).fetchone()[0]
                    == len(every)
                ),
                timeout=180,
            )
            print(
                f"bench: {len(every)} bookings at {locations} locations published {warm:.1f}s after the worker started"
            )

            # Throughput: a burst of sensor readings; each one changes every booking at its location.
            start = time.monotonic()
            with pg.cursor() as cur:
                rows = [
                    (
                        locs[i % locations],
                        f"s-{i % 7}",
                        "temperature",
                        float(i),
                        "C",
                        now + timedelta(milliseconds=i),
                    )
                    for i in range(readings)
                ]
                cur.executemany(
                    "INSERT INTO sensor_readings (location_id, sensor_id, sensor_type, value, unit,"
                    " reading_time) VALUES (%s, %s, %s, %s, %s, %s)",
                    rows,
                )
            written = time.monotonic() - start
            last_value = {locs[i % locations]: float(i) for i in range(readings)}

            def caught_up() -> bool:
                got = pg.execute(
                    "SELECT location_id, min((sensors->'temperature'->>'value')::float) FROM market_inventory_snapshots"
                    " WHERE booking_id = ANY(%s) AND synced_hash = content_hash GROUP BY location_id",
                    (every,),
                ).fetchall()
                return len(got) == locations and all(last_value[loc] == v for loc, v in got)

            _wait("the burst to reach the sinks", caught_up, timeout=600)
            total = time.monotonic() - start
            print(
                f"bench: {readings} readings written in {written:.2f}s; all {len(every)} snapshots current "
                f"{total:.2f}s after the first write -> {readings / total:.0f} source changes/s "
                f"({readings * bookings_per_location / total:.0f} snapshot updates/s)"
            )

            # Latency: one change at a time, from commit to Postgres row and MongoDB document.
            loc, booking = locs[0], booking_ids[locs[0]][0]
            pg_delays, mongo_delays = [], []
            for i in range(samples):
                value = 10_000.0 + i
                t0 = time.monotonic()
                source_db.insert(
                    pg,
                    "sensor_readings",
                    location_id=loc,
                    sensor_id="s-0",
                    sensor_type="temperature",
                    value=value,
                    unit="C",
                    reading_time=datetime.now(UTC) + timedelta(hours=1, seconds=i),
                )
                pg_delays.append(
                    _wait(
                        "a change in Postgres",
                        lambda: (
                            pg.execute(
                                "SELECT (sensors->'temperature'->>'value')::float FROM market_inventory_snapshots WHERE booking_id=%s",
                                (booking,),
                            ).fetchone()[0]
                            == value
                        ),
                        timeout=60,
                    )
                )
                _wait(
                    "a change in MongoDB",
                    lambda: (
                        mongo.find_one(
                            {"booking_id": str(booking), "sensors.temperature.value": value}
                        )
                        is not None
                    ),
                    timeout=60,
                )
                mongo_delays.append(time.monotonic() - t0)
            q = statistics.quantiles(pg_delays, n=20)
            print(
                f"bench: end-to-end delay to Postgres over {samples} changes: p50 {statistics.median(pg_delays) * 1000:.0f} ms,"
                f" p95 {q[18] * 1000:.0f} ms, max {max(pg_delays) * 1000:.0f} ms;"
                f" to MongoDB p50 {statistics.median(mongo_delays) * 1000:.0f} ms"
            )
            print(f"bench: worker peak RSS {_rss_kb(worker.pid) / 1024:.0f} MiB")
        finally:
            worker.terminate()
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mis bench", description=__doc__)
    p.add_argument("--locations", type=int, default=20)
    p.add_argument("--bookings-per-location", type=int, default=5)
    p.add_argument("--readings", type=int, default=5000)
    p.add_argument("--samples", type=int, default=20)
    a = p.parse_args(argv)
    run(a.locations, a.bookings_per_location, a.readings, a.samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
