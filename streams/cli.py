"""The project's command line: ``mis worker | sink | demo | cleanup`` and the operations."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from streams.config import get_settings
from streams.ops.commands import add_ops_commands


def _worker(args: argparse.Namespace) -> int:
    from faust.cli.faust import cli

    from streams.admin import ensure_sink_table, ensure_topics
    from streams.errors import PipelineError

    try:
        settings = get_settings()
        ensure_topics(settings)
        ensure_sink_table(settings)
    except PipelineError as exc:
        print(f"mis worker: {exc}", file=sys.stderr)
        return 2

    level = (args.loglevel or settings.log_level).lower().replace("warning", "warn")
    os.environ["MIS_LOG_LEVEL"] = level
    argv = ["faust", "-A", "streams.app", "worker", "-l", level]
    sys.argv = argv
    cli(prog_name="mis worker")  # exits
    return 0


def _cleanup(args: argparse.Namespace) -> int:
    from streams.agents import clock as clock_agents
    from streams.app import app

    async def run() -> int:
        await app.producer.start()
        try:
            return await clock_agents.cleanup()
        finally:
            await app.producer.stop()

    evicted = asyncio.run(run())
    print(f"cleanup: evicting {evicted} completed or withdrawn snapshots")
    return 0


def _sink(args: argparse.Namespace) -> int:
    import signal
    import threading

    from streams.admin import ensure_sink_table
    from streams.errors import PipelineError
    from streams.sinks.follower import SinkThreads, sink_factories

    settings = get_settings()
    try:
        ensure_sink_table(settings)
    except PipelineError as exc:
        print(f"mis sink: {exc}", file=sys.stderr)
        return 2
    threads = SinkThreads(settings, sink_factories(settings, args.only or ("postgres", "mongodb")))
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    threads.start()
    stopped.wait()
    threads.stop()
    return 0


def _demo(args: argparse.Namespace) -> int:
    from streams import demo

    return demo.run(get_settings(), rows=args.bookings, watch_s=args.watch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mis", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker", help="run a Faust worker of the pipeline")
    w.add_argument("-l", "--loglevel", default=None, help="default: MIS_LOG_LEVEL (info)")
    w.set_defaults(fn=_worker)
    s = sub.add_parser(
        "sink",
        help="run the sinks in this process (set MIS_SINKS= on workers that should not)",
    )
    s.add_argument("--only", action="append", choices=("postgres", "mongodb"), help="default: both")
    s.set_defaults(fn=_sink)
    d = sub.add_parser("demo", help="load demo data and show the snapshots it produced")
    d.add_argument("--bookings", type=int, default=5)
    d.add_argument("--watch", type=float, default=30.0, help="seconds to wait for snapshots")
    d.set_defaults(fn=_demo)
    c = sub.add_parser("cleanup", help="delete finished snapshots older than the retention")
    c.set_defaults(fn=_cleanup)
    add_ops_commands(sub)  # replay, backfill, republish, verify (streams.ops)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
