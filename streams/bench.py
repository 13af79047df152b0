"""``python -m streams.bench`` (``make bench``): the join under a sensor storm. Prints figures,
asserts nothing.

On a fresh stack, with workers of its own (a fresh consumer group and fresh tables), it measures:

* per cell (offered readings/s x bookings per location): the capture alone (commit -> Debezium's
  topic: rate and p99) beside the end-to-end delay (commit -> Postgres row, commit -> MongoDB
  listing: p50/p95/p99), readings spread over 20 locations, each cell ``--seconds`` long;
* the highest sustained rate: a burst of readings, time until captured and until every probed
  snapshot is current, with one worker and then with two (the ratio);
* the replay rate (``mis replay --to-earliest``), without and with a table rebuild;
* the old design's per-booking polling recompute of the same data, as the baseline;
* with ``--profile``, where one worker's time goes during the burst (py-spy, if installed).

The end-to-end delay of a reading is measured on probe bookings (one per location): the first
time their row (or listing) shows a value at least as new as the reading's. Snapshots are
conflated, so a reading that is overtaken within the window is counted as arriving with the
newer one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
from confluent_kafka import Consumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from pymongo import MongoClient

from schemas.entities import Booking, Certificate, PestDetection, SensorReading
from schemas.snapshot import snapshot_id
from streams import builder, source_db, topology
from streams.api.auth import entry, new_token
from streams.config import REPO_ROOT, Settings, get_settings
from streams.ops.kafka import Kafka

LOCATIONS = 20
RATES = (100, 300, 1000)
FANOUTS = (1, 15, 100)
INSERT_READING = (
    "INSERT INTO sensor_readings (location_id, sensor_id, sensor_type, value, unit, reading_time)"
    " VALUES (%s, %s, 'temperature', %s, 'C', %s)"
)
PROBE_PG = (
    "SELECT booking_id, (sensors->'temperature'->>'value')::float FROM market_inventory_snapshots"
    " WHERE booking_id = ANY(%s)"
)


# What each process of the machine is, by its command line (streams.bench.cpu_by_role).
ROLES = (
    ("streams.cli worker", "worker"),
    ("streams.cli sink", "sinks"),
    ("kafka.Kafka", "kafka"),
    ("ConnectDistributed", "connect"),
    ("ferretdb", "mongo"),
    ("postgres", "postgres"),
    ("streams.bench", "bench"),
)


def cpu_by_role() -> dict[str, float]:
    """CPU seconds (user + system) each role's processes have used so far."""
    used: dict[str, float] = defaultdict(float)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        role = next((r for needle, r in ROLES if needle in cmdline), None)
        if role is not None:
            used[role] += cpu_seconds(int(proc.name))
    return used


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of the process (its threads included), 0 if unknown."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cores_used(before: dict[str, float], after: dict[str, float], seconds: float) -> str:
    """The cores each role used between two cpu_by_role() readings, busiest first.
    (A process that exited meanwhile is not counted; one started meanwhile counts whole.)"""
    busy = {r: (after[r] - before.get(r, 0.0)) / seconds for r in after}
    total = sum(busy.values())
    parts = [f"{r} {c:.2f}" for r, c in sorted(busy.items(), key=lambda rc: -rc[1]) if c >= 0.01]
    return f"{total:.2f} cores: " + ", ".join(parts)


def input_delay_summary(
    before: dict[str, dict[float, float]], after: dict[str, dict[float, float]]
) -> str:
    """p50 and p99 (bucket upper bounds) of the input delays observed between two readings."""
    parts = []
    for topic, buckets in sorted(after.items()):
        counts = {le: n - before.get(topic, {}).get(le, 0.0) for le, n in buckets.items()}
        total = counts.get(float("inf"), 0.0)
        if total <= 0:
            continue

        def bound(q: float, counts: dict[float, float] = counts, total: float = total) -> str:
            le = min(le for le, n in counts.items() if n >= q * total)
            return "inf" if le == float("inf") else f"<={ms(le)}"

        short = topic.rsplit(".", 1)[-1].rsplit("-by-", 1)[-1]
        parts.append(f"{short} p50 {bound(0.5)} p99 {bound(0.99)} ({total:,.0f})")
    return ", ".join(parts) or "-"


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:,.0f}" if value < 10 else f"{value:,.1f}s"


def children_of(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def peak_rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Worker:
    def __init__(self, name: str, env: dict[str, str], workdir: Path, port: int) -> None:
        self.name, self.port = name, port
        self.log = workdir / f"{name}.log"
        self.env = {
            **env,
            "MIS_DATA_DIR": str(workdir / f"{name}-data"),
            "MIS_WEB_PORT": str(port),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.peak = 0.0
        self.child_peaks: dict[int, float] = {}  # the worker's sink processes, by pid

    def start(self) -> Worker:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "-l", "warn"],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sample(self) -> None:
        if self.alive():
            self.peak = max(self.peak, peak_rss_mib(self.pid))
            for child in children_of(self.pid):
                self.child_peaks[child] = max(self.child_peaks.get(child, 0.0), peak_rss_mib(child))

    def rss(self) -> str:
        sinks = ", ".join(f"{v:.0f}" for v in self.child_peaks.values())
        return f"{self.name} {self.peak:.0f} MiB" + (f" (its sinks {sinks} MiB)" if sinks else "")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.sample()
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class TopicTail(threading.Thread):
    """A topic from its current end, every message handed to ``on_message``."""

    def __init__(self, settings: Settings, topic: str) -> None:
        super().__init__(daemon=True)
        self.topic = topic
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "group.id": f"bench-{uuid4()}",
                "enable.auto.commit": False,
            }
        )
        parts = self.consumer.list_topics(self.topic, timeout=10).topics[self.topic].partitions
        tps = []
        for p in parts:
            _, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)
            tps.append(TopicPartition(self.topic, p, high))
        self.consumer.assign(tps)
        self.stopping = threading.Event()

    def on_message(self, key: bytes | None, value: bytes, at: float) -> None:
        raise NotImplementedError

    def run(self) -> None:
        while not self.stopping.is_set():
            msg = self.consumer.poll(0.1)
            raw = None if msg is None or msg.error() else msg.value()
            if msg is not None and raw is not None:
                self.on_message(msg.key(), raw, msg.timestamp()[1] / 1000)
        self.consumer.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


class CdcWatch(TopicTail):
    """Debezium's topic of readings from its current end: when each (location, value) arrived
    (the record's timestamp, set by Kafka Connect's producer)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.cdc_topic("sensor_readings"))
        self.arrived: dict[tuple[str, float], float] = {}

    def on_message(self, key: bytes | None, value: bytes, at: float) -> None:
        after = json.loads(value).get("after") or {}
        if "value" in after:
            self.arrived[(after["location_id"], float(after["value"]))] = at


class SnapWatch(TopicTail):
    """The snapshot topic from its current end: when each probe booking's snapshot first showed
    a value >= v (the record's timestamp, set by the worker's producer): the join's own output."""

    def __init__(self, settings: Settings, app_id: str, probes: dict[UUID, UUID]) -> None:
        super().__init__(settings, topology.snapshot_topic(app_id))
        self.by_key = {str(b).encode(): loc for loc, b in probes.items()}
        self.seen: dict[UUID, list[tuple[float, float]]] = defaultdict(list)
        self.stamps: list[float] = []  # of every snapshot on the topic, probe or not

    def rate(self, since: float) -> float:
        """Snapshots per second on the topic from ``since`` (epoch seconds) to the last."""
        after = [t for t in self.stamps if t >= since]
        return len(after) / (max(after) - since) if len(after) > 1 else 0.0

    def on_message(self, key: bytes | None, value: bytes, at: float) -> None:
        self.stamps.append(at)
        loc = self.by_key.get(key or b"")
        if loc is None:
            return
        sensors = json.loads(value).get("snapshot", {}).get("sensors") or {}
        reading = (sensors.get("temperature") or {}).get("value")
        seen = self.seen[loc]
        if reading is not None and (not seen or seen[-1][1] < reading):
            seen.append((at, float(reading)))


class Probe(threading.Thread):
    """Polls the probe bookings' rows (and listings): when each first showed a value >= v."""

    def __init__(self, settings: Settings, probes: dict[UUID, UUID], mongo_probes: int) -> None:
        super().__init__(daemon=True)
        self.pg = psycopg.connect(settings.pg_dsn, autocommit=True)
        client: MongoClient[dict[str, Any]] = MongoClient(settings.mongo_url)
        self.listings = client[settings.mongo_database][settings.mongo_collection]
        self.by_booking = {b: loc for loc, b in probes.items()}
        self.mongo = list(probes.items())[:mongo_probes]
        # location -> [(time, value)] in the order seen
        self.pg_seen: dict[UUID, list[tuple[float, float]]] = defaultdict(list)
        self.mongo_seen: dict[UUID, list[tuple[float, float]]] = defaultdict(list)
        self.stopping = threading.Event()
        self._last_mongo = 0.0

    def run(self) -> None:
        ids = list(self.by_booking)
        while not self.stopping.is_set():
            now = time.time()
            for booking_id, value in self.pg.execute(PROBE_PG, (ids,)).fetchall():
                if value is None:
                    continue
                seen = self.pg_seen[self.by_booking[booking_id]]
                if not seen or seen[-1][1] < value:
                    seen.append((now, value))
            if now - self._last_mongo >= 0.1:
                self._last_mongo = now
                for loc, booking_id in self.mongo:
                    doc = self.listings.find_one({"_id": str(snapshot_id(booking_id))})
                    value = (((doc or {}).get("sensors") or {}).get("temperature") or {}).get(
                        "value"
                    )
                    seen = self.mongo_seen[loc]
                    if value is not None and (not seen or seen[-1][1] < value):
                        seen.append((time.time(), float(value)))
            time.sleep(0.02)

    def latest(self, loc: UUID, mongo: bool = False) -> float:
        seen = (self.mongo_seen if mongo else self.pg_seen).get(loc)
        return seen[-1][1] if seen else float("-inf")

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)
        self.pg.close()


def delays(
    committed: list[tuple[float, UUID, float]], seen: dict[UUID, list[tuple[float, float]]]
) -> tuple[list[float], int]:
    """Commit -> first time a value >= the reading's was seen, for readings at probed locations."""
    out, missing = [], 0
    for commit, loc, value in committed:
        when = next((t for t, v in seen.get(loc, []) if v >= value), None)
        if when is None:
            missing += 1
        else:
            out.append(max(0.0, when - commit))
    return out, missing


@dataclass
class Cell:
    rate: int
    fanout: int
    offered: int = 0
    seconds: float = 0.0
    captured: int = 0
    capture: list[float] = field(default_factory=list)
    topic: list[float] = field(default_factory=list)
    pg: list[float] = field(default_factory=list)
    pg_missing: int = 0
    mongo: list[float] = field(default_factory=list)
    mongo_missing: int = 0
    drained: bool = True
    #: the cores each process role used from the cell's start until it was caught up
    cpu: str = ""
    #: how long worker0's messages waited for their agent, per topic
    inputs: str = ""
    #: snapshots per second on the snapshot topic, from the cell's start to the last one
    snapshots: float = 0.0
    #: worker0's conflation window, sampled every 2 s of the cell (streams.pace)
    windows: list[float] = field(default_factory=list)

    @property
    def window(self) -> str:
        if not self.windows:
            return "window not read"
        mean = sum(self.windows) / len(self.windows)
        return f"window {mean:.2f} s mean, {max(self.windows):.2f} s widest"

    def row(self) -> list[str]:
        span = self.seconds or 1.0
        return [
            f"{self.rate:,}",
            str(self.fanout),
            f"{self.captured / span:,.0f}",
            ms(pct(self.capture, 0.99)),
            ms(pct(self.topic, 0.5)),
            ms(pct(self.topic, 0.99)),
            ms(pct(self.pg, 0.5)),
            ms(pct(self.pg, 0.95)),
            ms(pct(self.pg, 0.99)) + (f" ({self.pg_missing} late)" if self.pg_missing else ""),
            ms(pct(self.mongo, 0.5)),
            ms(pct(self.mongo, 0.99))
            + (f" ({self.mongo_missing} late)" if self.mongo_missing else ""),
        ]


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def metrics_token(settings: Settings) -> tuple[str, str]:
    """A token allowed /metrics only, and MIS_API_TOKENS for a worker with it added."""
    token = new_token()
    tokens = " ".join(
        filter(None, (settings.api_tokens.get_secret_value(), entry("bench", token, {"metrics"})))
    )
    return token, tokens


def read_metrics(port: int, token: str) -> str:
    """A local worker's /metrics, or "" if it did not answer."""
    url = f"http://127.0.0.1:{port}/metrics"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return ""


class Bench:
    def __init__(self, settings: Settings, workdir: Path, seconds: float) -> None:
        self.settings, self.workdir, self.seconds = settings, workdir, seconds
        self.pg = psycopg.connect(settings.pg_dsn, autocommit=True)
        self.app_id = f"mis-bench-{uuid.uuid4().hex[:8]}"
        # A metrics token of its own: each cell reads worker0's input delays (/metrics).
        self.token, tokens = metrics_token(settings)
        self.env = {**os.environ, "MIS_APP_ID": self.app_id, "MIS_API_TOKENS": tokens}
        self.workers: list[Worker] = []
        self.retired: list[Worker] = []
        self.sets: dict[int, dict[UUID, list[UUID]]] = {}
        self.value = 0.0
        self.out: list[str] = []

    def say(self, text: str) -> None:
        print(f"bench: {text}", flush=True)

    def _metrics(self) -> str:
        """worker0's /metrics, or "" if it did not answer."""
        if not self.workers:
            return ""
        return read_metrics(self.workers[0].port, self.token)

    def window(self) -> float | None:
        """worker0's conflation window now (mis_conflate_window_seconds, streams.pace)."""
        for family in text_string_to_metric_families(self._metrics()):
            if family.name == "mis_conflate_window_seconds":
                return float(family.samples[0].value) if family.samples else None
        return None

    def input_delays(self) -> dict[str, dict[float, float]]:
        """worker0's input-delay histogram (mis_input_delay_seconds): per topic, the count at
        or below each bucket's upper bound."""
        text = self._metrics()
        found: dict[str, dict[float, float]] = defaultdict(dict)
        for family in text_string_to_metric_families(text):
            if family.name != "mis_input_delay_seconds":
                continue
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    le = float(sample.labels["le"])
                    found[sample.labels["topic"]][le] = sample.value
        return found

    def worker(self) -> Worker:
        n = len(self.workers) + len(self.retired)
        w = Worker(f"worker{n}", self.env, self.workdir, self.settings.web_port + 7 + n).start()
        self.workers.append(w)
        return w

    def stop_workers(self) -> None:
        for w in self.workers:
            w.stop()
        self.retired += self.workers
        self.workers = []

    def sample(self) -> None:
        for w in self.workers:
            w.sample()

    def wait(self, what: str, probe: Any, timeout: float) -> float | None:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            for w in self.workers:
                if w.proc is not None and w.proc.poll() is not None and w.proc.returncode:
                    raise SystemExit(f"bench: {w.name} exited ({w.proc.returncode}): {w.log}")
            if probe():
                return time.monotonic() - start
            self.sample()
            time.sleep(0.05)
        self.say(f"timed out after {timeout:.0f}s waiting for {what}")
        return None

    # ------------------------------------------------------------------ data

    def make_bookings(self, fanouts: tuple[int, ...]) -> None:
        vendor = uuid4()
        rows = []
        for fanout in fanouts:
            made: dict[UUID, list[UUID]] = {}
            for _ in range(LOCATIONS):
                loc = uuid4()
                made[loc] = []
                for _ in range(fanout):
                    values = {
                        "id": uuid4(),
                        **source_db.booking_values(
                            farmer_id=uuid4(),
                            vendor_id=vendor,
                            location_id=loc,
                            crop_type="onion",
                            quantity_kg=100,
                            status="confirmed",
                        ),
                    }
                    made[loc].append(values["id"])
                    rows.append(values)
            self.sets[fanout] = made
        columns = list(rows[0])
        query = (
            f"INSERT INTO storage_bookings ({', '.join(columns)}) "
            f"VALUES ({', '.join(['%s'] * len(columns))})"
        )
        with self.pg.cursor() as cur:
            cur.executemany(query, [[r[c] for c in columns] for r in rows])
        every = [b for made in self.sets.values() for bs in made.values() for b in bs]
        took = self.wait(
            "the bookings' first snapshots",
            lambda: (
                self.pg.execute(
                    "SELECT count(*) FROM market_inventory_snapshots WHERE booking_id = ANY(%s)",
                    (every,),
                ).fetchone()
                == (len(every),)
            ),
            timeout=300,
        )
        self.say(
            f"{len(every):,} bookings at {LOCATIONS * len(fanouts)} locations in Postgres "
            f"{took or 0:.1f}s after they were written (worker start-up included)"
        )

    def readings(self, locs: list[UUID], n: int) -> list[tuple[UUID, float]]:
        out = []
        for _ in range(n):
            self.value += 1.0  # round robin over the locations, across calls
            out.append((locs[int(self.value) % len(locs)], self.value))
        return out

    def write(self, batch: list[tuple[UUID, float]]) -> float:
        now = datetime.now(UTC)
        with self.pg.cursor() as cur:
            cur.executemany(
                INSERT_READING,
                [
                    (loc, f"s-{int(v) % 5}", v, now + timedelta(microseconds=k))
                    for k, (loc, v) in enumerate(batch)
                ],
            )
        return time.time()

    # ------------------------------------------------------------------ cells

    def cell(self, rate: int, fanout: int) -> Cell:
        made = self.sets[fanout]
        locs = list(made)
        probes = {loc: bs[0] for loc, bs in made.items()}
        result = Cell(rate, fanout)
        watch, probe = CdcWatch(self.settings), Probe(self.settings, probes, mongo_probes=5)
        snaps = SnapWatch(self.settings, self.app_id, probes)
        watch.start()
        probe.start()
        snaps.start()
        committed: list[tuple[float, UUID, float]] = []
        tick = 0.02
        per_tick = rate * tick
        owed = 0.0
        delays_before = self.input_delays()
        cpu_before = cpu_by_role()
        started_at = time.time()
        start = time.monotonic()
        next_at = start
        sampled_at = start
        while time.monotonic() - start < self.seconds:
            if time.monotonic() - sampled_at >= 2.0:  # the window, every 2 s
                sampled_at = time.monotonic()
                window = self.window()
                if window is not None:
                    result.windows.append(window)
            owed += per_tick
            n = int(owed)
            owed -= n
            if n:
                batch = self.readings(locs, n)
                at = self.write(batch)
                committed += [(at, loc, v) for loc, v in batch]
            next_at += tick
            time.sleep(max(0.0, next_at - time.monotonic()))
        result.seconds = time.monotonic() - start
        result.offered = len(committed)
        last = {loc: v for _, loc, v in committed}
        mongo_locs = [loc for loc, _ in probe.mongo]
        drained = self.wait(
            "the probes to catch up",
            lambda: (
                all(probe.latest(loc) >= v for loc, v in last.items())
                and all(probe.latest(loc, mongo=True) >= last.get(loc, 0.0) for loc in mongo_locs)
            ),
            timeout=max(60.0, self.seconds * 4),
        )
        result.drained = drained is not None
        result.cpu = cores_used(cpu_before, cpu_by_role(), time.monotonic() - start)
        result.inputs = input_delay_summary(delays_before, self.input_delays())
        result.snapshots = snaps.rate(started_at)
        probe.stop()
        watch.stop()
        snaps.stop()
        result.topic, _ = delays(committed, snaps.seen)
        result.captured = len(watch.arrived)
        for at, loc, v in committed:
            got = watch.arrived.get((str(loc), v))
            if got is not None:
                result.capture.append(max(0.0, got - at))
        result.pg, result.pg_missing = delays(committed, probe.pg_seen)
        in_mongo = [c for c in committed if c[1] in set(mongo_locs)]
        result.mongo, result.mongo_missing = delays(in_mongo, probe.mongo_seen)
        self.say(
            f"cell {rate}/s x {fanout}: "
            + " ".join(result.row()[2:])
            + ("" if result.drained else " (not caught up)")
        )
        return result

    # ------------------------------------------------------------------ sustained

    def burst(self, n: int, fanout: int) -> tuple[float, float | None, float | None]:
        """Readings/s captured, on the snapshot topic and in Postgres, for a burst of ``n``."""
        made = self.sets[fanout]
        locs = list(made)
        probes = {loc: bs[0] for loc, bs in made.items()}
        watch, probe = CdcWatch(self.settings), Probe(self.settings, probes, mongo_probes=0)
        snaps = SnapWatch(self.settings, self.app_id, probes)
        for t in (watch, probe, snaps):
            t.start()
        batch = self.readings(locs, n)
        last = {loc: v for loc, v in batch}
        start = time.time()
        for i in range(0, n, 1000):
            self.write(batch[i : i + 1000])
        self.wait("the burst's capture", lambda: len(watch.arrived) >= n, timeout=300)

        def current(seen: dict[UUID, list[tuple[float, float]]]) -> bool:
            return all(seen.get(loc) and seen[loc][-1][1] >= v for loc, v in last.items())

        self.wait("the burst's snapshots", lambda: current(snaps.seen), timeout=300)
        self.wait("the burst to reach Postgres", lambda: current(probe.pg_seen), timeout=300)
        for t in (watch, probe, snaps):
            t.stop()

        def rate(seen: dict[UUID, list[tuple[float, float]]]) -> float | None:
            if not current(seen):
                return None
            return n / (max(s[-1][0] for s in seen.values()) - start)

        captured = n / (max(watch.arrived.values()) - start) if watch.arrived else 0.0
        return captured, rate(snaps.seen), rate(probe.pg_seen)

    # ------------------------------------------------------------------ replay

    def replay(self, rebuild: bool) -> str:
        self.stop_workers()
        args = [sys.executable, "-m", "streams.cli", "replay", "--to-earliest"]
        if rebuild:
            args.append("--rebuild-tables")
        log = self.workdir / f"replay-{'rebuild' if rebuild else 'plain'}.log"
        # A worker that had to be killed stays a member until its session times out.
        kafka = Kafka(self.settings.kafka_bootstrap)
        self.wait(
            "the workers to leave the group",
            lambda: (
                not kafka.members(self.app_id)
                and not kafka.members(topology.gather_group(self.app_id))
            ),
            timeout=self.settings.session_timeout_s * 3 + 30,
        )
        proc = subprocess.Popen(
            args, cwd=REPO_ROOT, env=self.env, stdout=log.open("wb"), stderr=subprocess.STDOUT
        )
        ready = self.wait(
            "the replay to move the offsets",
            lambda: (
                "start the workers now" in log.read_text(errors="replace")
                or proc.poll() is not None
            ),
            timeout=600,
        )
        if ready is None or proc.poll() is not None:
            return f"failed: {log.read_text(errors='replace')[-300:]}"
        self.worker()
        try:
            proc.wait(1800)
        except subprocess.TimeoutExpired:
            proc.kill()
            return "timed out"
        text = log.read_text(errors="replace")
        found = {}
        for name in ("change events", "rate", "processing", "history re-keyed"):
            m = re.search(rf"^\s*{name}\s+(.*)$", text, re.M)
            if m:
                found[name] = m.group(1).strip()
        return "; ".join(f"{k}: {v}" for k, v in found.items()) or text[-300:]

    # ------------------------------------------------------------------ baseline

    def polling_baseline(self, fanout: int) -> str:
        """The old design: each booking re-reads its sensors, pests and certificates and is
        recomputed on its own, every 30 minutes (publish every 5)."""
        made = self.sets[fanout]
        bookings = [b for bs in made.values() for b in bs]
        cur = self.pg.cursor()
        start = time.monotonic()
        now = datetime.now(UTC)

        def rows(query: str, *params: Any) -> list[dict[str, Any]]:
            found = cur.execute(query, params).fetchall()  # type: ignore[call-overload]
            names = [d.name for d in cur.description or []]
            return [dict(zip(names, r, strict=True)) for r in found]

        for booking_id in bookings:
            booking = Booking.model_validate(
                rows("SELECT * FROM storage_bookings WHERE id = %s", booking_id)[0]
            )
            readings = [
                SensorReading.model_validate(r)
                for r in rows(
                    "SELECT * FROM sensor_readings WHERE location_id = %s", booking.location_id
                )
            ]
            pests = [
                PestDetection.model_validate(r)
                for r in rows(
                    "SELECT * FROM pest_detections WHERE location_id = %s AND detected_at >= %s",
                    booking.location_id,
                    now - timedelta(days=7),
                )
            ]
            certs = [
                Certificate.model_validate(r)
                for r in rows("SELECT * FROM certificates WHERE vendor_id = %s", booking.vendor_id)
            ]
            builder.build_snapshot(
                booking,
                inspection=None,
                readings=readings,
                pests=pests,
                certificates=certs,
                deleted=False,
                now=now,
            )
        took = time.monotonic() - start
        found = self.pg.execute(
            "SELECT count(*) FROM sensor_readings WHERE location_id = ANY(%s)", (list(made),)
        ).fetchone()
        total = found[0] if found else 0
        return (
            f"{len(bookings)} bookings ({fanout}/location, {total:,} readings at their "
            f"locations) recomputed one by one in {took:.1f}s "
            f"({took / len(bookings) * 1000:.1f} ms each, {len(bookings) / took:,.0f} bookings/s); "
            "by design a snapshot is then up to 30 min stale (sensors, pests) and 5 min (publish)"
        )


def profile(pid: int, seconds: float, out: Path) -> str:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return "py-spy not installed (pip install py-spy): no profile"
    raw = out.with_suffix(".txt")
    subprocess.run(
        [
            spy,
            "record",
            "-p",
            str(pid),
            "-d",
            str(int(seconds)),
            "-f",
            "raw",
            "-o",
            str(raw),
            "--nonblocking",
        ],
        capture_output=True,
        timeout=seconds + 60,
    )
    if not raw.exists():
        return "py-spy produced nothing (ptrace not permitted?)"
    return summarize(raw.read_text())


def summarize(collapsed: str, top: int = 12) -> str:
    """A collapsed-stack profile as shares of time: by package (outermost match), by the
    innermost frames, and by the pipeline's own functions including what they call."""
    total = 0
    packages: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    order = ("streams/", "pydantic", "rocksdict", "aiokafka", "faust", "mode/", "asyncio", "json")
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        leaves[frames[-1][:90]] += n
        own = {f.split(" (")[0] for f in frames if "(streams/" in f and "cli.py" not in f}
        for function in own:
            inclusive[function] += n
        hit = "other"
        for frame in reversed(frames):
            found = next((p for p in order if p in frame), None)
            if found:
                hit = found.strip("/")
                break
        packages[hit] += n
    if not total:
        return "empty profile"
    lines = ["by package of the innermost known frame:"]
    lines += [f"  {k:12} {v / total:6.1%}" for k, v in packages.most_common()]
    lines.append("innermost frames:")
    lines += [f"  {v / total:6.1%}  {k}" for k, v in leaves.most_common(top)]
    lines.append("the pipeline's functions, with what they call:")
    lines += [f"  {v / total:6.1%}  {k}" for k, v in inclusive.most_common(top + 6)]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> None:
    settings = get_settings()
    try:
        psycopg.connect(settings.pg_dsn, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        raise SystemExit(f"bench: Postgres is not reachable ({exc}); run `make stack-up`") from exc
    rates = tuple(int(r) for r in args.rates.split(","))
    fanouts = tuple(int(f) for f in args.fanouts.split(","))
    outdir = REPO_ROOT / "build" / "bench"
    outdir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report: list[str] = [
        f"bench {stamp}: {os.cpu_count()} cores, {LOCATIONS} locations, "
        f"cells of {args.seconds:.0f}s, MIS_CONFLATE_WINDOW_S="
        f"{settings.conflate_window_s}"
    ]
    with tempfile.TemporaryDirectory(prefix="mis-bench-") as tmp:
        workdir = outdir / f"run-{stamp}" if args.keep else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        bench = Bench(settings, workdir, args.seconds)
        try:
            bench.worker()
            bench.make_bookings(tuple(sorted(set(fanouts) | {args.burst_fanout})))
            cells = [bench.cell(r, f) for f in fanouts for r in rates]
            header = [
                "readings/s",
                "bookings/loc",
                "captured/s",
                "capture p99",
                "topic p50",
                "topic p99",
                "PG p50",
                "PG p95",
                "PG p99",
                "Mongo p50",
                "Mongo p99",
            ]
            report.append(
                "delays in ms (s where marked); 'late': readings not seen within the "
                "wait after the cell"
            )
            report.append(table(header, [c.row() for c in cells]))
            report.append(
                "snapshots/s on the topic, the conflation window during the cell, and the CPU "
                "used, from the start of each cell until caught up:"
            )
            report += [
                f"  {c.rate:,}/s x {c.fanout}: {c.snapshots:,.0f} snapshots/s; {c.window}; {c.cpu}"
                for c in cells
            ]
            report.append(
                "how long messages waited for their agent in worker0 (ms; Kafka timestamp to "
                "the batch that took them), per topic:"
            )
            report += [f"  {c.rate:,}/s x {c.fanout}: {c.inputs}" for c in cells]
            if not args.no_sustained:
                one = bench.burst(args.burst, args.burst_fanout)
                prof = ""
                if args.profile:
                    t = threading.Thread(
                        target=lambda: bench.out.append(
                            profile(bench.workers[0].pid, 10, outdir / f"pyspy-{stamp}")
                        )
                    )
                    t.start()
                    bench.burst(args.burst, args.burst_fanout)
                    t.join()
                    prof = bench.out[-1]
                bench.worker()
                kafka = Kafka(settings.kafka_bootstrap)
                bench.wait(
                    "the second worker to join",
                    lambda: len(kafka.members(bench.app_id)) == 2,
                    timeout=120,
                )
                time.sleep(10)  # the rebalance's table recovery
                two = bench.burst(args.burst, args.burst_fanout)

                def fig(x: float | None) -> str:
                    return "-" if x is None else f"{x:,.0f}/s"

                report.append(
                    f"sustained ({args.burst:,}-reading burst, {args.burst_fanout} bookings per "
                    f"location, readings/s): capture {one[0]:,.0f}/s; one worker: snapshot topic "
                    f"{fig(one[1])} ({(one[1] or 0) / one[0]:.2f}x capture), Postgres "
                    f"{fig(one[2])}; two workers: snapshot topic {fig(two[1])} (capture "
                    f"{two[0]:,.0f}/s), Postgres {fig(two[2])}; two vs one (snapshot topic) "
                    f"{(two[1] or 0) / (one[1] or 1):.2f}x"
                )
                if prof:
                    report.append("profile of one worker during a burst (py-spy, 10 s):\n" + prof)
            report.append("baseline (old design): " + bench.polling_baseline(args.burst_fanout))
            if not args.no_replay:
                report.append("replay, tables kept: " + bench.replay(rebuild=False))
                report.append("replay, tables rebuilt: " + bench.replay(rebuild=True))
            bench.sample()
            report.append(
                "worker peak RSS: " + ", ".join(w.rss() for w in bench.retired + bench.workers)
            )
        finally:
            bench.stop_workers()
    text = "\n".join(report)
    (outdir / f"bench-{stamp}.txt").write_text(text + "\n")
    print("\n" + text)
    print(f"\n(also in {outdir / f'bench-{stamp}.txt'})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m streams.bench", description=__doc__)
    p.add_argument("--rates", default=",".join(map(str, RATES)), help="offered readings/s")
    p.add_argument("--fanouts", default=",".join(map(str, FANOUTS)), help="bookings/location")
    p.add_argument("--seconds", type=float, default=15.0, help="length of each cell")
    p.add_argument("--burst", type=int, default=15_000, help="readings in the sustained burst")
    p.add_argument("--burst-fanout", type=int, default=15)
    p.add_argument("--no-sustained", action="store_true")
    p.add_argument("--no-replay", action="store_true")
    p.add_argument("--profile", action="store_true", help="py-spy one worker during a burst")
    p.add_argument(
        "--keep", action="store_true", help="keep the workers' logs in build/bench/run-<stamp>"
    )
    # SIGTERM (make's trap, a kill) unwinds like Ctrl-C, so the workers are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    run(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
