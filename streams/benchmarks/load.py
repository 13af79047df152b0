"""``python -m streams.benchmarks.load`` (``make bench-load``): a large load and what it costs.

Prints figures; asserts nothing. On a fresh stack, with one worker of its own (a fresh consumer
group, fresh tables, its own data directory):

1. ``--bookings`` confirmed bookings, ``--per-location`` at each location, over a handful of
   vendors, then ``--readings`` sensor readings at those locations (five temperature sensors
   each, reading times of the last minutes), copied into Postgres in large transactions as fast
   as it takes them;
2. waits (printing progress, up to ``--timeout``) until Debezium has captured every row, every
   booking has its row in ``market_inventory_snapshots``, every row shows the last reading at
   its location, every listing holds its row's content (``market_listing_sync``, and MongoDB's
   count), and the worker's group has consumed the CDC topics to their ends;
3. prints one table: rows written per second, the time until each of those, the peak RSS
   (VmHWM) of the worker, each of its sink processes and each component of the stack, and the
   size of the worker's data directory. At the deadline, or on Ctrl-C or SIGTERM, the table
   shows what was reached and where the pipeline stood.

The last reading of each sensor carries ``FINAL`` and the newest reading time, and every earlier
one a smaller value, so a row showing ``FINAL`` reflects all of its location's readings.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
from prometheus_client.parser import text_string_to_metric_families
from pymongo import MongoClient

from launcher import process
from launcher.stack import Stack
from streams import source_db, topology
from streams.bench import (
    Worker,
    children_of,
    metrics_token,
    peak_rss_mib,
    read_metrics,
    table,
)
from streams.config import REPO_ROOT, Settings, get_settings
from streams.ops.errors import OpsError
from streams.ops.kafka import Kafka
from streams.runtime.memory import allocator_of

SENSORS = 5
VENDORS = 5
FINAL = 99.5
CHUNK = 20_000  # rows per COPY transaction
CDC_TABLES = ("storage_bookings", "sensor_readings")
READING_COLUMNS = ("location_id", "sensor_id", "sensor_type", "value", "unit", "reading_time")


def say(text: str) -> None:
    print(f"bench-load: {text}", flush=True)


def chunks(rows: Iterator[Sequence[Any]], size: int) -> Iterator[list[Sequence[Any]]]:
    batch: list[Sequence[Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def copy_rows(
    pg: psycopg.Connection[Any], table_name: str, columns: Sequence[str], rows: Iterator[Any]
) -> int:
    """COPY ``rows`` into ``table_name``, one transaction per CHUNK; the rows written."""
    written = 0
    sql = f"COPY {table_name} ({', '.join(columns)}) FROM STDIN"
    for batch in chunks(rows, CHUNK):
        with pg.transaction(), pg.cursor() as cur, cur.copy(sql) as copy:
            for row in batch:
                copy.write_row(row)
        written += len(batch)
    return written


def booking_rows(
    tag: str, bookings: int, per_location: int
) -> tuple[list[UUID], list[UUID], list[str], list[tuple[Any, ...]]]:
    """(booking ids, location ids, columns, rows) of the load's bookings."""
    now = datetime.now(UTC)
    vendors = [uuid4() for _ in range(VENDORS)]
    locations = [uuid4() for _ in range(-(-bookings // per_location))]
    ids, rows = [], []
    for n in range(bookings):
        values = {
            "id": uuid4(),
            **source_db.booking_values(
                farmer_id=uuid4(),
                vendor_id=vendors[n % VENDORS],
                location_id=locations[n // per_location],
                crop_type=tag,
                quantity_kg=100,
                status="confirmed",
                duration_days=5,
                start_date=now,
                end_date=now + timedelta(days=5),
            ),
        }
        ids.append(values["id"])
        rows.append(tuple(values.values()))
    return ids, locations, list(values), rows


def reading_rows(locations: list[UUID], readings: int) -> Iterator[tuple[Any, ...]]:
    """Round robin over every sensor of every location, reading times rising towards now; the
    last round (one reading per sensor) carries FINAL."""
    sensors = [(loc, f"s-{k}") for loc in locations for k in range(SENSORS)]
    start = datetime.now(UTC) - timedelta(minutes=10)
    step = timedelta(minutes=10) / max(1, readings)
    last_round = readings - len(sensors)
    for n in range(readings):
        loc, sensor = sensors[n % len(sensors)]
        value = FINAL if n >= last_round else float(n % 40)
        yield (loc, sensor, "temperature", value, "C", start + step * n)


class Peaks(threading.Thread):
    """Samples the peak RSS (VmHWM, MiB) of the worker, its sink processes and the stack's
    components every ``every`` seconds, keeping the greatest seen of each."""

    def __init__(
        self,
        worker: Worker,
        stack: Stack,
        every: float = 1.0,
        gauges: Callable[[], dict[str, float]] | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.worker, self.stack, self.every = worker, stack, every
        #: more figures in MiB (the worker's RocksDB memory), read every tenth sample
        self.gauges = gauges
        self.gauge_peaks: dict[str, float] = {}
        self._samples = 0
        self.peaks: dict[str, float] = {}
        #: the worker's C allocator, read once it runs (a worker may start itself again with
        #: jemalloc first)
        self.allocator: str | None = None
        self.load_min, self.load_max = os.getloadavg()[0], os.getloadavg()[0]
        self.stopping = threading.Event()

    def _keep(self, name: str, mib: float) -> None:
        self.peaks[name] = max(self.peaks.get(name, 0.0), mib)

    def sample(self) -> None:
        self.load_min = min(self.load_min, os.getloadavg()[0])
        self.load_max = max(self.load_max, os.getloadavg()[0])
        if self.worker.alive():
            self._keep("worker", peak_rss_mib(self.worker.pid))
            if self._samples == 10:
                self.allocator = allocator_of(self.worker.pid)
            if self.gauges is not None and self._samples % 10 == 0:
                for name, mib in self.gauges().items():
                    self.gauge_peaks[name] = max(self.gauge_peaks.get(name, 0.0), mib)
            self._samples += 1
            for child in children_of(self.worker.pid):
                try:
                    argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                only = argv.index(b"--only") + 1 if b"--only" in argv else 0
                name = argv[only].decode() if only and only < len(argv) else str(child)
                self._keep(f"worker's sink {name}", peak_rss_mib(child))
        for name, proc in self.stack.running().items():
            if name == "postgres":
                # Each backend is a session of its own (outside the postmaster's process group,
                # which is all `stack down` reports), and its VmHWM counts the shared buffers it
                # touched: the sum overstates the cluster's memory, the postmaster understates it.
                self._keep("postgres (postmaster)", peak_rss_mib(proc.pid))
                backends = sum(peak_rss_mib(c) for c in children_of(proc.pid))
                self._keep("postgres (live backends, sum)", backends)
            else:
                self._keep(name, process.group_memory(proc).peak_bytes / 2**20)

    def run(self) -> None:
        while not self.stopping.wait(self.every):
            self.sample()

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)
        self.sample()


def dir_mib(path: Path) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / f).stat().st_blocks * 512
    return total / 2**20


class Load:
    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.settings = settings
        self.app_id = f"mis-bench-load-{uuid.uuid4().hex[:8]}"
        self.tag = f"load-{self.app_id[-8:]}"
        self.pg = psycopg.connect(settings.pg_dsn, autocommit=True)
        self.kafka = Kafka(settings.kafka_bootstrap)
        mongo: MongoClient[dict[str, Any]] = MongoClient(settings.mongo_url)
        self.mongo = mongo
        self.listings = mongo[settings.mongo_database][settings.mongo_collection]
        # A metrics token of its own: the peaks include the worker's RocksDB memory (/metrics).
        self.token, tokens = metrics_token(settings)
        env = {**os.environ, "MIS_APP_ID": self.app_id, "MIS_API_TOKENS": tokens}
        self.worker = Worker("worker", env, workdir, settings.web_port + 11)
        self.data_dir = Path(self.worker.env["MIS_DATA_DIR"])
        self.topics = [settings.cdc_topic(t) for t in CDC_TABLES]
        self._ends: dict[tuple[str, int], int] = {}
        self.bookings = 0
        self.base = self.cdc_ends()

    def cdc_ends(self) -> dict[tuple[str, int], int]:
        """The CDC topics' end offsets; the last known ones while a topic Debezium has just
        created has no leader yet."""
        try:
            counts = self.kafka.partitions(self.topics)
            tps = [(t, p) for t, n in counts.items() for p in range(n)]
            self._ends = {tp: end for tp, (_, end) in self.kafka.watermarks(tps).items()}
        except OpsError as exc:
            say(f"CDC offsets unavailable for now: {exc}")
        return self._ends

    def rocksdb_mib(self) -> dict[str, float]:
        """The worker's RocksDB memory now (streams.runtime.store), or nothing if it did not
        answer."""
        text = read_metrics(self.worker.port, self.token)
        names = {
            "mis_rocksdb_block_cache_bytes": "worker's RocksDB block cache",
            "mis_rocksdb_memtable_bytes": "worker's RocksDB memtables",
        }
        return {
            names[family.name]: family.samples[0].value / 2**20
            for family in text_string_to_metric_families(text)
            if family.name in names and family.samples
        }

    def captured(self) -> int:
        return sum(end - self.base.get(tp, 0) for tp, end in self.cdc_ends().items())

    def lag(self) -> int:
        """Messages of the CDC topics the worker's group has not committed."""
        committed = {
            **self.kafka.committed(self.app_id),
            **self.kafka.committed(topology.gather_group(self.app_id)),
        }
        return sum(max(0, end - committed.get(tp, 0)) for tp, end in self.cdc_ends().items())

    def in_postgres(self) -> tuple[int, int, int]:
        """(rows, rows showing FINAL, rows whose listing holds the row's content)."""
        row = self.pg.execute(
            "SELECT count(*), count(*) FILTER (WHERE (s.sensors->'temperature'->>'value')::float"
            " = %s), count(*) FILTER (WHERE (s.sensors->'temperature'->>'value')::float = %s"
            " AND l.content_hash = s.content_hash)"
            " FROM market_inventory_snapshots s"
            " LEFT JOIN market_listing_sync l ON l.booking_id = s.booking_id"
            " WHERE s.crop_type = %s",
            (FINAL, FINAL, self.tag),
        ).fetchone()
        assert row is not None
        return row[0], row[1], row[2]

    def close(self) -> None:
        self.worker.stop()
        self.pg.close()
        self.mongo.close()


def until(what: str, probe: Callable[[], bool], deadline: float, report: Callable[[], str]) -> bool:
    last = 0.0
    while time.monotonic() < deadline:
        if probe():
            return True
        if time.monotonic() - last >= 15:
            last = time.monotonic()
            say(f"waiting for {what}: {report()}")
        time.sleep(2)
    say(f"deadline passed waiting for {what}: {report()}")
    return False


def run(args: argparse.Namespace) -> str:
    settings = get_settings()
    outdir = REPO_ROOT / "build" / "bench"
    outdir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    stack = Stack.from_settings(settings)
    with tempfile.TemporaryDirectory(prefix="mis-bench-load-") as tmp:
        load = Load(settings, Path(tmp))
        peaks = Peaks(load.worker, stack, gauges=load.rocksdb_mib)
        try:
            load.worker.start()
            peaks.start()
            ids, locations, columns, rows = booking_rows(load.tag, args.bookings, args.per_location)
            load.bookings = len(ids)
            began = time.monotonic()
            copy_rows(load.pg, "storage_bookings", columns, iter(rows))
            booked = time.monotonic() - began
            say(f"{len(ids):,} bookings at {len(locations):,} locations in {booked:.1f}s")
            copy_rows(
                load.pg, "sensor_readings", READING_COLUMNS, reading_rows(locations, args.readings)
            )
            written = time.monotonic() - began
            read_s = written - booked
            say(f"{args.readings:,} readings in {read_s:.1f}s")
            total = len(ids) + args.readings
            state: dict[str, Any] = {"stopped": None}
            try:
                wait_all(load, peaks, state, began, total, time.monotonic() + args.timeout)
            except (KeyboardInterrupt, SystemExit) as exc:
                # Interrupted (Ctrl-C, SIGTERM, the worker gone): the table still shows how far
                # the pipeline got.
                state["stopped"] = f"{time.monotonic() - began:,.0f} s ({exc or 'interrupted'})"
            peaks.stop()
            data = dir_mib(load.data_dir)
            # the worker's memory reports, when it ran with PYTHONTRACEMALLOC set
            report = load.data_dir / "memory.txt"
            if report.exists():
                (outdir / f"load-{stamp}-memory.txt").write_bytes(report.read_bytes())
        finally:
            peaks.stopping.set()
            load.close()
            if load.worker.log.exists():
                (outdir / f"load-{stamp}-worker.log").write_bytes(load.worker.log.read_bytes())

    def took(name: str) -> str:
        if name in state:
            return f"{state[name]:,.0f} s"
        return f"not reached: stopped after {state['stopped'] or f'{args.timeout:.0f} s'}"

    figures = [
        ["bookings written", f"{len(ids) / booked:,.0f} rows/s ({booked:.1f} s)"],
        ["readings written", f"{args.readings / read_s:,.0f} rows/s ({read_s:.1f} s)"],
        ["all captured (Debezium's topics)", took("captured")],
        ["a row for every booking in Postgres", took("rows")],
        ["every row current (its location's last reading)", took("postgres")],
        ["every listing current in MongoDB", took("mongodb")],
        ["worker's CDC lag zero", took("lag")],
        ["where it stood at the end", state.get("progress", "-")],
        *([f"peak RSS: {k}", f"{v:,.0f} MiB"] for k, v in sorted(peaks.peaks.items())),
        *([f"peak: {k}", f"{v:,.0f} MiB"] for k, v in sorted(peaks.gauge_peaks.items())),
        ["worker's data directory (RocksDB)", f"{data:,.0f} MiB"],
        ["worker's C allocator", peaks.allocator or "-"],
    ]
    load_avg = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    text = "\n".join(
        [
            f"bench-load {stamp}: {len(ids):,} bookings ({args.per_location}/location, "
            f"{len(locations):,} locations, {VENDORS} vendors), {args.readings:,} readings "
            f"({SENSORS} sensors/location), {os.cpu_count()} cores; load average (1 min) "
            f"{peaks.load_min:.1f}-{peaks.load_max:.1f} during the run, {load_avg} (1/5/15 min) "
            "at the end; times from the first row written",
            table(["measured", "figure"], figures),
        ]
    )
    (outdir / f"load-{stamp}.txt").write_text(text + "\n")
    return text + f"\n\n(also in {outdir / f'load-{stamp}.txt'})"


def wait_all(
    load: Load, peaks: Peaks, state: dict[str, Any], began: float, total: int, deadline: float
) -> None:
    """Wait for each stage in turn, recording in ``state`` when each was first reached."""
    bookings = load.bookings

    def progress() -> str:
        pg_rows, final, synced = load.in_postgres()
        state["progress"] = (
            f"captured {load.captured():,}/{total:,}, rows {pg_rows:,}, current {final:,},"
            f" listings current {synced:,}/{bookings:,}, CDC lag {load.lag():,}"
        )
        return f"{state['progress']}, worker {peaks.peaks.get('worker', 0):.0f} MiB peak"

    def mark(name: str, probe: Callable[[], bool]) -> Callable[[], bool]:
        def check() -> bool:
            if load.worker.proc is not None and load.worker.proc.poll() is not None:
                raise SystemExit(f"the worker exited: {load.worker.log}")
            done = probe()
            if done and name not in state:
                state[name] = time.monotonic() - began
            return done

        return check

    stages: list[tuple[str, str, Callable[[], bool]]] = [
        ("captured", "the capture", lambda: load.captured() >= total),
        ("rows", "a row for every booking", lambda: load.in_postgres()[0] == bookings),
        ("postgres", "every snapshot in Postgres", lambda: load.in_postgres()[1] == bookings),
        (
            "mongodb",
            "every listing in MongoDB",
            lambda: (
                load.in_postgres()[2] == bookings
                and load.listings.estimated_document_count() >= bookings
            ),
        ),
        ("lag", "the CDC lag to reach zero", lambda: load.lag() == 0),
    ]
    for name, what, probe in stages:
        if not until(what, mark(name, probe), deadline, progress):
            return
    progress()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.benchmarks.load", description=__doc__)
    parser.add_argument("--bookings", type=int, default=100_000)
    parser.add_argument("--per-location", type=int, default=15)
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait, in all")
    # SIGTERM (make's trap, a kill) unwinds like Ctrl-C, so the worker is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print("\n" + run(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
