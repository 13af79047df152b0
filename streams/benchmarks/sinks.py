"""``python -m streams.benchmarks.sinks`` (``make bench-sinks``): the sinks on their own.

Prints figures; asserts nothing. Against the local stack (run it on a fresh one):

1. drain: a backlog of snapshot messages produced straight onto a fresh app's snapshot topic
   (BOOKINGS bookings x VERSIONS versions each, and as many distinct bookings), then the sinks
   started in this process: the time until Postgres and MongoDB hold every booking's last
   version, for each sink, and until the listing-change outbox is empty again. The Postgres
   sink writes the history and the outbox as in a worker; ``--without-changes`` leaves the
   outbox out, ``--flip-status`` makes every version written a change event;
2. freshness with MongoDB stopped: a worker running, bookings updated at RATE changes/s; the
   delay from the source commit to the snapshot row, measured with Postgres's own clock
   (``storage_bookings.updated_at`` set by the writer, ``market_inventory_snapshots.updated_at``
   set by the sink), with MongoDB running and then stopped.
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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
from confluent_kafka import Consumer, Producer, TopicPartition
from pymongo import MongoClient

from launcher.stack import Stack
from schemas.snapshot import snapshot_id
from streams import topology
from streams.admin import ensure_sink_table, ensure_topics
from streams.benchmarks.bookings import insert_bookings
from streams.changes import changes_topic
from streams.config import REPO_ROOT, Settings, get_settings
from streams.samples import booking, booking_record
from streams.sinks.follower import SinkThreads, sink_factories, sink_threads


def _wait(what: str, probe: Callable[[], bool], timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if probe():
            return time.monotonic() - start
        time.sleep(0.05)
    raise SystemExit(f"bench-sinks: timed out after {timeout:.0f}s waiting for {what}")


@dataclass(frozen=True)
class Drained:
    postgres_s: float
    mongodb_s: float
    #: until the listing-change outbox was empty again (None without it)
    outbox_s: float | None
    history: int
    events: int


def drain(
    settings: Settings, bookings: int, versions: int, *, changes: bool = True, flips: bool = False
) -> Drained:
    """Seconds until Postgres and MongoDB hold the last of ``bookings`` x ``versions``, and what
    was written besides. Without ``changes`` the Postgres sink writes no listing changes (it
    still writes the history); with ``flips`` consecutive versions alternate between a confirmed
    and a cancelled booking, so that every version written is a ``status_changed`` event."""
    app_id = f"mis-bench-sinks-{uuid.uuid4().hex[:8]}"
    app = settings.model_copy(update={"app_id": app_id})
    ensure_topics(app)
    now = datetime.now(UTC).replace(microsecond=0)
    rows = [booking(uuid4(), "bench", 1) for _ in range(bookings)]
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 20})
    for v in range(1, versions + 1):
        for b in rows:
            status = "cancelled" if flips and (versions - v) % 2 else "confirmed"
            record = booking_record(
                b.model_copy(update={"quantity_kg": v, "status": status}), v, now
            )
            producer.produce(
                topology.snapshot_topic(app_id),
                key=str(b.id).encode(),
                value=record.model_dump_json(),
            )
        producer.poll(0)
    producer.flush(60)
    ids = [b.id for b in rows]
    pg = psycopg.connect(settings.pg_dsn, autocommit=True)
    mongo: MongoClient[dict[str, Any]] = MongoClient(settings.mongo_url)
    listings = mongo[settings.mongo_database][settings.mongo_collection]
    probe_ids = [str(snapshot_id(b)) for b in ids[:: max(1, bookings // 20)]] + [
        str(snapshot_id(ids[-1]))
    ]
    threads = sink_threads(app) if changes else SinkThreads(app, sink_factories(app))
    began = time.monotonic()
    threads.start()
    timings: dict[str, float] = {}
    try:

        def pg_done() -> bool:
            row = pg.execute(
                "SELECT count(*) FROM market_inventory_snapshots "
                "WHERE booking_id = ANY(%s) AND quantity_kg = %s",
                (ids, versions),
            ).fetchone()
            return row is not None and row[0] == bookings

        def mongo_done() -> bool:
            synced = pg.execute(
                "SELECT count(*) FROM market_listing_sync "
                "WHERE booking_id = ANY(%s) AND source_version = %s",
                (ids, f"{versions:032x}"),
            ).fetchone()
            if synced is None or synced[0] != bookings:
                return False
            return all(
                (doc := listings.find_one({"_id": i})) is not None
                and doc["quantity_kg"] == versions
                for i in probe_ids
            )

        def outbox_done() -> bool:
            left = pg.execute(
                "SELECT EXISTS (SELECT 1 FROM market_listing_change_outbox WHERE topic = %s)",
                (changes_topic(app_id),),
            ).fetchone()
            return left is not None and not left[0]

        wanted = 3 if changes else 2
        while len(timings) < wanted and time.monotonic() - began < 600:
            if "postgres" not in timings and pg_done():
                timings["postgres"] = time.monotonic() - began
            if "postgres" in timings and "outbox" not in timings and changes and outbox_done():
                timings["outbox"] = time.monotonic() - began
            if "mongodb" not in timings and mongo_done():
                timings["mongodb"] = time.monotonic() - began
            time.sleep(0.1)
        if len(timings) < wanted:
            raise SystemExit("bench-sinks: the backlog did not drain within 600 s")
        counted = pg.execute(
            "SELECT count(*) FROM market_inventory_snapshot_history WHERE booking_id = ANY(%s)",
            (ids,),
        ).fetchone()
        history = counted[0] if counted is not None else 0
        events = _messages(settings, changes_topic(app_id))
    finally:
        threads.stop()
        pg.execute(
            "DELETE FROM market_inventory_snapshot_history WHERE booking_id = ANY(%s)", (ids,)
        )
        pg.execute(
            "DELETE FROM market_listing_change_outbox WHERE topic = %s", (changes_topic(app_id),)
        )
        pg.execute("DELETE FROM market_listing_sync WHERE booking_id = ANY(%s)", (ids,))
        pg.execute("DELETE FROM market_inventory_snapshots WHERE booking_id = ANY(%s)", (ids,))
        for bid in ids:
            listings.delete_one({"_id": str(snapshot_id(bid))})
        pg.close()
        mongo.close()
    return Drained(timings["postgres"], timings["mongodb"], timings.get("outbox"), history, events)


def _messages(settings: Settings, topic: str) -> int:
    """How many messages ``topic`` holds (its partitions' high watermarks)."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "bench"})
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in partitions
        )
    finally:
        consumer.close()


class Freshness:
    """A worker of its own, and bookings updated at a steady rate."""

    def __init__(self, settings: Settings, workdir: Path, bookings: int) -> None:
        self.settings = settings
        self.pg = psycopg.connect(settings.pg_dsn, autocommit=True)
        env = {
            **os.environ,
            "MIS_APP_ID": f"mis-bench-sinks-{uuid.uuid4().hex[:8]}",
            "MIS_DATA_DIR": str(workdir / "data"),
            "MIS_WEB_PORT": str(settings.web_port + 9),
        }
        self.log = workdir / "worker.log"
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "-l", "warn"],
            cwd=REPO_ROOT,
            env=env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        self.bookings = insert_bookings(self.pg, "bench", (uuid4() for _ in range(bookings)))
        _wait("the first snapshots", self._all_at(1), 180)

    def _all_at(self, quantity: int) -> Callable[[], bool]:
        def probe() -> bool:
            if self.worker.poll() is not None:
                raise SystemExit(f"bench-sinks: the worker exited: {self.log}")
            row = self.pg.execute(
                "SELECT count(*) FROM market_inventory_snapshots "
                "WHERE booking_id = ANY(%s) AND quantity_kg = %s",
                (self.bookings, quantity),
            ).fetchone()
            return row is not None and row[0] == len(self.bookings)

        return probe

    def run(self, rate: float, seconds: float, first_quantity: int) -> list[float]:
        """Update one booking at a time at ``rate``/s; the commit -> row delays, in seconds."""
        changes: list[tuple[UUID, int]] = []
        began = time.monotonic()
        n = 0
        while time.monotonic() - began < seconds:
            b = self.bookings[n % len(self.bookings)]
            q = first_quantity + n
            self.pg.execute(
                "UPDATE storage_bookings SET quantity_kg = %s, updated_at = now() WHERE id = %s",
                (q, b),
            )
            changes.append((b, q))
            n += 1
            pause = began + n / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        last = {b: q for b, q in changes}
        _wait("the last changes", lambda: all(self._at(b, q) for b, q in last.items()), 120)
        # Each booking's row shows its last change; its delay is that change's.
        delays = self.pg.execute(
            "SELECT extract(epoch FROM s.updated_at - b.updated_at) "
            "FROM market_inventory_snapshots s JOIN storage_bookings b ON b.id = s.booking_id "
            "WHERE s.booking_id = ANY(%s)",
            (list(last),),
        ).fetchall()
        return [float(d[0]) for d in delays]

    def _at(self, booking_id: UUID, quantity: int) -> bool:
        row = self.pg.execute(
            "SELECT quantity_kg FROM market_inventory_snapshots WHERE booking_id = %s",
            (booking_id,),
        ).fetchone()
        return row is not None and row[0] == quantity

    def close(self) -> None:
        self.worker.terminate()
        try:
            self.worker.wait(30)
        except subprocess.TimeoutExpired:
            self.worker.kill()
        self.pg.close()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.benchmarks.sinks")
    parser.add_argument("--bookings", type=int, default=2000)
    parser.add_argument("--versions", type=int, default=10)
    parser.add_argument("--rate", type=float, default=20.0, help="booking changes per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--skip", action="append", default=[], choices=("drain", "freshness"))
    parser.add_argument(
        "--without-changes",
        action="store_true",
        help="drain without the listing-change outbox (the history is written either way)",
    )
    parser.add_argument(
        "--flip-status",
        action="store_true",
        help="versions alternate confirmed/cancelled: each version written is a change event",
    )
    args = parser.parse_args(argv)
    settings = get_settings()
    ensure_sink_table(settings)
    lines: list[str] = []
    if "drain" not in args.skip:
        for bookings, versions in ((args.bookings, args.versions), (args.bookings * 10, 1)):
            total = bookings * versions
            d = drain(
                settings,
                bookings,
                versions,
                changes=not args.without_changes,
                flips=args.flip_status,
            )
            outbox = (
                "no outbox"
                if d.outbox_s is None
                else f"{d.events:,} events, outbox empty at {d.outbox_s:.1f} s"
            )
            lines.append(
                f"drain {total:,} messages ({bookings:,} bookings x {versions}"
                f"{', status flipping' if args.flip_status else ''}): "
                f"postgres {d.postgres_s:.1f} s ({d.history:,} history rows, {outbox}), "
                f"mongodb {d.mongodb_s:.1f} s ({bookings / d.mongodb_s:,.0f} bookings' listings/s)"
            )
            print(lines[-1], flush=True)
    if "freshness" not in args.skip:
        stack = Stack.from_settings(settings)
        with tempfile.TemporaryDirectory(prefix="mis-bench-sinks-") as tmp:
            # One change per booking: every change's delay is read off its row.
            fresh = Freshness(settings, Path(tmp), bookings=int(args.rate * args.seconds) + 1)
            try:
                for label, stop in (("mongodb running", False), ("mongodb stopped", True)):
                    if stop:
                        stack.stop_component("mongo")
                    try:
                        delays = fresh.run(args.rate, args.seconds, 1000 * (2 if stop else 1))
                    finally:
                        if stop:
                            stack.start_component("mongo")
                    lines.append(
                        f"commit -> postgres row, {label}, {args.rate:.0f} changes/s: "
                        f"p50 {statistics.median(delays) * 1000:.0f} ms, "
                        f"p99 {_pct(delays, 0.99) * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms "
                        f"({len(delays)} bookings)"
                    )
                    print(lines[-1], flush=True)
            finally:
                fresh.close()
    print("\nbench-sinks summary")
    for line in lines:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
