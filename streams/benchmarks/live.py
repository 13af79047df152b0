"""``python -m streams.benchmarks.live`` (``make bench-live``): source commit -> live push.

Prints figures; asserts nothing. Against the local stack: a worker of its own (a fresh app id),
BOOKINGS bookings at one location, a client reading the listing-change stream filtered by that
location, then CHANGES status changes, one booking at a time; for each, the delay from just
before the source UPDATE commits to the client reading its ``status_changed`` event (both
clocks are this process's). ``--load`` adds that many quantity changes per second to other
bookings meanwhile (they make snapshots and history rows, and no event), so the delay is
measured with the pipeline busy.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
import requests

from streams.api.auth import entry
from streams.benchmarks.bookings import insert_bookings
from streams.config import REPO_ROOT, Settings, get_settings


def _wait(what: str, probe: Any, timeout: float, worker: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise SystemExit(f"bench-live: the worker exited while waiting for {what}")
        if probe():
            return
        time.sleep(0.2)
    raise SystemExit(f"bench-live: no {what} within {timeout:.0f}s")


def _events(resp: requests.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    event, data = "message", ""
    for raw in resp.iter_lines():
        line = raw.decode()
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and data:
            yield event, json.loads(data)
            event, data = "message", ""


def _load(settings: Settings, bookings: list[UUID], rate: float, stop: threading.Event) -> int:
    if rate <= 0:
        return 0
    n = 0
    with psycopg.connect(settings.pg_dsn, autocommit=True) as pg:
        began = time.monotonic()
        while not stop.is_set():
            b = bookings[n % len(bookings)]
            pg.execute("UPDATE storage_bookings SET quantity_kg = %s WHERE id = %s", (n + 2, b))
            n += 1
            pause = began + n / rate - time.monotonic()
            if pause > 0:
                stop.wait(pause)
    return n


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.benchmarks.live")
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--load", type=float, default=0.0, help="background changes per second")
    args = parser.parse_args(argv)
    settings = get_settings()
    token = "mis_bench-live-" + secrets.token_hex(16)
    port = settings.web_port + 11
    workdir = Path(tempfile.mkdtemp(prefix="bench-live-"))
    env = {
        **os.environ,
        "MIS_APP_ID": f"mis-bench-live-{uuid.uuid4().hex[:8]}",
        "MIS_DATA_DIR": str(workdir / "data"),
        "MIS_WEB_PORT": str(port),
        "MIS_API_TOKENS": entry("bench", token, ["read"]),
    }
    log = workdir / "worker.log"
    worker = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "worker", "-l", "warn"],
        cwd=REPO_ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    stop = threading.Event()
    try:
        pg = psycopg.connect(settings.pg_dsn, autocommit=True)
        location = uuid4()
        watched = insert_bookings(pg, "bench-live", [location] * args.changes)
        others = insert_bookings(pg, "bench-live", [uuid4()] * 50) if args.load > 0 else []
        everyone = watched + others

        def recorded() -> bool:
            row = pg.execute(
                "SELECT count(DISTINCT booking_id) FROM market_inventory_snapshot_history "
                "WHERE booking_id = ANY(%s)",
                (everyone,),
            ).fetchone()
            return row is not None and row[0] == len(everyone)

        _wait("first snapshots", recorded, 240, worker)
        resp = requests.get(
            f"http://127.0.0.1:{port}/storage-guard/listing-changes/stream",
            params={"location_id": str(location)},
            headers={"Authorization": f"Bearer {token}"},
            stream=True,
            timeout=(10, 60),
        )
        resp.raise_for_status()
        events = _events(resp)
        event, _ = next(events)
        assert event == "ready", event
        loader = threading.Thread(target=_load, args=(settings, others, args.load, stop))
        loader.start()
        delays: list[float] = []
        committed: dict[UUID, datetime] = {}
        for b in watched:
            started = time.perf_counter()
            row = pg.execute(
                "UPDATE storage_bookings SET status = 'cancelled' WHERE id = %s "
                "RETURNING clock_timestamp()",
                (b,),
            ).fetchone()
            assert row is not None
            committed[b] = row[0]
            for event, data in events:
                if event == "listing-change" and data["booking_id"] == str(b):
                    delays.append(time.perf_counter() - started)
                    break
        stop.set()
        loader.join()
        resp.close()
        ms = [d * 1000 for d in delays]
        # Where the time went: the sink's transaction began (now() of the history row) after
        # the source commit by this much, on Postgres's clock; the rest is the outbox's publisher,
        # Kafka and the stream.
        sink = [
            (recorded - committed[b]).total_seconds() * 1000
            for b, recorded in pg.execute(
                "SELECT booking_id, recorded_at FROM market_inventory_snapshot_history "
                "WHERE booking_id = ANY(%s) AND status = 'withdrawn'",
                (watched,),
            ).fetchall()
        ]
        print(
            f"commit -> SSE client, {len(ms)} changes one at a time, background load "
            f"{args.load:g} changes/s: p50 {_pct(ms, 0.5):.0f} ms, p99 {_pct(ms, 0.99):.0f} ms, "
            f"max {max(ms):.0f} ms; of which commit -> the sink's transaction: "
            f"p50 {_pct(sink, 0.5):.0f} ms, p99 {_pct(sink, 0.99):.0f} ms"
        )
        pg.close()
    finally:
        stop.set()
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
