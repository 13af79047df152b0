"""The fault matrix: each fault under steady load, then convergence checked against the source.

``python -m tests.faults.matrix`` (``make faults``) runs every fault on the running local stack
and prints one table: fault, times run, lost, regressed, extra, time to converge. The same
scenarios back tests/integration/test_faults.py, which CI runs with fewer repetitions.

For each run: a fresh application id (its own topics, groups and tables), workers started,
the load (tests/faults/load.py) writing meanwhile, the fault applied, the load stopped, and
then ``mis verify`` (streams/ops/verify.py: a recomputation from the source tables with SQL,
not with the pipeline's builder) repeated, scoped to the load's farmers, until it finds nothing
or the deadline passes. What it still finds then is the run's lost, regressed and extra.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from launcher.stack import Stack
from streams import topology
from streams.config import Settings
from streams.ops.verify import Report, Scope, verify
from streams.topology import SOURCE_TABLES
from tests.faults.load import Load
from tests.integration.workers import Worker, wait_for

log = logging.getLogger(__name__)

CONVERGE_S = 180.0


@dataclass
class Env:
    settings: Settings
    stack: Stack
    workdir: Path
    app_id: str
    load: Load
    workers: list[Worker] = field(default_factory=list)
    rng: random.Random = field(default_factory=lambda: random.Random(1))
    notes: list[str] = field(default_factory=list)

    def worker(self, name: str) -> Worker:
        w = Worker(name, self.app_id, self.workdir)
        self.workers.append(w)
        return w

    def restart(self, w: Worker) -> None:
        """Start ``w`` unless it runs already (``revive`` may have restarted it meanwhile)."""
        if w.proc is not None and w.proc.poll() is None:
            return
        w.start()
        w.wait_ready(timeout=240)

    def revive(self) -> None:
        """Start again every worker that exited (a supervisor would)."""
        for w in self.workers:
            if w.proc is not None and w.proc.poll() is not None:
                self.notes.append(f"{w.name} exited ({w.proc.returncode}); restarted")
                self.restart(w)

    def pause(self, seconds: float) -> None:
        """Let the load run; restart any worker that died meanwhile."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.revive()
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


Fault = Callable[[Env], None]


# --------------------------------------------------------------------------- the faults


def no_fault(env: Env) -> None:
    """The load alone, as long as a fault run lasts: the baseline."""
    env.pause(30)


def sigkill_worker(env: Env, kills: int = 20) -> None:
    """SIGKILL the worker at random points, restarting it on its data directory each time."""
    (w,) = env.workers
    for _ in range(kills):
        env.pause(env.rng.uniform(0.5, 6.0))
        w.kill()
        env.restart(w)


def sigkill_one_of_two(env: Env, kills: int = 5) -> None:
    """Two workers; SIGKILL one at random points (its partitions move), then start it again."""
    second = env.worker("w2")
    env.restart(second)
    for _ in range(kills):
        env.pause(env.rng.uniform(1.0, 8.0))
        victim = env.rng.choice(env.workers)
        victim.kill()
        env.pause(env.rng.uniform(0.0, 10.0))
        env.restart(victim)


def _component(name: str, *, kill: bool, down_s: float = 5.0) -> Fault:
    def fault(env: Env, down_s: float = down_s) -> None:
        env.pause(5)
        env.stack.stop_component(name, kill=kill)
        try:
            env.pause(down_s)
        finally:
            env.stack.start_component(name)
        if name == "connect":
            _wait_connector(env)

    fault.__doc__ = f"{name} {'killed' if kill else 'stopped'} for {down_s:.0f} s, then started"
    return fault


def _wait_connector(env: Env) -> None:
    def running() -> bool:
        states = env.stack.connector_states()
        return bool(states) and all(
            s == "RUNNING" and tasks and all(t == "RUNNING" for t in tasks)
            for _, s, tasks in states
        )

    wait_for("the connector to run again", running, timeout=120)


def terminate_sink_connections(env: Env) -> None:
    """pg_terminate_backend on every connection the sinks hold."""
    env.pause(5)
    with psycopg.connect(env.settings.pg_dsn, autocommit=True) as conn:
        for _ in range(3):
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name LIKE 'mis-sink-%%'"
            ).fetchall()
            env.notes.append(f"terminated {len(rows)} sink connections")
            env.pause(3)


def duplicate_and_reorder(env: Env) -> None:
    """A range of every CDC topic delivered again, in reverse order."""
    env.pause(5)
    producer = Producer({"bootstrap.servers": env.settings.kafka_bootstrap})
    copied = 0
    for table in SOURCE_TABLES:
        for msg in reversed(_tail(env.settings, env.settings.cdc_topic(table), 200)):
            producer.produce(msg[0], key=msg[1], value=msg[2], partition=msg[3])
            copied += 1
    producer.flush(30)
    env.notes.append(f"{copied} change events delivered again")
    env.pause(5)


def _tail(settings: Settings, topic: str, n: int) -> list[tuple[str, bytes, bytes, int]]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"faults-{uuid.uuid4()}",
            "enable.partition.eof": True,
        }
    )
    out: list[tuple[str, bytes, bytes, int]] = []
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        assigned = []
        for p in parts:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            assigned.append(TopicPartition(topic, p, max(low, high - n // len(parts))))
        consumer.assign(assigned)
        ended: set[int] = set()
        deadline = time.monotonic() + 30
        while len(ended) < len(parts) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                ended.add(msg.partition() or 0)
                continue
            if msg.value() is not None:
                out.append((topic, msg.key() or b"", msg.value() or b"", msg.partition() or 0))
    finally:
        consumer.close()
    return out


def malformed_events(env: Env, per_topic: int = 1000) -> None:
    """``per_topic`` malformed events into each CDC topic; each must reach the dead letters."""
    env.pause(3)
    marker = uuid.uuid4().hex
    producer = Producer({"bootstrap.servers": env.settings.kafka_bootstrap, "linger.ms": 20})
    for table in SOURCE_TABLES:
        for i in range(per_topic):
            value = (
                f'{{"oops": "{marker}"'
                if i % 2
                else json.dumps({"op": "c", "after": {"marker": marker}, "source": {}})
            )
            producer.produce(env.settings.cdc_topic(table), key=f"{marker}-{i}", value=value)
    producer.flush(60)
    want = per_topic * len(SOURCE_TABLES)

    def parked() -> int | None:
        n = _count_dead_letters(env, marker)
        return n if n >= want else None

    found = wait_for(f"{want} dead letters", parked, timeout=CONVERGE_S, every=2.0)
    env.notes.append(f"{found} of {want} malformed events in the dead letters")


def _count_dead_letters(env: Env, marker: str) -> int:
    topic = topology.dead_letter_topic(env.app_id)
    consumer = Consumer(
        {
            "bootstrap.servers": env.settings.kafka_bootstrap,
            "group.id": f"faults-{uuid.uuid4()}",
            "enable.partition.eof": True,
        }
    )
    count, ended = 0, set()
    try:
        consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(env.settings.partitions)]
        )
        deadline = time.monotonic() + 30
        while len(ended) < env.settings.partitions and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                ended.add(msg.partition())
                continue
            if marker.encode() in (msg.value() or b""):
                count += 1
    finally:
        consumer.close()
    return count


def column_added(env: Env) -> None:
    """A column added to every source table while the pipeline runs."""
    env.pause(3)
    column = f"extra_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(env.settings.pg_dsn, autocommit=True) as conn:
        for table in SOURCE_TABLES:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} text DEFAULT 'x'")
    env.pause(8)
    with psycopg.connect(env.settings.pg_dsn, autocommit=True) as conn:
        for table in SOURCE_TABLES:
            conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")


def tables_truncated(env: Env) -> None:
    """TRUNCATE of the pest detections and the certificates while the load goes on."""
    env.pause(5)
    with psycopg.connect(env.settings.pg_dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE pest_detections, certificates")
    env.load.pests.clear()
    env.load.certificates.clear()
    env.pause(8)


FAULTS: dict[str, tuple[Fault, int]] = {
    # name: (fault, workers)
    "none (the load alone)": (no_fault, 1),
    "worker SIGKILL x20 (restart on its data dir)": (sigkill_worker, 1),
    "one of two workers SIGKILLed x5": (sigkill_one_of_two, 1),
    "Kafka Connect killed and restarted": (_component("connect", kill=True), 1),
    "Kafka broker killed and restarted": (_component("kafka", kill=True), 1),
    "Postgres killed and restarted": (_component("postgres", kill=True), 1),
    "MongoDB server stopped 60 s": (_component("mongo", kill=False, down_s=60), 1),
    "sink connections terminated (pg_terminate_backend)": (terminate_sink_connections, 1),
    "duplicated and reordered delivery": (duplicate_and_reorder, 1),
    "1,000 malformed events per CDC topic": (malformed_events, 1),
    "column added to every source table": (column_added, 1),
    # Last: it empties tables every booking of the stack reads.
    "pest detections and certificates truncated": (tables_truncated, 1),
}


# --------------------------------------------------------------------------- a run


@dataclass
class Outcome:
    fault: str
    report: Report | None
    converge_s: float | None
    notes: list[str]

    @property
    def counts(self) -> tuple[int, int, int]:
        if self.report is None:
            return (0, 0, 0)
        c = self.report.counts
        return (
            c["row", "lost"] + c["listing", "lost"],
            c["row", "regressed"] + c["listing", "regressed"],
            c["row", "extra"] + c["listing", "extra"],
        )


def converge(settings: Settings, scope: Scope, timeout: float = CONVERGE_S) -> tuple[Report, float]:
    """Verify until nothing is found or ``timeout``; the last report and the seconds taken."""
    began = time.monotonic()
    while True:
        report = verify(settings, now=datetime.now(UTC), scope=scope)
        took = time.monotonic() - began
        if report.clean or took > timeout:
            return report, took
        time.sleep(2.0)


@contextmanager
def environment(
    settings: Settings, workdir: Path, workers: int, rate: float, seed: int
) -> Iterator[Env]:
    app_id = f"mis-faults-{uuid.uuid4().hex[:8]}"
    load = Load(settings.pg_dsn, rate=rate, seed=seed)
    env = Env(settings, Stack.from_settings(settings), workdir, app_id, load)
    env.rng.seed(seed)
    try:
        for i in range(workers):
            env.restart(env.worker(f"w{i + 1}"))
        load.start()
        yield env
    finally:
        load.stop()
        for w in env.workers:
            w.stop()


def run(
    settings: Settings, name: str, workdir: Path, *, rate: float = 20.0, seed: int = 0, **kw: Any
) -> Outcome:
    fault, workers = FAULTS[name]
    with environment(settings, workdir, workers, rate, seed) as env:
        fault(env, **kw)
        env.pause(3)
        env.load.stop()
        env.revive()
        report, took = converge(settings, Scope(farmers=frozenset(env.load.farmers)))
        env.notes.append(f"{env.load.changes} source changes written")
    return Outcome(name, report, took if report.clean else None, env.notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.matrix", description=__doc__)
    parser.add_argument("--only", action="append", default=[], help="a fault's name (substring)")
    parser.add_argument("--times", type=int, default=1, help="runs of each fault")
    parser.add_argument("--rate", type=float, default=20.0, help="source changes per second")
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="keep the workers' logs and data under this directory (a subdirectory per invocation)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    settings = Settings()
    names = [n for n in FAULTS if not args.only or any(o in n for o in args.only)]
    results: dict[str, list[Outcome]] = {}
    with tempfile.TemporaryDirectory(prefix="mis-faults-") as scratch:
        tmp = Path(scratch)
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%dT%H%M%S-"), dir=args.keep))
            print(f"workers' logs and data kept in {tmp}", flush=True)
        for n, name in enumerate(names):
            for i in range(args.times):
                workdir = tmp / f"{n}-{i}"
                workdir.mkdir()
                print(f"fault: {name} (run {i + 1}/{args.times})", flush=True)
                outcome = run(settings, name, workdir, rate=args.rate, seed=i)
                for note in outcome.notes:
                    print(f"    {note}", flush=True)
                if outcome.report is not None and not outcome.report.clean:
                    for finding in outcome.report.findings[:10]:
                        print("    " + finding.describe().replace("\n", "\n    "), flush=True)
                results.setdefault(name, []).append(outcome)
    print()
    print("| fault | runs | lost | regressed | extra | time to converge |")
    print("|---|---|---|---|---|---|")
    failed = False
    for name, outcomes in results.items():
        lost, regressed, extra = (sum(o.counts[i] for o in outcomes) for i in range(3))
        times = [o.converge_s for o in outcomes if o.converge_s is not None]
        failed |= bool(lost or regressed or extra) or len(times) < len(outcomes)
        took = f"{max(times):.0f} s (max)" if len(times) == len(outcomes) else "did not converge"
        print(f"| {name} | {len(outcomes)} | {lost} | {regressed} | {extra} | {took} |")
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("MIS_TICK_INTERVAL_S", "1")
    sys.exit(main())
