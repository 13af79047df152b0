"""Operations by _id on the MongoDB-wire server: replace rate and find_one latency by size.

    python -m streams.benchmarks.mongo_ids                      # the stack's server, 1k and 100k
    python -m streams.benchmarks.mongo_ids --stock-sizes 1000,10000   # and FerretDB as published
    python -m streams.benchmarks.mongo_ids --servers patched-sqlite,patched-postgresql --sizes 1000

Listings of the sink's shape (streams.sinks.mongo.listing_document, about 2.5 KB of BSON) are
loaded into an empty collection, then C clients each send ordered bulks of K upserting replaces by
_id (the sink's write) for a few seconds; then one client times find_one by _id. Prints figures,
asserts nothing.

Servers: `stack` is whatever serves settings.mongo_url (the launcher's FerretDB). The others are
FerretDB processes this benchmark starts on a free port of its own and stops: `patched-*` is the
launcher's build (launcher/go/ferretdb/patches applied), `stock-*` FerretDB as published; `*-sqlite`
keeps its files in a temporary directory, `*-postgresql` uses a database of the stack's Postgres
(dropped afterwards), so the stack must be up for those.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any
from uuid import UUID

import bson
import psycopg
from pymongo import MongoClient, ReplaceOne
from pymongo.errors import PyMongoError

from launcher import ferretdb
from streams.bench import cpu_seconds
from streams.config import Settings, get_settings
from streams.samples import NOW, full_record
from streams.sinks.mongo import listing_document

DATABASE = "mis_bench"
COLLECTION = "listings"
PG_DATABASE = "ferretdb_bench"
# The launcher's SQLite pragmas, for either build, so the builds compare.
SQLITE_PARAMS = os.environ.get("MIS_BENCH_SQLITE_PARAMS", ferretdb.SQLITE_QUERY)
# FerretDB as published holds a SQLite connection per matched statement until its command ends,
# from a pool of 100: `clients` concurrent bulks of `bulk` need clients * (bulk + 1) of them.
STOCK_POOL = 100

Doc = dict[str, Any]


def template() -> Doc:
    """One listing as the sink writes it: a booking with readings, pests and certificates."""
    return listing_document(full_record(), "ready_to_publish", NOW)


def listing(base: Doc, i: int, version: int) -> Doc:
    doc = dict(base)
    doc["_id"] = str(UUID(int=i + 1))
    doc["booking_id"] = str(UUID(int=(1 << 100) + i))
    doc["snapshot_id"] = doc["_id"]
    doc["source_version"] = f"{version:032d}"
    return doc


def client(url: str, *, timeout_ms: int = 10_000) -> MongoClient[Doc]:
    return MongoClient(url, serverSelectionTimeoutMS=timeout_ms, socketTimeoutMS=600_000)


def load(url: str, base: Doc, n: int) -> float:
    """An empty collection with n listings and the sink's indexes; returns the seconds it took."""
    started = time.monotonic()
    with client(url) as c:
        c.drop_database(DATABASE)
        coll = c[DATABASE][COLLECTION]
        coll.create_index("booking_id", unique=True)
        coll.create_index("status")
        for start in range(0, n, 1000):
            coll.insert_many([listing(base, i, 1) for i in range(start, min(n, start + 1000))])
    return time.monotonic() - started


def replace_rate(
    url: str, base: Doc, n: int, bulk: int, clients: int, seconds: float, max_ops: int
) -> tuple[float, int]:
    """Replaces by _id per second (and how many): `clients` threads of ordered upserting bulks."""
    done = [0] * clients
    errors: list[BaseException] = []
    deadline = time.monotonic() + seconds
    per_client = max(bulk, max_ops // clients)

    def run(k: int) -> None:
        rng = random.Random(k)
        version = 2
        try:
            with client(url) as c:
                coll = c[DATABASE][COLLECTION]
                while time.monotonic() < deadline and done[k] < per_client:
                    ids = rng.sample(range(n), min(bulk, n))
                    docs = [listing(base, i, version) for i in ids]
                    ops = [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in docs]
                    coll.bulk_write(ops, ordered=True)
                    done[k] += len(ops)
                    version += 1
        except PyMongoError as exc:  # reported, not raised: the figure says what happened
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 600)
    elapsed = time.monotonic() - started
    if errors:
        print(f"    ! {len(errors)} client(s) failed: {str(errors[0]).splitlines()[0][:200]}")
    return sum(done) / elapsed, sum(done)


def find_latency(url: str, n: int, lookups: int, seconds: float) -> tuple[float, float, int]:
    """Median and p95 milliseconds of find_one by _id, and how many were timed."""
    rng = random.Random(7)
    times: list[float] = []
    deadline = time.monotonic() + seconds
    with client(url) as c:
        coll = c[DATABASE][COLLECTION]
        coll.find_one({"_id": str(UUID(int=1))})
        while len(times) < lookups and time.monotonic() < deadline:
            key = str(UUID(int=rng.randrange(n) + 1))
            t0 = time.perf_counter()
            found = coll.find_one({"_id": key})
            times.append((time.perf_counter() - t0) * 1000)
            if found is None:
                raise RuntimeError(f"listing {key} is missing")
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95)], len(times)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ping(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"FerretDB exited with {proc.returncode}")
        with suppress(PyMongoError), client(url, timeout_ms=500) as c:
            c.admin.command("ping")
            return
        time.sleep(0.2)
    raise RuntimeError(f"FerretDB did not answer on {url} within {timeout:.0f}s")


def _pg_database(settings: Settings, *, create: bool) -> None:
    with psycopg.connect(settings.pg_dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)")
        if create:
            conn.execute(f"CREATE DATABASE {PG_DATABASE}")


def _stack_pid(settings: Settings) -> int | None:
    with suppress(OSError, ValueError, IndexError):
        text = (settings.state_dir / "run" / "mongo.pid").read_text()
        return int(text.split()[0])
    return None


@contextmanager
def server(name: str, settings: Settings) -> Iterator[tuple[str, int | None]]:
    """The URL and pid of the named server, running for the duration of the block."""
    if name == "stack":
        yield settings.mongo_url, _stack_pid(settings)
        return
    build, _, handler = name.partition("-")
    if build not in ("stock", "patched") or handler not in ("sqlite", "postgresql"):
        raise SystemExit(f"unknown server {name!r}")
    binary = ferretdb.ensure_ferretdb(settings, patched=build == "patched")
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="mis-bench-ferretdb-") as scratch:
        argv = [
            str(binary),
            "--mode=normal",
            f"--listen-addr=127.0.0.1:{port}",
            f"--debug-addr={os.environ.get('MIS_BENCH_DEBUG_ADDR', '-')}",
            "--telemetry=disable",
            f"--state-dir={scratch}",
            "--log-level=WARN",
        ]
        if handler == "sqlite":
            os.mkdir(f"{scratch}/data")
            query = f"?{SQLITE_PARAMS}" if SQLITE_PARAMS else ""
            argv += ["--handler=sqlite", f"--sqlite-url=file:{scratch}/data/{query}"]
        else:
            _pg_database(settings, create=True)
            pw = settings.pg_password.get_secret_value()
            argv += [
                "--handler=postgresql",
                f"--postgresql-url=postgres://{settings.pg_user}:{pw}@{settings.pg_host}:"
                f"{settings.pg_port}/{PG_DATABASE}",
            ]
        with open(f"{scratch}/ferretdb.log", "wb") as log:
            # The launcher's environment (GOGC) for either build, so the builds compare.
            env = ferretdb.ferretdb_env()
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        url = f"mongodb://127.0.0.1:{port}/"
        try:
            _wait_ping(url, proc)
            yield url, proc.pid
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if handler == "postgresql":
                _pg_database(settings, create=False)
            shutil.rmtree(scratch, ignore_errors=True)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.benchmarks.mongo_ids")
    parser.add_argument(
        "--servers",
        default="stack",
        help="stack, patched-sqlite, stock-sqlite, "
        "patched-postgresql, stock-postgresql (comma-separated)",
    )
    parser.add_argument("--sizes", default="1000,100000", help="listings loaded (comma-separated)")
    parser.add_argument(
        "--stock-sizes",
        default="",
        help="also FerretDB as published (SQLite) at these sizes, e.g. 1000,10000",
    )
    parser.add_argument("--bulks", default="20,50,100,200", help="replaces per bulk_write")
    parser.add_argument("--clients", default="1,2,4", help="concurrent writers")
    parser.add_argument("--seconds", type=float, default=6.0, help="per (bulk, clients) figure")
    parser.add_argument("--max-ops", type=int, default=20_000, help="per (bulk, clients) figure")
    parser.add_argument("--lookups", type=int, default=500, help="find_one calls timed")
    args = parser.parse_args(argv)

    settings = get_settings()
    base = template()
    size = len(bson.encode(listing(base, 0, 1)))
    load1, load5, _ = os.getloadavg()
    print(f"listing: {size} bytes of BSON; {os.cpu_count()} CPUs, load {load1:.1f}, {load5:.1f}")
    rates: dict[tuple[str, int], float] = {}
    runs = [(name, _ints(args.sizes)) for name in args.servers.split(",")]
    if args.stock_sizes:
        runs.append(("stock-sqlite", _ints(args.stock_sizes)))
    for name, sizes in runs:
        with server(name, settings) as (url, pid):
            for n in sizes:
                took = load(url, base, n)
                print(f"{name} {n} listings: loaded in {took:.1f}s ({n / took:.0f}/s)")
                med, p95, count = find_latency(url, n, args.lookups, args.seconds)
                print(f"  find_one by _id: median {med:.2f} ms, p95 {p95:.2f} ms ({count} calls)")
                best = 0.0
                for clients in _ints(args.clients):
                    for bulk in _ints(args.bulks):
                        if name.startswith("stock") and clients * (bulk + 1) >= STOCK_POOL:
                            # It would wait for a pool connection forever (the patch's reason).
                            print(f"  replace by _id, bulk {bulk:>3}, {clients} client(s): skipped")
                            continue
                        cpu = cpu_seconds(pid)
                        rate, count = replace_rate(
                            url, base, n, bulk, clients, args.seconds, args.max_ops
                        )
                        used = (cpu_seconds(pid) - cpu) * 1000 / count if count and pid else 0.0
                        best = max(best, rate)
                        print(
                            f"  replace by _id, bulk {bulk:>3}, {clients} client(s): {rate:7.0f}/s"
                            f"  (server CPU {used:.2f} ms per replace)"
                        )
                rates[(name, n)] = best
                print(f"  best replace rate: {best:.0f}/s")
            with suppress(PyMongoError), client(url) as c:
                c.drop_database(DATABASE)
    for (name, n), rate in rates.items():
        small = min((k for k in rates if k[0] == name), key=lambda k: k[1])
        if n != small[1] and rates[small]:
            print(f"{name}: best rate at {n} is {rate / rates[small]:.2f}x the rate at {small[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
